"""Liveness and readiness of one worker, decided each time a probe asks.

``/livez`` fails when something has been stuck for longer than
``liveness_timeout`` (default 60 s), so that the kubelet restarts the pod:

* **the event loop**: it has not ticked (every 20 ms when healthy). A sync
  agent that blocks on one record blocks the whole loop, and this is how
  that shows.
* **the poll thread**: ``consume()`` was not called for ``liveness_timeout``
  plus the revoke budget, because a revoke legitimately holds the thread
  while the loop drains (up to ``min(shutdown_timeout, 0.8 *
  max.poll.interval.ms)``).
* **an agent on one record**: a partition's oldest record in flight has
  been the same unfinished record for ``liveness_timeout``, for example an
  ``async`` agent awaiting a call that never answers. In-place retries of the
  record count. A record that only waits for the broker to acknowledge its
  emits does not: a broker outage is not cured by restarting pods.

While starting (before the event loop runs, and while waiting for Kafka) and
while stopping, ``/livez`` succeeds: the startup probe and the drain deadline
bound those phases.

``/readyz`` succeeds once the member has joined its group (the first
assignment callback, even with no partitions), as long as it is live and not
stopping. Under KIP-848 (``group_protocol=consumer``) an idle member gets no
assignment callback at all, so there the statistics reporting the group
coordinator ``up`` count as joined. Before that its reason tells the two
waits apart, for ``kubectl describe pod``: ``waiting for kafka`` until the
event loop runs (the endpoint listens before the broker wait, and what
follows it, topic creation and the transactional and global-table set-up,
talks to the broker too), then ``not in the group yet``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamkit.observability.kafka_stats import StatsReader
from streamkit.observability.state import TicketView, WorkerView


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to one probe: ``ok`` and a short reason for humans."""

    ok: bool
    reason: str


class Health:
    """Decides ``/livez`` and ``/readyz`` for one worker (any thread).

    Progress is sampled when a probe asks: a stall is seen within
    ``liveness_timeout`` plus one probe period.

    Args:
        worker: The running worker.
        liveness_timeout: Seconds without progress that count as stuck.
        kip848: The worker uses ``group_protocol=consumer``.
        stats: Shared parser of the worker's librdkafka statistics.
        clock: Monotonic seconds (a fake one in tests).
    """

    def __init__(
        self,
        worker: WorkerView,
        liveness_timeout: float,
        *,
        kip848: bool = False,
        stats: StatsReader | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._worker = worker
        self._timeout = liveness_timeout
        self._kip848 = kip848
        self._stats = stats or StatsReader()
        self._clock = clock
        self._lock = threading.Lock()
        self._polls: int | None = None
        self._polls_at = 0.0
        # Per partition: its oldest unfinished record, and since when it was.
        self._heads: dict[Any, tuple[TicketView, float]] = {}

    def live(self) -> Verdict:
        """``/livez``: not stuck (see the module docstring)."""
        worker = self._worker
        if worker.stopping:
            return Verdict(True, "stopping")
        if worker.heartbeat is None:
            return Verdict(True, "starting")
        now = self._clock()
        with self._lock:
            problem = self._loop_stuck(now) or self._polls_stuck(now) or self._agent_stuck(now)
        return Verdict(False, problem) if problem else Verdict(True, "live")

    def ready(self) -> Verdict:
        """``/readyz``: joined the group, polling, live, and not stopping."""
        worker = self._worker
        if worker.stopping:
            return Verdict(False, "stopping")
        if worker.heartbeat is None:
            # The loop starts only once the broker answered (run_app waits
            # for it first), so no tick yet means the wait is not over.
            return Verdict(False, "waiting for kafka")
        joined = worker.handlers.joined or (
            self._kip848 and self._stats.read(worker.stats).group_state == "up"
        )
        if not joined:
            return Verdict(False, "not in the group yet")
        live = self.live()
        if not live.ok:
            return Verdict(False, live.reason)
        tables = worker.tables
        restoring = tables.restoring() if tables is not None else []
        if restoring:
            return Verdict(False, f"restoring {', '.join(restoring)}")
        return Verdict(True, "ready")

    def _loop_stuck(self, now: float) -> str | None:
        beat = self._worker.heartbeat
        if beat is not None and now - beat > self._timeout:
            return f"the event loop has not run for {now - beat:.0f}s: an agent blocks it"
        return None

    def _polls_stuck(self, now: float) -> str | None:
        fetcher = self._worker.fetcher
        if fetcher is None:
            return None
        polls = fetcher.polls
        if polls != self._polls:
            self._polls, self._polls_at = polls, now
            return None
        limit = self._timeout + self._worker.handlers.budget
        idle = now - self._polls_at
        if idle > limit:
            return f"the poll thread has not polled for {idle:.0f}s (limit {limit:.0f}s)"
        return None

    def _agent_stuck(self, now: float) -> str | None:
        problem = None
        heads: dict[Any, tuple[TicketView, float]] = {}
        for key, partition in list(self._worker.workers.items()):
            try:
                head = partition.offsets.blocked_by()
            except IndexError:  # emptied by the loop while we looked
                continue
            if head is None or head.finished:
                continue
            previous = self._heads.get(key)
            since = previous[1] if previous is not None and previous[0] is head else now
            heads[key] = (head, since)
            if problem is None and now - since > self._timeout:
                problem = (
                    f"agent {partition.processor.agent.name} has been on record "
                    f"{partition.tp}@{head.offset} for {now - since:.0f}s"
                )
        self._heads = heads
        return problem
