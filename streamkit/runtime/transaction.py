"""The transactional producer's calls, and what each of their errors means.

Exactly once (``processing_guarantee="exactly_once"``) turns every checkpoint
into one Kafka transaction (the order is in :mod:`streamkit.runtime.checkpoint`).
This module is only the producer's side: ``init_transactions``, then per
checkpoint ``send_offsets_to_transaction`` and ``commit_transaction``, or
``abort_transaction``. Each call blocks on the network, so the worker runs
them on an executor thread and keeps its event loop free.

librdkafka sorts every transactional error into one of three kinds, and each
gets one answer here:

* **retriable** (a timeout, a coordinator moving): the same call again, until
  the deadline. A commit that timed out is never aborted blindly: it may
  have reached the coordinator, and an abort would then fail anyway.
* **abortable** (``txn_requires_abort``: a refused record, a member whose
  generation is stale): :class:`TransactionAborted`; the caller aborts, and
  the partitions go back to their last committed offsets.
* **fatal** (``PRODUCER_FENCED``, ``INVALID_PRODUCER_EPOCH``):
  :class:`~streamkit.errors.FencedError`; this producer can never be used
  again, and the worker builds a new one.

The transactional id, and why it is what it is (zombie fencing):

* With static membership (``group_instance_id``) it is
  ``<group>.<group_instance_id>``: stable across restarts, so a restarted pod's
  ``init_transactions`` aborts the transaction its previous life left open at
  once, and fences that previous life if it is still running (a zombie).
* Without it, it is unique per process (host, pid and a random suffix, since
  every container is pid 1). Zombies are fenced by the group instead
  (KIP-447): the offsets of a transaction go to the group coordinator with the
  member's generation, and a member that lost its partitions has a stale one,
  so its transaction can only abort. The cost: a SIGKILLed worker's open
  transaction stays open until ``transaction_timeout_ms`` passes, and holds
  back ``read_committed`` readers of its outputs and its partitions' next
  owner for that long, hence the 10 s default.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamkit.config import AppConfig
from streamkit.errors import BrokerError, ConfigError, FencedError

log = structlog.get_logger("streamkit.transaction")

# How long the first init_transactions may take to find the coordinator: the
# first transaction of a fresh cluster creates __transaction_state (50
# partitions by default), which takes seconds.
_INIT_TIMEOUT_S = 60.0
# Pause between two tries of a call that failed retriably.
_RETRY_S = 0.1

# Fatal errors that mean "someone newer holds this identity", not a broken client.
FENCING = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)


class ProducerStuck(FencedError):
    """A transactional call made no progress for a whole transaction timeout.

    Seen after the only broker restarted: librdkafka 2.16's producer can stay
    without a transaction coordinator for good. By then the broker has
    decided the transaction's outcome, so a new producer with the same id
    (whose ``init_transactions`` completes or aborts it) is safe; unlike a
    fence, it says nothing about another process holding the identity.
    """


class GuardedProducer:
    """The transactional producer, whose fatal errors reach the worker instead of its callers.

    confluent-kafka does not hand a fatal error (a fence) to ``error_cb``: the
    next ``poll()`` or ``flush()`` raises it, wherever that call is (a
    partition task serving delivery reports, the event loop's tick). Those
    two are wrapped here, so the error is told once to ``on_fatal`` and the
    caller goes on; the next transactional call then fails, and the
    checkpoint replaces the producer. ``produce`` is the client's own bound
    method, so the per-record path pays nothing.

    Args:
        producer: A confluent-kafka (or in-memory) producer.
        on_fatal: Called once with the fatal ``KafkaError``.
    """

    def __init__(self, producer: Any, on_fatal: Callable[[KafkaError], None]) -> None:
        self.client = producer
        self.produce = producer.produce
        self._on_fatal = on_fatal
        self._told = False

    def __len__(self) -> int:
        return len(self.client)

    @property
    def failed(self) -> bool:
        """Whether a fatal error was seen: this producer takes nothing more."""
        return self._told

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def poll(self, timeout: float = 0.0) -> int:
        """``poll``; a fatal error is told to ``on_fatal`` instead of raised."""
        try:
            return int(self.client.poll(timeout))
        except KafkaException as exc:
            self._fatal(exc)
            return 0

    def flush(self, timeout: float = -1) -> int:
        """``flush``; a fatal error is told to ``on_fatal``, and the queue counts as flushed."""
        try:
            return int(self.client.flush(timeout))
        except KafkaException as exc:
            self._fatal(exc)
            return 0

    def _fatal(self, exc: KafkaException) -> None:
        err = _error(exc)
        if err is None or not (err.fatal() or err.code() in (*FENCING, KafkaError._FATAL)):
            raise exc
        if not self._told:
            self._told = True
            self._on_fatal(err)


class TransactionAborted(Exception):
    """The open transaction cannot commit and was aborted; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def transactional_id(config: AppConfig) -> str:
    """The producer's ``transactional.id``: stable with static membership, else unique."""
    if config.group_instance_id:
        return f"{config.group_id}.{config.group_instance_id}"
    return f"{config.group_id}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


def _error(exc: KafkaException) -> KafkaError | None:
    first = exc.args[0] if exc.args else None
    return first if isinstance(first, KafkaError) else None


class Transactions:
    """One transactional producer's begin, commit and abort (executor thread).

    Args:
        producer: A producer built with a ``transactional.id``.
        group_metadata: The consumer's ``consumer_group_metadata()``, asked for
            at each commit, so the coordinator sees the current generation.
        transactional_id: For log lines and errors.
        stuck_after: Seconds of retrying after which the producer counts as
            stuck (:class:`ProducerStuck`): the transaction timeout, past
            which the broker has decided the outcome anyway.
    """

    def __init__(
        self,
        producer: Any,
        group_metadata: Callable[[], Any],
        transactional_id: str,
        stuck_after: float = 60.0,
    ) -> None:
        self.producer = producer
        self._stuck_after = stuck_after
        self._group_metadata = group_metadata
        self.transactional_id = transactional_id
        self.commits = 0
        self.aborts = 0
        # Set at a shutdown whose deadline passed: retrying calls give up
        # instead of waiting for a broker that may never answer.
        self.stopped = False

    def stop(self) -> None:
        """Make calls that are retrying give up (any thread): the process is leaving."""
        self.stopped = True

    def init(self, timeout_ms: int) -> None:
        """Register the id with the coordinator (aborting its previous open transaction), begin.

        Raises:
            ConfigError: The cluster cannot run transactions (no coordinator,
                or ``transaction_timeout_ms`` above the broker's maximum).
            FencedError: A newer producer took the id meanwhile.
        """
        try:
            self.producer.init_transactions(_INIT_TIMEOUT_S)
        except KafkaException as exc:
            err = _error(exc)
            code = err.code() if err is not None else None
            if code == KafkaError.INVALID_TRANSACTION_TIMEOUT:
                raise ConfigError(
                    "transaction_timeout_ms",
                    f"{timeout_ms} ms is above the broker's transaction.max.timeout.ms",
                ) from None
            if code in FENCING:
                raise FencedError(self._fenced_text(err)) from None
            if (
                err is None
                or err.retriable()
                or code
                in (
                    KafkaError._TIMED_OUT,
                    KafkaError.COORDINATOR_NOT_AVAILABLE,
                    KafkaError.NOT_COORDINATOR,
                )
            ):
                raise ConfigError(
                    "processing_guarantee",
                    "exactly_once needs the brokers' transaction coordinator, which did not "
                    f"answer in {_INIT_TIMEOUT_S:.0f} s ({exc}); is "
                    "transaction.state.log.replication.factor above the number of brokers?",
                ) from None
            raise BrokerError(f"init_transactions failed: {exc}") from None
        self.producer.begin_transaction()
        log.info("transactions ready", transactional_id=self.transactional_id)

    def begin(self) -> None:
        """Open the next transaction (a local call)."""
        self.producer.begin_transaction()

    def commit(self, offsets: list[KafkaTopicPartition], deadline: float) -> None:
        """Add the input offsets to the open transaction and commit it.

        Every record produced in it must already be acknowledged (the
        checkpoint flushes first), so the commit is only the two coordinator
        round trips. Retriable failures are tried again until ``deadline``
        (monotonic), and after it too for the commit itself: whether a
        timed-out commit went through is only known by asking again.

        Raises:
            TransactionAborted: It could not commit and was aborted.
            FencedError: The producer was fenced; nothing was committed.
        """
        if offsets:
            self._retrying(
                lambda left: self.producer.send_offsets_to_transaction(
                    offsets, self._group_metadata(), left
                ),
                deadline,
                "send_offsets_to_transaction",
            )
        self._retrying(
            self.producer.commit_transaction, deadline, "commit_transaction", forever=True
        )
        self.commits += 1

    def abort(self, reason: str) -> None:
        """Abort the open transaction; its records are never visible to ``read_committed``.

        Raises:
            FencedError: The producer was fenced (the broker aborted it already).
        """
        self.aborts += 1
        log.warning("transaction aborted", reason=reason, transactional_id=self.transactional_id)
        self._retrying(
            self.producer.abort_transaction, time.monotonic() + 30, "abort", forever=True
        )

    def _retrying(
        self, call: Callable[[float], Any], deadline: float, what: str, forever: bool = False
    ) -> None:
        said = False
        began = time.monotonic()
        while True:
            left = max(deadline - time.monotonic(), 1.0)
            try:
                call(left)
                return
            except KafkaException as exc:
                err = _error(exc)
                if err is None:
                    raise
                if self.stopped:
                    # Leaving without knowing the outcome is safe: the broker
                    # commits or aborts outputs and offsets together.
                    raise TransactionAborted(f"{what}: stopped waiting ({err.str()})") from None
                if err.fatal() or err.code() in FENCING:
                    raise FencedError(self._fenced_text(err)) from None
                if err.txn_requires_abort():
                    if what == "abort":
                        raise BrokerError(f"abort_transaction failed: {err.str()}") from None
                    self.abort(f"{what}: {err.str()}")
                    raise TransactionAborted(f"{what}: {err.str()}") from None
                if not err.retriable() or (not forever and time.monotonic() >= deadline):
                    if what == "abort":
                        raise BrokerError(f"abort_transaction failed: {err.str()}") from None
                    self.abort(f"{what}: {err.str()}")
                    raise TransactionAborted(f"{what}: {err.str()}") from None
                if time.monotonic() - began >= self._stuck_after:
                    raise ProducerStuck(
                        f"{what} made no progress in {self._stuck_after:.0f} s ({err.str()}); "
                        f"replacing the producer of transactional.id {self.transactional_id}"
                    ) from None
                if not said:
                    said = True
                    log.warning(f"{what} failed; trying again", error=err.str())
                time.sleep(_RETRY_S)

    def _fenced_text(self, err: KafkaError | None) -> str:
        return (
            f"producer fenced (transactional.id {self.transactional_id}): "
            f"{err.str() if err is not None else 'fatal error'}; another process uses the same "
            "identity (the same group_instance_id?), or this one stalled past "
            "transaction_timeout_ms"
        )
