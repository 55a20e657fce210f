"""The worker's exactly-once duties: its transactional producer, aborts, fences.

Split from :mod:`streamkit.runtime.worker` so that module keeps the one
worker every guarantee shares; the checkpoint itself (what a transaction
holds, in which order) is :mod:`streamkit.runtime.checkpoint`'s. Everything
here runs on the event loop unless it says otherwise, and does nothing in an
at-least-once worker beyond building its plain producer.

An abort throws the open transaction's work away: :meth:`reset` stops the
partitions' workers at once, and the fetcher thread, between two polls,
seeks each partition back to its last committed offset and swaps in a fresh
worker. A fence (``PRODUCER_FENCED``: another process holds this worker's
``transactional.id``, or it stalled past the transaction timeout) gets one
new producer; a second fence within a minute means someone else really has
the identity, and fighting back would fence them in turn, so the worker stops.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamkit.backends.base import Backend
from streamkit.config import AppConfig
from streamkit.errors import FencedError, StreamkitError
from streamkit.runtime.checkpoint import TransactionalCheckpoints
from streamkit.runtime.fetcher import Fetcher
from streamkit.runtime.partition import PartitionWorker
from streamkit.runtime.processor import Processor, ProducerGate
from streamkit.runtime.tables import WorkerTables
from streamkit.runtime.transaction import (
    GuardedProducer,
    ProducerStuck,
    Transactions,
)
from streamkit.types import TopicPartition

log = structlog.get_logger("streamkit.worker")

# A second fence this soon after the first means another live process holds
# this identity; fighting back would fence it in turn, for ever.
_FENCE_WINDOW_S = 60.0
# Retrying a transactional call this long without progress: replace the producer.
_STUCK_AFTER_S = 20.0
# How long an abort's restart waits for the broker's committed offsets.
_COMMITTED_TIMEOUT_S = 10.0


class TransactionalDuties:
    """The base of :class:`~streamkit.runtime.worker.Worker`: its ``CheckpointHost`` half.

    The annotations below are the part of the worker these duties use, and
    the stubs the worker's methods they call; nothing else of it is touched.
    """

    config: AppConfig
    workers: dict[Any, PartitionWorker]
    processors: dict[str, Processor]
    producer: Any
    checkpoints: TransactionalCheckpoints | None
    tables: WorkerTables | None
    transactional_id: str | None
    final_commit_failed: bool
    _backend: Backend
    _gate: ProducerGate
    _fetcher: Fetcher | None
    _loop: asyncio.AbstractEventLoop | None
    _stop: asyncio.Event
    _final: dict[Any, KafkaTopicPartition]
    _closing: bool
    _aborted: bool
    _fences: list[float]
    _renewal: asyncio.Future[None] | None
    _group_metadata: Any

    def _new_worker(self, tp: TopicPartition, processor: Processor) -> PartitionWorker:
        raise NotImplementedError

    def _build(self, producer: Any) -> None:
        raise NotImplementedError

    def _fail(self, exc: BaseException) -> None:
        raise NotImplementedError

    def _fail_threadsafe(self, exc: BaseException) -> None:
        raise NotImplementedError

    def _on_loop(self, fn: Callable[[Any], object], arg: Any) -> None:
        raise NotImplementedError

    def _on_client_error(self, err: Any) -> None:
        raise NotImplementedError

    def _request_checkpoint(self) -> None:
        raise NotImplementedError

    async def _close(self, fetcher: Fetcher, deadline: float) -> int:
        raise NotImplementedError

    def _new_producer(self) -> Any:
        if self.transactional_id is None:
            return self._backend.producer(self.config, error_cb=self._on_client_error)
        extra: dict[str, Any] = {"transactional.id": self.transactional_id}
        if "metadata.recovery.strategy" not in self.config.librdkafka("producer"):
            # librdkafka 2.16's default (rebootstrap) left the transactional
            # producer with no coordinator for good after the only broker
            # restarted (tests/integration/test_exactly_once.py).
            extra["metadata.recovery.strategy"] = "none"
        producer = self._backend.producer(self.config, error_cb=self._on_producer_error, **extra)
        return GuardedProducer(producer, self._on_fatal_producer)

    def _on_fatal_producer(self, err: Any) -> None:
        # From a poll() or flush() wherever it was: handled on the loop, next.
        error = FencedError(f"producer failed: {err.str()}")
        self._on_loop(self.fenced, error)

    def _transactions(self, producer: Any) -> Transactions:
        assert self.transactional_id is not None
        return Transactions(
            producer,
            lambda: self._group_metadata,
            self.transactional_id,
            # A healthy producer recovers within seconds of the broker's
            # return; the transaction timeout bounds it for outages that
            # end with the broker rolling the transaction back itself.
            stuck_after=min(self.config.transaction_timeout_ms / 1000, _STUCK_AFTER_S),
        )

    def _note_group(self, consumer: Any) -> None:
        # Fetcher thread: confluent-kafka serves one thread at a time, and the
        # poll loop holds it, so an executor thread asking the consumer for
        # this would wait for ever.
        self._group_metadata = consumer.consumer_group_metadata()

    def _start_restored(self, worker: PartitionWorker, context: Any) -> None:
        raise NotImplementedError

    def reset(self, workers: list[PartitionWorker]) -> None:
        """Discard these partitions' work; new workers start them again from the last commit.

        Called after an abort. The old workers stop at once (nothing they
        still do can reach a transaction); the fetcher thread then seeks each
        partition back and swaps in a fresh worker, between two polls.
        """
        for worker in workers:
            worker.discarded = True
            worker.cancel()
            if self.tables is not None:
                self.tables.reset(worker.tp)
        if workers and self._fetcher is not None:
            self._fetcher.call(lambda consumer: self._restart_partitions(consumer, workers))

    def _restart_partitions(self, consumer: Any, old: list[PartitionWorker]) -> None:
        # Fetcher thread: the only writer of self.workers.
        loop = self._loop
        old = [w for w in old if self.workers.get(w.tp) is w]  # not revoked or lost meanwhile
        broker = self._committed_now(consumer, old)
        for worker in old:
            tp = worker.tp
            committed = broker.get(tp, worker.offsets.committed)
            start = committed if committed is not None else worker.first_offset
            fresh = self._new_worker(tp, self.processors[tp.topic])
            fresh.first_offset = start
            fresh.offsets.committed = fresh.offsets.sent = committed
            fresh.paused = worker.paused  # so backpressure resumes it when due
            fresh.context = worker.context  # its table slices, reset to their last commit
            self.workers[tp] = fresh
            if start is not None:
                try:
                    consumer.seek(KafkaTopicPartition(tp.topic, tp.partition, start))
                except KafkaException as exc:
                    err = exc.args[0] if exc.args else None
                    if isinstance(err, KafkaError) and err.code() == KafkaError._STATE:
                        # No longer assigned (the member is leaving or lost
                        # it): its revoke or loss follows, and the next owner
                        # starts from the commit.
                        continue
                    self._fail_threadsafe(
                        StreamkitError(f"cannot seek {tp} back to {start} after an abort: {exc}")
                    )
                    return
            if fresh.context is None and self.tables is not None and self.tables.uses(tp.topic):
                # Aborted while its tables were restoring: restore them again.
                self.tables.assign(tp, functools.partial(self._start_restored, fresh))
            elif loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(fresh.start)
        log.info(
            "partitions start again from their last commit",
            redelivered_from=", ".join(w.redelivered_from() for w in old),
        )

    def _committed_now(self, consumer: Any, workers: list[PartitionWorker]) -> dict[Any, int]:
        """The broker's committed offsets (fetcher thread), where it answers.

        After a commit whose outcome was not known (a producer replaced
        mid-commit), only the broker knows whether those offsets committed:
        a read_committed consumer's answer waits until the transaction is
        decided. Where it does not answer, the last commit confirmed here.
        """
        if not workers:
            return {}
        tps = [KafkaTopicPartition(w.tp.topic, w.tp.partition) for w in workers]
        try:
            found = consumer.committed(tps, timeout=_COMMITTED_TIMEOUT_S)
        except (KafkaException, RuntimeError) as exc:
            log.warning("committed offsets unknown; using the last confirmed ones", error=str(exc))
            return {}
        return {TopicPartition(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}

    def fenced(self, error: FencedError) -> None:
        """Re-create the producer once; fenced again within a minute, stop (loop thread)."""
        if self._renewal is not None and not self._renewal.done():
            return  # one replacement at a time; it discards everything anyway
        now = time.monotonic()
        if not isinstance(error, ProducerStuck):
            self._fences = [t for t in self._fences if now - t < _FENCE_WINDOW_S] + [now]
        if len(self._fences) > 1 or self._stop.is_set():
            self._fail(error)
            return
        # A fence by another process with this identity (the same
        # group_instance_id) is decided by the group: the newer member fences
        # the older one's consumer within a heartbeat or two. Waiting that
        # long before fighting back lets the loser stop instead of fencing
        # the winner's producer in turn (seen: both stopping under load).
        delay = 0.0 if isinstance(error, ProducerStuck) else self._fence_grace()
        log.warning("producer fenced; building a new one", error=str(error), after_s=delay)
        self._renewal = asyncio.ensure_future(self._renew_producer(delay))

    def _fence_grace(self) -> float:
        heartbeat_s = min(3.0, self.config.session_timeout_ms / 3000)
        return 2 * heartbeat_s + 1.0

    async def _renew_producer(self, delay: float = 0.0) -> None:
        checkpoints = self.checkpoints
        assert checkpoints is not None
        if delay:
            await asyncio.sleep(delay)
            if self._stop.is_set():
                return  # fenced as a member too meanwhile: the other process has it
        async with checkpoints.exclusive():
            workers = [w for w in self.workers.values() if not w.discarded]
            for worker in workers:
                worker.discarded = True
                worker.cancel()
            while True:
                producer = self._new_producer()
                transactions = self._transactions(producer)
                try:
                    await asyncio.get_running_loop().run_in_executor(
                        None, transactions.init, self.config.transaction_timeout_ms
                    )
                    break
                except FencedError as exc:  # someone newer took the id meanwhile
                    self._fail(exc)
                    return
                except StreamkitError as exc:
                    # The coordinator is away (a broker outage outlasting
                    # the stuck producer): wait it out, as at any other time.
                    if self._stop.is_set():
                        self._fail(exc)
                        return
                    log.warning("new producer not ready; trying again", error=str(exc))
            self.producer = producer
            self._gate.use(producer)
            checkpoints.use(transactions)
            checkpoints.doomed = None
            self._build(producer)
            self.reset(workers)

    def _on_producer_error(self, err: Any) -> None:
        # Exactly once: a fatal producer (fenced) gets replaced, not the worker
        # stopped. confluent-kafka raises these from poll() rather than
        # calling here (GuardedProducer); the in-memory client calls here.
        if err.fatal():
            self._on_fatal_producer(err)
            return
        self._on_client_error(err)

    def holding(self) -> bool:
        """Exactly once: records wait only for the next checkpoint (loop thread)."""
        checkpoints = self.checkpoints
        return (
            checkpoints is not None
            and not checkpoints.running
            and any(w.holding() for w in list(self.workers.values()) if not w.discarded)
        )

    async def _last_checkpoint(
        self, checkpoints: TransactionalCheckpoints, deadline: float
    ) -> bool:
        # The deadline is kept even when the broker is away: past it, calls
        # still retrying give up (outputs and offsets still commit or abort
        # together, whichever the broker decides).
        left = max(deadline - time.monotonic(), 0.5)
        try:
            return await asyncio.wait_for(checkpoints.checkpoint("shutdown", deadline), left)
        except TimeoutError:
            checkpoints.transactions.stop()
            return False

    async def _shutdown_transactional(self, fetcher: Fetcher, deadline: float) -> int:
        """Exactly once: the last checkpoint commits what finished; the consumer commits nothing."""
        checkpoints = self.checkpoints
        assert checkpoints is not None
        if not self._aborted and not await self._last_checkpoint(checkpoints, deadline):
            self.final_commit_failed = True
            log.error(
                "final transaction did not commit: these partitions are redelivered from "
                "their last commit",
                partitions=", ".join(w.redelivered_from() for w in self.workers.values()),
            )
        self._final = {}
        self._closing = True
        return await self._close(fetcher, deadline)
