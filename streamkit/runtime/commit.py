"""When and what to commit.

The checkpoint order, everywhere a commit happens:

1. finish (or abandon) the agent work in flight;
2. flush the producer: serve delivery reports until every emitted record
   of the finished work is acknowledged (or the deadline passes);
3. commit the positions of the partitions, each the offset after its last
   contiguous done record (:mod:`streamkit.runtime.offsets`).

Steady state commits are asynchronous and batched: after ``commit_every``
finished records or ``commit_interval`` seconds, whichever comes first.
Revoke and shutdown commit synchronously, because the partition is about to
be handed to someone else and its next owner starts from that commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamkit.runtime.partition import PartitionWorker

log = structlog.get_logger("streamkit.commit")


def positions(
    workers: Iterable[PartitionWorker], confirmed: bool = False
) -> list[KafkaTopicPartition]:
    """Offsets to commit: each partition's position if it moved since the last commit.

    Args:
        workers: The partitions.
        confirmed: Compare with the last commit the broker confirmed, not the
            last one sent (the synchronous commits of a revoke or shutdown).
    """
    out = []
    for worker in workers:
        position = worker.offsets.to_commit(confirmed)
        if position is not None:
            out.append(KafkaTopicPartition(worker.tp.topic, worker.tp.partition, position))
    return out


class Committer:
    """Batches steady-state commits (loop thread).

    Args:
        submit: Sends offsets to the consumer's thread for an asynchronous commit.
        every: Commit after this many records were taken since the last commit.
        interval: ...or after this many seconds.
        clock: Where the interval's seconds come from (a test clock in the harness).
    """

    def __init__(
        self,
        submit: Callable[[list[KafkaTopicPartition]], None],
        every: int,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._submit = submit
        self._every = every
        self._interval = interval
        self._clock = clock
        self._next_at = clock() + interval
        self._since = 0
        self.commits = 0

    def due(self, taken: int) -> bool:
        """Count ``taken`` more records; whether a steady-state commit is due now."""
        self._since += taken
        return self._since >= self._every or self._clock() >= self._next_at

    def reset(self) -> None:
        """Start counting again: a checkpoint was started elsewhere (exactly once)."""
        self._next_at = self._clock() + self._interval
        self._since = 0

    def commit_async(self, workers: dict[Any, PartitionWorker]) -> None:
        """Commit moved positions without waiting; results arrive in ``on_commit``."""
        self._next_at = self._clock() + self._interval
        self._since = 0
        offsets = []
        for worker in list(workers.values()):
            position = None if worker.revoked else worker.offsets.to_commit()
            if position is not None:
                offsets.append(KafkaTopicPartition(worker.tp.topic, worker.tp.partition, position))
                # Sent, not committed: the broker's answer confirms it (or
                # resets it, and the next tick sends the same position again).
                worker.offsets.sent = position
        if not offsets:
            return
        self._submit(offsets)
        self.commits += 1


def commit_sync(
    consumer: Any, offsets: list[KafkaTopicPartition], reason: str, quiet: bool = False
) -> str | None:
    """Commit and wait for the broker's answer.

    Returns:
        ``None`` once committed; otherwise librdkafka's error name (logged
        unless ``quiet``), so a caller can tell a rebalance in the way from
        a member that is gone.
    """
    if not offsets:
        return None
    try:
        result = consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if not quiet:
            log.warning("commit failed", reason=reason, error=str(exc), offsets=describe(offsets))
        return error.name() if isinstance(error, KafkaError) else str(exc)
    failed = [tp for tp in result or [] if tp.error is not None]
    if failed:
        if not quiet:
            log.warning("commit failed", reason=reason, offsets=describe(failed))
        error = failed[0].error
        return error.name() if isinstance(error, KafkaError) else str(error)
    log.info("committed", reason=reason, offsets=describe(offsets))
    return None


# How often a final commit that failed mid-rebalance is tried again, and the
# errors that mean a rebalance is in the way (a member that is gone, fenced
# or unknown gets no retry: its partitions are someone else's).
_FINAL_COMMIT_RETRY_S = 0.2
_REBALANCING = frozenset({"REBALANCE_IN_PROGRESS", "ILLEGAL_GENERATION", "STALE_MEMBER_EPOCH"})


def commit_final(consumer: Any, final: dict[Any, KafkaTopicPartition], deadline: float) -> bool:
    """The shutdown commit (fetcher thread), tried again while a rebalance is in the way.

    A rebalance in progress refuses commits (``REBALANCE_IN_PROGRESS``,
    ``ILLEGAL_GENERATION``). Serving it lets its revoke commit the partitions
    that leave, and take them out of ``final``; the rest is tried again until
    ``deadline`` (monotonic).

    Returns:
        Whether everything left in ``final`` was committed (``final`` is then empty).
    """
    quiet = False
    while True:
        error = commit_sync(consumer, list(final.values()), reason="shutdown", quiet=quiet)
        if error is None:
            final.clear()
            return True
        if error not in _REBALANCING or time.monotonic() >= deadline:
            return False
        quiet = True  # logged once; the retries end in a commit or in the caller's error
        try:
            consumer.consume(num_messages=1, timeout=_FINAL_COMMIT_RETRY_S)
        except (KafkaException, RuntimeError):
            return False


def describe(offsets: list[KafkaTopicPartition]) -> str:
    """``topic[partition]@offset, ...``: offsets as log lines name them."""
    return ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in offsets)
