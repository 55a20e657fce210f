"""The three rebalance handlers: on assign, on revoke, on lost.

librdkafka calls them on the fetcher thread, from inside ``consume()``. They
hand the work to the event loop, where the partition workers live, and wait
for it within one time budget that stays below ``max.poll.interval.ms``:

* **assign**: create a worker per new partition; fetching starts at the
  committed offset. Partitions already owned are untouched (cooperative).
* **revoke**: for the revoked partitions only: stop taking records, let the
  record in flight finish, wait for its emitted records to be acknowledged,
  commit synchronously, release. Work that misses the budget is abandoned
  uncommitted, and a warning names the offsets the next owner will redeliver.
* **lost**: the group already gave the partitions away (session timeout,
  fencing): drop them without committing, because a commit now could
  overwrite the new owner's progress.

Each step logs a line an operator can grep: ``partitions assigned``,
``partitions revoked``, ``partitions lost``.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Protocol

import structlog
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamkit.runtime.commit import commit_sync
from streamkit.types import TopicPartition

log = structlog.get_logger("streamkit.rebalance")


class PartitionHost(Protocol):
    """What the handlers need from the runtime; a fake implements it in unit tests."""

    group: str

    def assign(self, tps: list[TopicPartition]) -> None:
        """Create workers for newly assigned partitions (any thread; must not block)."""

    def release(
        self, tps: list[TopicPartition], budget: float
    ) -> concurrent.futures.Future[list[KafkaTopicPartition]]:
        """Drain the partitions on the loop; the future gives the offsets to commit."""

    def abandon(self, tps: list[TopicPartition]) -> list[str]:
        """Drop the partitions now, uncommitted; returns what will be redelivered."""


class RebalanceHandlers:
    """The callbacks given to ``consumer.subscribe``.

    Args:
        host: The runtime owning the partition workers.
        budget: Seconds the revoke path may take in total.
    """

    def __init__(self, host: PartitionHost, budget: float) -> None:
        self._host = host
        self.budget = budget
        self.rebalances = 0

    def on_assign(self, consumer: Any, partitions: list[KafkaTopicPartition]) -> None:
        """New partitions: set up a worker for each."""
        self.rebalances += 1
        tps = [TopicPartition(p.topic, p.partition) for p in partitions]
        if tps:
            self._host.assign(tps)
        log.info("partitions assigned", group=self._host.group, partitions=_names(tps))

    def on_revoke(self, consumer: Any, partitions: list[KafkaTopicPartition]) -> None:
        """Partitions leaving: drain, commit, release within the budget."""
        self.rebalances += 1
        tps = [TopicPartition(p.topic, p.partition) for p in partitions]
        if not tps:
            return
        future = self._host.release(tps, self.budget)
        try:
            offsets = future.result(timeout=self.budget)
        except concurrent.futures.TimeoutError:
            future.cancel()
            redelivered = self._host.abandon(tps)
            log.warning(
                "revoke deadline passed: in-flight work abandoned uncommitted",
                group=self._host.group,
                budget_s=self.budget,
                redelivered_from=redelivered,
            )
            return
        commit_sync(consumer, offsets, reason="revoke")
        log.info("partitions revoked", group=self._host.group, partitions=_names(tps))

    def on_lost(self, consumer: Any, partitions: list[KafkaTopicPartition]) -> None:
        """Partitions already owned by someone else: drop without committing."""
        self.rebalances += 1
        tps = [TopicPartition(p.topic, p.partition) for p in partitions]
        redelivered = self._host.abandon(tps)
        log.warning(
            "partitions lost: dropped without commit",
            group=self._host.group,
            partitions=_names(tps),
            redelivered_from=redelivered,
        )


def _names(tps: list[TopicPartition]) -> str:
    return ", ".join(str(tp) for tp in tps)
