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
``partitions revoked``, ``partitions lost``. Every callback first binds the
log keys (app, group, and the member id librdkafka holds now) on the fetcher
thread, so those lines, the commits and errors that thread logs later, and the
partition tasks it starts all carry the same keys.
"""

from __future__ import annotations

import concurrent.futures
import functools
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

import structlog
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamkit.runtime.commit import commit_sync
from streamkit.types import TopicPartition

log = structlog.get_logger("streamkit.rebalance")

RebalanceEvent = Literal["assign", "revoke", "lost"]


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


_Callback = Callable[["RebalanceHandlers", Any, list[KafkaTopicPartition]], None]


def _observed(event: RebalanceEvent) -> Callable[[_Callback], _Callback]:
    """Bind the log keys, then count and time the callback when it moves partitions."""

    def decorate(callback: _Callback) -> _Callback:
        @functools.wraps(callback)
        def observed(
            self: RebalanceHandlers, consumer: Any, partitions: list[KafkaTopicPartition]
        ) -> None:
            self.member = _member(consumer)
            keys = {**self._log_keys, "member": self.member} if self.member else self._log_keys
            if keys:
                # Bound for good: this is the fetcher thread's own context.
                structlog.contextvars.bind_contextvars(**keys)
            if self._on_callback is not None:
                self._on_callback(consumer)
            began = time.monotonic()
            try:
                callback(self, consumer, partitions)
            finally:
                if event == "assign":
                    self.joined = True
                elif event == "lost" and partitions:
                    # Out of the group until the next assignment: /readyz
                    # says so (a member whose rejoin fails, an auth failure
                    # after a rotation, stays unready instead of Ready).
                    self.joined = False
                if partitions:
                    self.events[event] += 1
                    self.seconds[event] += time.monotonic() - began
                    if self._on_change is not None:
                        self._on_change()

        return observed

    return decorate


class RebalanceHandlers:
    """The callbacks given to ``consumer.subscribe``.

    Args:
        host: The runtime owning the partition workers.
        budget: Seconds the revoke path may take in total.
        log_keys: Bound to every log line of the fetcher thread (app, group).
        wait: Seconds to wait for the host's release before abandoning
            (default ``budget``; longer exactly once, where the release ends
            in a transaction commit that must not be given up halfway).
        on_callback: Called with the consumer first in every callback
            (exactly once: the new generation's group metadata).
        on_change: Called after every callback that moved partitions, once
            they are in place (assigned, or revoked and released): the
            owned set changed (rate limits recompute their shares).
    """

    def __init__(
        self,
        host: PartitionHost,
        budget: float,
        log_keys: Mapping[str, str] | None = None,
        wait: float | None = None,
        on_callback: Callable[[Any], None] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._host = host
        self._on_callback = on_callback
        self._on_change = on_change
        self.budget = budget
        self._wait = wait if wait is not None else budget
        self.rebalances = 0
        self._log_keys = dict(log_keys or {})
        # Read by streamkit.observability; written on the fetcher thread only.
        self.joined = False  # a first assignment arrived (an idle member's is empty)
        self.member: str | None = None
        self.events: dict[RebalanceEvent, int] = {"assign": 0, "revoke": 0, "lost": 0}
        self.seconds: dict[RebalanceEvent, float] = {"assign": 0.0, "revoke": 0.0, "lost": 0.0}
        self.sync_commits = 0
        self.sync_commit_seconds = 0.0

    @_observed("assign")
    def on_assign(self, consumer: Any, partitions: list[KafkaTopicPartition]) -> None:
        """New partitions: set up a worker for each."""
        self.rebalances += 1
        tps = [TopicPartition(p.topic, p.partition) for p in partitions]
        if tps:
            self._host.assign(tps)
        log.info("partitions assigned", group=self._host.group, partitions=_names(tps))

    @_observed("revoke")
    def on_revoke(self, consumer: Any, partitions: list[KafkaTopicPartition]) -> None:
        """Partitions leaving: drain, commit, release within the budget."""
        self.rebalances += 1
        tps = [TopicPartition(p.topic, p.partition) for p in partitions]
        if not tps:
            return
        future = self._host.release(tps, self.budget)
        try:
            offsets = future.result(timeout=self._wait)
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
        began = time.monotonic()
        commit_sync(consumer, offsets, reason="revoke")
        if offsets:
            self.sync_commits += 1
            self.sync_commit_seconds += time.monotonic() - began
        log.info("partitions revoked", group=self._host.group, partitions=_names(tps))

    @_observed("lost")
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


def _member(consumer: Any) -> str | None:
    """The member id librdkafka holds now (fetcher thread); ``None`` if it has none."""
    memberid = getattr(consumer, "memberid", None)  # in-memory and fake consumers lack it
    try:
        return memberid() if memberid is not None else None
    except RuntimeError:  # the consumer is closed
        return None


def _names(tps: list[TopicPartition]) -> str:
    return ", ".join(str(tp) for tp in tps)
