"""The worker's side of a revoke or a loss: drain, flush, and hand the positions back.

Split from :mod:`streamkit.runtime.worker`. The rebalance handlers
(:mod:`streamkit.runtime.rebalance`) call :meth:`RevokeDuties.release` for a
cooperative revoke, which drains the leaving partitions on the loop within
``revoke_timeout`` and returns the positions to commit inside the
generation they belong to, and :meth:`RevokeDuties.abandon` for a lost
partition, which is dropped uncommitted (the next owner redoes it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamkit.runtime.checkpoint import TransactionalCheckpoints
from streamkit.runtime.commit import positions
from streamkit.runtime.partition import PartitionWorker
from streamkit.runtime.scheduler import Scheduler
from streamkit.types import TopicPartition

log = structlog.get_logger("streamkit.worker")


class RevokeDuties:
    """The base of :class:`~streamkit.runtime.worker.Worker`: partitions leaving it.

    The annotations are the part of the worker these duties use.
    """

    workers: dict[Any, PartitionWorker]
    producer: Any
    timers_tp: TopicPartition | None
    scheduler: Scheduler | None
    checkpoints: TransactionalCheckpoints | None
    _loop: asyncio.AbstractEventLoop | None
    _closing: bool
    _final: dict[Any, KafkaTopicPartition]

    def _on_loop(self, fn: Callable[[Any], object], arg: Any) -> None:
        raise NotImplementedError

    def _request_checkpoint(self) -> None:
        raise NotImplementedError

    async def _stop_timers(self, timeout: float) -> None:
        raise NotImplementedError

    def _tables_leave(self, tp: TopicPartition) -> None:
        raise NotImplementedError

    def _tables_drop(self, tp: TopicPartition) -> None:
        raise NotImplementedError

    def _tables_close(self, tp: TopicPartition) -> None:
        raise NotImplementedError

    async def _flush_tables(
        self, workers: list[PartitionWorker], reason: str
    ) -> list[PartitionWorker]:
        raise NotImplementedError

    def release(
        self, tps: list[TopicPartition], budget: float
    ) -> concurrent.futures.Future[list[KafkaTopicPartition]]:
        """Drain the revoked partitions on the loop and return their positions."""
        loop = self._loop
        for tp in tps:
            worker = self.workers.get(tp)
            if worker is not None:
                worker.released = True
                worker.revoked = True
            self._tables_leave(tp)
        if self._closing or loop is None or loop.is_closed():
            # Shutdown drained these already: the revoke commits their final
            # positions, inside the generation they belong to.
            done: concurrent.futures.Future[list[KafkaTopicPartition]] = concurrent.futures.Future()
            done.set_result([p for tp in tps if (p := self._final.pop(tp, None)) is not None])
            for tp in tps:
                self.workers.pop(tp, None)
            return done
        return asyncio.run_coroutine_threadsafe(self._release(tps, budget), loop)

    def abandon(self, tps: list[TopicPartition]) -> list[str]:
        """Drop partitions uncommitted; say from which offset each is redelivered."""
        redelivered = []
        loop = self._loop
        if self.timers_tp in tps and self.scheduler is not None and loop is not None:
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._stop_timers(0.0)))
        if self.checkpoints is not None and any(tp in self.workers for tp in tps):
            # Their finished records' outputs may be in the open transaction,
            # and their offsets can no longer commit with it.
            self.checkpoints.doom(f"partitions lost or abandoned: {', '.join(map(str, tps))}")
            self._on_loop(lambda _: self._request_checkpoint(), None)
        for tp in tps:
            self._final.pop(tp, None)
            self._tables_drop(tp)
            worker = self.workers.pop(tp, None)
            if worker is None:
                continue
            worker.released = True
            worker.revoked = True
            if loop is not None and not loop.is_closed():
                # Wakes a task parked waiting for records, so it ends instead
                # of holding its buffer and tickets for good.
                loop.call_soon_threadsafe(worker.cancel)
            start = worker.offsets.committed
            redelivered.append(f"{tp}@{start if start is not None else 'last commit'}")
        return redelivered

    async def _release(self, tps: list[TopicPartition], budget: float) -> list[KafkaTopicPartition]:
        deadline = time.monotonic() + budget * 0.9
        if self.timers_tp in tps and self.scheduler is not None:
            # Stopped before the revoke completes, so the next owner never
            # ticks while this one still does.
            await self.scheduler.stop(budget * 0.5)
        leaving = [w for tp in tps if (w := self.workers.get(tp)) is not None]
        drained = await asyncio.gather(*(w.drain(deadline - time.monotonic()) for w in leaving))
        if self.checkpoints is not None:
            # Exactly once: the transaction commits the leaving partitions'
            # finished records with every other partition's. Records still
            # running had nothing produced yet (held): they are just redone.
            await self.checkpoints.checkpoint("revoke")
            offsets: list[KafkaTopicPartition] = []
        else:
            leaving = await self._flush_tables(leaving, "revoke")
            await self._await_acks(leaving, deadline)
            offsets = positions(leaving, confirmed=True)
        late = [w for w, done in zip(leaving, drained, strict=True) if not done]
        if late:
            # The trade revoke_timeout makes: a few records done again by the
            # next owner, rather than the whole group waiting for them.
            log.warning(
                "revoke budget passed: records in flight abandoned uncommitted",
                budget_s=round(budget, 3),
                redelivered_from=", ".join(w.redelivered_from() for w in late),
            )
        for tp in tps:
            self.workers.pop(tp, None)
            self._tables_close(tp)
        return offsets

    async def _await_acks(self, leaving: list[PartitionWorker], deadline: float) -> None:
        # Serve delivery reports until the leaving partitions' emits are all
        # acknowledged; yielding in between lets the other partitions go on.
        while time.monotonic() < deadline:
            self.producer.poll(0)
            if not any(w.offsets.unacked() for w in leaving):
                return
            await asyncio.sleep(0.005)
