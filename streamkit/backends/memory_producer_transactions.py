"""The transactional API of the in-memory producer, as librdkafka has it.

:class:`~streamkit.backends.memory.MemoryProducer` with ``transactional.id``
set gets ``init_transactions``, ``begin_transaction``,
``send_offsets_to_transaction``, ``commit_transaction`` and
``abort_transaction`` from :class:`TransactionalProducerMixin`, with the
client's share of the state: its epoch, its open transaction, the error
that dooms it, and the fatal fence. The broker's share (epochs, visibility,
staged offsets) is in :mod:`~streamkit.backends.memory_transactions`; the
deliberate differences from Kafka are listed in
:mod:`~streamkit.backends.memory`.

A mixin rather than a client of its own, because ``produce()`` and
``crash()`` take part in the transaction: a record that fails delivery
dooms it, and a crash abandons it.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamkit.backends.memory_broker import MemoryBroker
from streamkit.backends.memory_groups import GroupMetadata, MemberError
from streamkit.backends.memory_records import UnknownTopicError
from streamkit.backends.memory_transactions import (
    ProducerFencedError,
    Transaction,
    TransactionStateError,
)
from streamkit.types import TopicPartition


def _state_error(state: str) -> KafkaException:
    # librdkafka's wording, so a test matching on it holds on both backends.
    return KafkaException(KafkaError(KafkaError._STATE, f"Operation not valid in state {state}"))


class TransactionalProducerMixin:
    """The transactional half of :class:`~streamkit.backends.memory.MemoryProducer`.

    Args:
        transactional_id: The producer's ``transactional.id``; ``None`` makes
            every transactional call raise ``_NOT_CONFIGURED``.
    """

    # The producer's own state, which the transaction reads.
    _broker: MemoryBroker
    _crashed: bool

    def __init__(self, transactional_id: str | None) -> None:
        self._transactional_id = transactional_id
        self._epoch: int | None = None  # set by init_transactions
        self._txn: Transaction | None = None
        # The first error that dooms the open transaction (a failed record, a
        # refused offset commit): commit_transaction raises it, abort clears it.
        self._txn_error: KafkaError | None = None
        self._fatal: KafkaError | None = None

    def _serve(self) -> int:
        """Serve the producer's waiting delivery reports; returns how many."""
        raise NotImplementedError

    def init_transactions(self, timeout: float | None = None) -> None:
        """Take the ``transactional.id``: a producer that had it is fenced.

        Its open transaction is aborted, so this producer starts where that
        one's last commit left off.

        Raises:
            KafkaException: ``_NOT_CONFIGURED`` without ``transactional.id``;
                ``_STATE`` when called twice; fatal ``_FENCED`` once fenced.
        """
        tid = self._require_transactional()
        if self._crashed:
            return
        if self._epoch is not None:
            raise _state_error("InTransaction" if self._txn is not None else "Ready")
        self._epoch = self._broker.init_transactions(tid)

    def begin_transaction(self) -> None:
        """Open a transaction: ``produce()`` is allowed until it commits or aborts.

        Raises:
            KafkaException: ``_STATE`` before ``init_transactions`` or while a
                transaction is open; fatal ``_FENCED`` once fenced.
        """
        tid = self._require_transactional()
        if self._crashed:
            return
        if self._epoch is None:
            raise _state_error("Init")
        if self._txn is not None:
            raise _state_error("InTransaction")
        try:
            self._txn = self._broker.begin_transaction(tid, self._epoch)
        except (ProducerFencedError, TransactionStateError) as exc:
            raise self._refused(exc) from None
        self._txn_error = None

    def send_offsets_to_transaction(
        self,
        positions: list[KafkaTopicPartition],
        group_metadata: Any,
        timeout: float | None = None,
    ) -> None:
        """Stage the group's next offsets; they are committed with the transaction.

        Negative (logical or invalid) offsets are ignored, as librdkafka
        ignores them.

        Args:
            positions: The next offset to consume for each partition.
            group_metadata: From the input consumer's ``consumer_group_metadata()``.
            timeout: Accepted; the memory broker answers at once.

        Raises:
            KafkaException: ``ILLEGAL_GENERATION`` with ``txn_requires_abort``
                when the member is not current (it left, crashed, expired or
                lost a partition: a zombie); ``_STATE`` outside a transaction;
                fatal ``_FENCED`` once fenced.
            TypeError: ``group_metadata`` is not from a memory consumer.
        """
        self._require_transactional()
        if self._crashed:
            return
        txn = self._current_transaction()
        if not isinstance(group_metadata, GroupMetadata):
            raise TypeError(
                f"group_metadata must come from consumer_group_metadata(), got {group_metadata!r}"
            )
        if self._txn_error is not None:
            raise KafkaException(self._txn_error)
        pairs = [
            (TopicPartition(p.topic, p.partition), p.offset) for p in positions if p.offset >= 0
        ]
        if not pairs:
            return
        try:
            self._broker.stage_offsets(txn, group_metadata, pairs)
        except (ProducerFencedError, TransactionStateError) as exc:
            if self._crashed:
                return
            raise self._refused(exc) from None
        except MemberError as exc:
            self._txn_error = KafkaError(
                KafkaError.ILLEGAL_GENERATION, str(exc), txn_requires_abort=True
            )
            raise KafkaException(self._txn_error) from None
        except UnknownTopicError as exc:
            self._txn_error = KafkaError(
                KafkaError.UNKNOWN_TOPIC_OR_PART, f"cannot commit {exc}", txn_requires_abort=True
            )
            raise KafkaException(self._txn_error) from None

    def commit_transaction(self, timeout: float | None = None) -> None:
        """Serve the delivery reports, then make the records and offsets visible at once.

        Raises:
            KafkaException: With ``txn_requires_abort`` when a record of the
                transaction failed or its offsets were refused (nothing is
                committed: call ``abort_transaction``); ``_STATE`` outside a
                transaction; fatal ``_FENCED`` once fenced.
        """
        self._require_transactional()
        if self._crashed:
            return
        txn = self._current_transaction()
        self._serve()
        if self._txn_error is not None:
            error = self._txn_error
            raise KafkaException(
                KafkaError(
                    error.code(), f"cannot commit, abort: {error.str()}", txn_requires_abort=True
                )
            )
        try:
            self._broker.end_transaction(txn, commit=True)
        except (ProducerFencedError, TransactionStateError) as exc:
            if self._crashed:
                return
            raise self._refused(exc) from None
        self._txn = None

    def abort_transaction(self, timeout: float | None = None) -> None:
        """Abort the open transaction: its records are never visible to ``read_committed``.

        Its offsets are dropped, so the group's committed offsets stay where
        the last committed transaction left them.

        Raises:
            KafkaException: ``_STATE`` outside a transaction; fatal
                ``_FENCED`` once fenced.
        """
        self._require_transactional()
        if self._crashed:
            return
        txn = self._current_transaction()
        try:
            self._broker.end_transaction(txn, commit=False)
        except (ProducerFencedError, TransactionStateError) as exc:
            if self._crashed:
                return
            raise self._refused(exc) from None
        self._txn, self._txn_error = None, None

    def _require_transactional(self) -> str:
        if self._transactional_id is None:
            raise KafkaException(
                KafkaError(
                    KafkaError._NOT_CONFIGURED,
                    "The Transactional API requires a transactional.id to be configured",
                )
            )
        if self._fatal is not None:
            raise KafkaException(self._fatal)
        return self._transactional_id

    def _current_transaction(self) -> Transaction:
        """The open transaction, or the error librdkafka gives where there is none."""
        if self._fatal is not None:
            raise KafkaException(self._fatal)
        if self._txn is None:
            raise _state_error("Init" if self._epoch is None else "Ready")
        return self._txn

    def _refused(self, exc: Exception) -> KafkaException:
        """What the broker's refusal is to the caller (a fence, or a transaction that ended)."""
        if isinstance(exc, ProducerFencedError):
            return self._fenced()
        # The epoch is current, so the transaction ended through this producer
        # on another thread: as in librdkafka, the state no longer allows it.
        self._txn = None
        return _state_error("Ready")

    def _fenced(self) -> KafkaException:
        # Fatal, as in librdkafka: this instance can never produce again, and
        # the broker aborted its open transaction when the newer one took over.
        self._fatal = KafkaError(
            KafkaError._FENCED,
            "producer fenced by a newer instance with the same transactional.id",
            fatal=True,
        )
        self._txn, self._txn_error = None, None
        return KafkaException(self._fatal)
