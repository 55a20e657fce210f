"""The worker's at-least-once commits: sent on the fetcher thread, confirmed by the broker.

Split from :mod:`streamkit.runtime.worker`. Steady-state commits are
asynchronous: the loop picks the positions (:class:`~streamkit.runtime.commit.Committer`),
the fetcher thread sends them, and librdkafka's answer comes back in
:meth:`CommitDuties._on_commit`, which confirms or resets them on the loop.
The shutdown commit is synchronous and retried while a rebalance is in the way.

A commit only covers partitions this member still owns when it is *sent*:
a partition is marked ``released`` on the fetcher thread the moment its
revoke begins (or it is lost), and commits run on that same thread, so a
commit queued before a revoke never lands after the revoke's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamkit.runtime.commit import commit_final, describe
from streamkit.runtime.fetcher import Fetcher
from streamkit.runtime.partition import PartitionWorker
from streamkit.runtime.tables import WorkerTables

log = structlog.get_logger("streamkit.worker")


class CommitDuties:
    """The base of :class:`~streamkit.runtime.worker.Worker`: its commit plumbing.

    The annotations are the part of the worker these duties use.
    """

    workers: dict[Any, PartitionWorker]
    tables: WorkerTables | None
    commit_failures: int
    final_commit_failed: bool
    _fetcher: Fetcher | None
    _final: dict[Any, KafkaTopicPartition]
    _aborted: bool
    _commit_errors: set[str]
    _producer_errors: set[int]

    def _on_loop(self, fn: Callable[[Any], object], arg: Any) -> None:
        raise NotImplementedError

    def _on_commit(self, err: Any, partitions: list[KafkaTopicPartition]) -> None:
        if err is None and all(p.error is None for p in partitions):
            self._commit_errors.clear()
            self._producer_errors.clear()
            self._confirm_threadsafe(partitions)
            return
        self.commit_failures += 1
        # Once per kind until a commit succeeds: a rebalance fails every
        # queued commit at once (40+ lines in one millisecond otherwise).
        kind = str(err.code()) if err is not None else "partition"
        if kind not in self._commit_errors:
            self._commit_errors.add(kind)
            log.warning("async commit failed; will commit again", error=str(err))
        self._uncommit_threadsafe(partitions)

    def _uncommit_threadsafe(self, partitions: list[KafkaTopicPartition]) -> None:
        self._on_loop(self._uncommit, [(p.topic, p.partition) for p in partitions])

    def _confirm_threadsafe(self, partitions: list[KafkaTopicPartition]) -> None:
        self._on_loop(self._confirm, [(p.topic, p.partition, p.offset) for p in partitions])

    def _submit_commit(self, offsets: list[KafkaTopicPartition]) -> None:
        # The partition workers whose positions these are (loop thread, as
        # the positions were read): a partition lost and assigned again
        # before the commit is sent has a new worker, and this one's
        # position is stale (committing it moved the offset back: 722 -> 7).
        workers = self.workers
        sources = [workers.get((p.topic, p.partition)) for p in offsets]

        def commit(consumer: Any) -> None:
            # Checked here, on the thread that runs the revoke callbacks: a
            # partition whose revoke began after this commit was queued is
            # left to that revoke's own commit, which may already have
            # landed, and this one would move its offset back.
            owned = [
                p
                for p, source in zip(offsets, sources, strict=True)
                if source is not None
                and not source.released
                and workers.get((p.topic, p.partition)) is source
            ]
            if not owned:
                return
            try:
                consumer.commit(offsets=owned, asynchronous=True)
            except KafkaException as exc:
                # Typically no coordinator during a broker outage: the
                # positions stay uncommitted and a later tick tries again.
                log.warning("commit failed, will retry", error=str(exc))
                self._uncommit_threadsafe(owned)

        assert self._fetcher is not None
        self._fetcher.call(commit)

    def _uncommit(self, keys: list[tuple[str, int]]) -> None:
        for key in keys:
            worker = self.workers.get(key)
            if worker is not None:
                worker.offsets.unsend()

    def _confirm(self, done: list[tuple[str, int, int]]) -> None:
        tables = self.tables
        for topic, partition, offset in done:
            worker = self.workers.get((topic, partition))
            if worker is not None:
                worker.offsets.confirm(offset)
                if tables is not None:
                    tables.committed(worker.tp, offset)

    def _commit_final(self, consumer: Any, deadline: float) -> None:
        """The shutdown commit (fetcher thread), tried again while a rebalance is in the way.

        A rebalance in progress refuses commits (``REBALANCE_IN_PROGRESS``,
        ``ILLEGAL_GENERATION``); serving it lets its revoke commit the
        partitions that leave (see :meth:`release`), and the rest is tried
        again, until ``shutdown_timeout``. A stop whose final commit never
        went through says which offsets it left and exits non-zero.
        """
        if self._aborted:
            self._final.clear()  # nothing committed, so nothing to report either
            return
        if not commit_final(consumer, self._final, deadline):
            # Whatever was not committed stays so: close() revokes what is
            # left, and that revoke must not commit it for a member that is gone.
            left, self._final = list(self._final.values()), {}
            self._final_left("final commit failed", left)

    def _final_left(self, what: str, left: list[KafkaTopicPartition]) -> None:
        self.final_commit_failed = True
        log.error(
            f"{what}: these partitions are redelivered from their last commit",
            offsets=describe(left),
        )
