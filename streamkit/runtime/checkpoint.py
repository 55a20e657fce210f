"""The checkpoint order, and the checkpoints that follow it.

Every checkpoint, steady (``commit_every`` / ``commit_interval``), on revoke
or at shutdown, goes through the same steps in the same order:

1. **stage state**: the table writes of the finished records, ready to go
   out (:mod:`streamkit.state.partition`). At least once, the latest value
   of each key written since the last checkpoint; exactly once, the writes
   of the records whose offsets this transaction commits, in offset order;
2. **produce**: the staged values to each table's changelog, one record
   per key, in the source partition's changelog partition. At least once,
   agents' outputs were produced as they were made; exactly once, the
   records *held* for the finished inputs at the front of each partition are
   produced now, in offset order (:mod:`streamkit.runtime.exactly_once`);
3. **flush**: every produced record, changelog included, acknowledged by
   the broker. A changelog record refused or not acknowledged in time stops
   this checkpoint before it commits anything;
4. **commit**: the position of each partition, the offset after its last
   contiguous done record. At least once, ``consumer.commit``
   (:mod:`streamkit.runtime.commit`: async in steady state, sync on revoke
   and shutdown); with tables, a partition's position is capped at its first
   record not finished when the state was staged (running, or not started
   yet), since that record's writes are not all in this changelog. Exactly once,
   ``send_offsets_to_transaction`` then ``commit_transaction``
   (:mod:`streamkit.runtime.transaction`), so the outputs, the changelog and
   the offsets become visible together or not at all;
5. **persist locally**: each table slice writes the staged values to its
   local store together with the changelog offset after them. Exactly once,
   after the transaction committed; at least once, when the broker confirms
   the commit that covers them (a revoke or shutdown persists right after
   the flush, before its synchronous commit). So a local store never holds a
   write whose input was not committed but by the records running when the
   state was staged, and a warm restart restores only the changelog's tail.

Exactly once, nothing may be produced between the flush and the commit.
Agents go on meanwhile: their records are held, and only the checkpoint
produces them, so processing overlaps the commit's round trips; only timer
ticks, which produce directly, wait for it (:meth:`TransactionalCheckpoints.until_released`).
Any failure on the way aborts the transaction: every partition then goes
back to its last committed offset (:meth:`CheckpointHost.reset`), its table
slices drop what they did not commit, and the records in flight are
discarded, since they are redone from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import structlog
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamkit.errors import FencedError
from streamkit.runtime.exactly_once import Poison, poison_refused, release
from streamkit.runtime.partition import PartitionWorker
from streamkit.runtime.processor import ProducerGate, make_sender
from streamkit.runtime.tables import WorkerTables
from streamkit.runtime.transaction import TransactionAborted, Transactions
from streamkit.state.changelog import ChangelogFlush
from streamkit.state.partition import TablePartition, fold_writes

log = structlog.get_logger("streamkit.checkpoint")

# A flush serves delivery reports on the event loop; each wait is short, so
# signals, heartbeats and the HTTP probes are served in between.
_FLUSH_SLICE_S = 0.05


class CheckpointHost(Protocol):
    """What the exactly-once checkpoint needs from the worker."""

    workers: dict[Any, PartitionWorker]

    def reset(self, workers: list[PartitionWorker]) -> None:
        """Discard these partitions' work; they start again from their last commit (loop)."""

    def fenced(self, error: FencedError) -> None:
        """The producer was fenced: build a new one, or stop (loop)."""


class TransactionalCheckpoints:
    """One Kafka transaction per checkpoint (event-loop thread).

    Args:
        host: The worker.
        gate: The producer gate, held while a checkpoint runs.
        transactions: The transactional producer's calls.
        timeout_ms: ``transaction_timeout_ms``: a steady checkpoint gets half of it.
        on_error: Told about an unexpected error, which stops the worker
            (nothing of the open transaction is then committed).
        tables: The worker's table slices, if its agents have tables.
    """

    def __init__(
        self,
        host: CheckpointHost,
        gate: ProducerGate,
        transactions: Transactions,
        timeout_ms: int,
        on_error: Callable[[BaseException], None],
        tables: WorkerTables | None = None,
    ) -> None:
        self._host = host
        self._tables = tables
        self._on_error = on_error
        self._gate = gate
        self._budget = timeout_ms / 1000 / 2
        self.poison: Poison = {}
        # Why the open transaction must be aborted rather than committed (a
        # lost partition's records are in it, a refused record...); set from
        # any thread, read by the next checkpoint.
        self.doomed: str | None = None
        self._lock = asyncio.Lock()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[bool] | None = None
        self.committed = 0
        self.aborted = 0
        self.use(transactions)

    def use(self, transactions: Transactions) -> None:
        """Checkpoint with this producer from now on (a new one, after a fence)."""
        self.transactions = transactions
        self._producer = transactions.producer
        self._send = make_sender(self._producer)
        self._settle = make_sender(self._producer, settling=True)

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """No checkpoint, and no record starting, inside (a producer being replaced)."""
        async with self._lock:
            self._gate.hold()
            try:
                yield
            finally:
                self._gate.release()

    @property
    def running(self) -> bool:
        """Whether a checkpoint is in progress, or requested and about to start."""
        task = self._task
        return self._lock.locked() or (task is not None and not task.done())

    def doom(self, reason: str) -> None:
        """The open transaction must not commit: the next checkpoint aborts it."""
        if self.doomed is None:
            self.doomed = reason

    def request(self) -> None:
        """Start a steady checkpoint unless one runs (loop thread; the hot path calls it)."""
        task = self._task
        if task is None or task.done():
            self._task = asyncio.get_running_loop().create_task(self.checkpoint("interval"))

    async def checkpoint(self, reason: str, deadline: float | None = None) -> bool:
        """Commit the open transaction with the partitions' positions; ``False`` if aborted.

        Args:
            reason: ``interval``, ``revoke`` or ``shutdown``, for the log.
            deadline: Monotonic time by which the flush must be done
                (default: half of ``transaction_timeout_ms`` from now).
        """
        async with self._lock:
            self._idle.clear()
            deadline = deadline if deadline is not None else time.monotonic() + self._budget
            try:
                return await self._commit(reason, deadline)
            except FencedError as exc:  # from any step: the producer is replaced
                self._host.fenced(exc)
                return False
            except Exception as exc:  # a bug or a client in a state we do not know
                self._on_error(exc)
                return False
            finally:
                self._idle.set()

    async def until_released(self) -> None:
        """Return once no checkpoint is between its flush and its commit (timer ticks)."""
        while self._lock.locked():
            await self._idle.wait()

    async def _commit(self, reason: str, deadline: float) -> bool:
        workers = [w for w in self._host.workers.values() if not w.discarded]
        refused: list[str] = []
        parts: list[TablePartition] = []
        for worker in workers:
            run = worker.offsets.finished_run()
            if self._tables is not None:
                parts += fold_writes(run)  # step 1, before release() counts them done
            refused += release(run, self._send, self._settle, self.poison)
        if refused:
            self.doom(f"records refused on produce: {'; '.join(refused)}")
        changelog = ChangelogFlush(self._producer)
        for part in parts:
            changelog.produce(part, part.batch, None)
        if not await self._flush(deadline):
            self.doom(f"{reason}: records not acknowledged by the deadline")
        failed = [t for w in workers for t in w.offsets.failures]
        if failed:
            poisoned = poison_refused(failed, self.poison)
            self.doom(
                f"the broker refused {len(failed)} records"
                + (
                    f" (dead-lettered when they come again: {', '.join(poisoned)})"
                    if poisoned
                    else ""
                )
            )
        if changelog.errors:
            self.doom(f"changelog records refused: {'; '.join(changelog.errors[:3])}")
        if self.doomed is not None:
            return await self._abort(self.doomed, workers)
        pairs = [(w, p) for w in workers if (p := w.offsets.to_commit(confirmed=True)) is not None]
        offsets = [KafkaTopicPartition(w.tp.topic, w.tp.partition, p) for w, p in pairs]
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.transactions.commit, offsets, deadline)
        except TransactionAborted as exc:
            self.aborted += 1
            self._host.reset(workers)
            self._begin()
            log.warning(
                "checkpoint aborted; partitions start again from their last commit",
                reason=exc.reason,
            )
            return False
        for worker, position in pairs:
            worker.offsets.confirm(position)
            worker.offsets.sent = position
        for part in parts:
            end = changelog.end_of(part)
            if end is not None:
                part.persist(part.batch, end)
        self.committed += 1
        self._begin()
        return True

    async def _flush(self, deadline: float) -> bool:
        producer = self._producer
        while len(producer) > 0:
            if getattr(producer, "failed", False):
                raise FencedError("the producer failed while flushing")
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            producer.flush(min(_FLUSH_SLICE_S, left))
            await asyncio.sleep(0)
        return True

    async def _abort(self, reason: str, workers: list[PartitionWorker]) -> bool:
        self.doomed = None
        await asyncio.get_running_loop().run_in_executor(None, self.transactions.abort, reason)
        self.aborted += 1
        self._host.reset(workers)
        self._begin()
        return False

    def _begin(self) -> None:
        try:
            self.transactions.begin()
        except Exception as exc:  # a fatal producer: fenced meanwhile
            self._host.fenced(FencedError(f"begin_transaction failed: {exc}"))


class StateCheckpoints:
    """At least once with tables: the changelog is acknowledged before the offsets commit.

    Without tables an at-least-once commit is a plain asynchronous
    ``commit_async``; with them, each steady checkpoint stages the slices'
    changes, produces and awaits them, and only then sends the positions,
    capped where a record was still running at the stage (see the module
    docstring). Agents keep processing throughout: their new writes go to the
    next checkpoint.

    Args:
        workers: The worker's partitions, by topic partition.
        producer: The worker's producer.
        tables: The worker's table slices.
        submit: Sends positions to the consumer's thread for an asynchronous commit.
        budget: Seconds a checkpoint's changelog may take to be acknowledged.
    """

    def __init__(
        self,
        workers: dict[Any, PartitionWorker],
        producer: Any,
        tables: WorkerTables,
        submit: Callable[[list[KafkaTopicPartition]], None],
        budget: float,
    ) -> None:
        self._workers = workers
        self._tables = tables
        self._submit = submit
        self._budget = budget
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[bool] | None = None
        self.use(producer)
        self.commits = 0

    def use(self, producer: Any) -> None:
        """Produce changelog records with this producer."""
        self._producer = producer

    @property
    def running(self) -> bool:
        """Whether a checkpoint is in progress, or requested and about to start."""
        task = self._task
        return self._lock.locked() or (task is not None and not task.done())

    def request(self) -> None:
        """Start a steady checkpoint unless one runs (loop thread)."""
        task = self._task
        if task is None or task.done():
            self._task = asyncio.get_running_loop().create_task(self.checkpoint("interval"))

    async def checkpoint(self, reason: str, leaving: list[PartitionWorker] | None = None) -> bool:
        """Steps 1 to 4 (and 5 once confirmed); ``leaving``: revoke or shutdown, persist now.

        Returns:
            Whether the changelog was acknowledged (a revoke or shutdown
            must not commit the partitions otherwise: their state would be
            behind their offsets).
        """
        async with self._lock:
            workers = (
                leaving
                if leaving is not None
                else [w for w in self._workers.values() if not w.revoked]
            )
            caps: dict[Any, int | None] = {}
            staged = []
            changelog = ChangelogFlush(self._producer)
            for worker in workers:
                parts = self._tables.slices.get(worker.tp)
                if not parts:
                    continue
                # Records that finish from here on wrote into the next
                # checkpoint's stage: the commit must stop before them.
                frontier = worker.offsets.frontier()
                caps[worker.tp] = -1 if frontier is None else frontier
                for part in parts:
                    if part.dirty:
                        batch, firsts = part.stage()
                        changelog.produce(part, batch, firsts)
                        staged.append((worker, part, batch, firsts))
            if not await changelog.acknowledged(time.monotonic() + self._budget):
                for _, part, batch, firsts in staged:
                    part.unstage(batch, firsts)
                log.warning(
                    "changelog not acknowledged; offsets not committed this time",
                    reason=reason,
                    waiting=changelog.pending,
                    errors="; ".join(changelog.errors[:3]) or None,
                )
                return False
            if leaving is not None:
                for _, part, batch, _ in staged:
                    part.persist(batch, changelog.end_of(part) or 0)
                return True
            self._commit(caps, staged, changelog)
            return True

    def _commit(
        self,
        caps: dict[Any, int | None],
        staged: list[tuple[PartitionWorker, TablePartition, Any, Any]],
        changelog: ChangelogFlush,
    ) -> None:
        offsets = []
        for worker in list(self._workers.values()):
            if worker.revoked:
                continue
            position = worker.offsets.to_commit()
            cap = caps.get(worker.tp)
            if position is not None and cap is not None and position > cap:
                # -1: nothing had started at the stage, so nothing may commit.
                position = cap if cap not in (-1, worker.offsets.sent) else None
            if position is not None:
                offsets.append(KafkaTopicPartition(worker.tp.topic, worker.tp.partition, position))
                worker.offsets.sent = position
        for worker, part, batch, _ in staged:
            part.wait_for_commit(worker.offsets.sent or 0, batch, changelog.end_of(part) or 0)
        if offsets:
            self._submit(offsets)
            self.commits += 1
