"""Prometheus metrics of one worker, read from the runtime when scraped.

Nothing here runs per record. The runtime keeps plain counters it needs
anyway or that cost one integer add per batch or per emit (records handed to
agents, emits per target, retries, dead letters, commits, rebalance
callbacks), and :class:`WorkerCollector` turns them into metric families
only when Prometheus scrapes ``/metrics``.

The two histograms are fed once per slice of work, not per record:

* ``streamkit_processing_seconds``: a sync agent works through its
  partition's records in slices of about 5 ms; each slice adds its duration
  divided by its record count, weighted by that count. ``_sum`` is the exact
  processing time and ``_count`` the exact record count, so ``rate(_sum) /
  rate(_count)`` is the true mean; the buckets show the spread between slices,
  not between the records of one slice. An async agent's slice is one record,
  timed from its start to its return. Records that failed are not timed (the
  retry and dead-letter counters cover them).
* ``streamkit_end_to_end_latency_seconds``: now minus the Kafka timestamp of
  the last record of each slice: one sample per slice, so ``_count`` counts
  slices, not records.

Every name is a :data:`MetricName`, so a typo is a type error.
"""

from __future__ import annotations

import itertools
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Literal, TypeVar

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from streamkit.observability.health import Health
from streamkit.observability.kafka_stats import StatsReader
from streamkit.observability.state import RecoveryView, WorkerView

T = TypeVar("T")

MetricName = Literal[
    "streamkit_worker_info",
    "streamkit_live",
    "streamkit_ready",
    "streamkit_records_consumed_total",
    "streamkit_records_emitted_total",
    "streamkit_records_retried_total",
    "streamkit_records_delayed_total",
    "streamkit_records_dead_lettered_total",
    "streamkit_records_skipped_total",
    "streamkit_processing_seconds",
    "streamkit_end_to_end_latency_seconds",
    "streamkit_records_in_flight",
    "streamkit_records_buffered",
    "streamkit_partitions_assigned",
    "streamkit_partitions_paused",
    "streamkit_consumer_lag",
    "streamkit_commits_total",
    "streamkit_commit_failures_total",
    "streamkit_commit_sync_seconds",
    "streamkit_transactions_total",
    "streamkit_rebalances_total",
    "streamkit_rebalance_seconds",
    "streamkit_fetcher_polls_total",
    "streamkit_event_loop_tick_age_seconds",
    "streamkit_table_restore_remaining_records",
    "streamkit_table_restored_records_total",
    "streamkit_window_late_records_total",
    "streamkit_windows_closed_total",
    "streamkit_rate_limit_records_per_second",
    "streamkit_rate_limit_wait_seconds_total",
]

HELP: Final[dict[MetricName, str]] = {
    "streamkit_worker_info": "This worker: app, consumer group and current group member id.",
    "streamkit_live": "1 while /livez succeeds.",
    "streamkit_ready": "1 while /readyz succeeds.",
    "streamkit_records_consumed_total": "Records fetched and handed to the agent.",
    "streamkit_records_emitted_total": "Records the agent produced, per target topic.",
    "streamkit_records_retried_total": "In-place retries of failed records.",
    "streamkit_records_delayed_total": "Failed records moved to a delayed-retry topic.",
    "streamkit_records_dead_lettered_total": "Records sent to the dead-letter topic.",
    "streamkit_records_skipped_total": "Records the agent skipped (SkipRecord).",
    "streamkit_window_late_records_total": (
        "Records that came after all their windows closed (sent to the late topic or callback)."
    ),
    "streamkit_windows_closed_total": "Windows closed (final results emitted in final mode).",
    "streamkit_rate_limit_records_per_second": (
        "This worker's share of the agent's group-wide rate limit (scope=worker), and the limit "
        "(scope=group)."
    ),
    "streamkit_rate_limit_wait_seconds_total": (
        "Seconds this worker's partitions waited for a rate-limit token."
    ),
    "streamkit_processing_seconds": "Agent time per record, observed once per slice of work.",
    "streamkit_end_to_end_latency_seconds": (
        "Now minus the record timestamp, for the last record of each slice."
    ),
    "streamkit_records_in_flight": "Records started and not yet committable.",
    "streamkit_records_buffered": "Records fetched and not yet started.",
    "streamkit_partitions_assigned": "Partitions this worker owns.",
    "streamkit_partitions_paused": "Owned partitions paused: their backlog is over the limit.",
    "streamkit_consumer_lag": "High watermark minus the group's committed offset (librdkafka).",
    "streamkit_commits_total": "Offset commits: async in steady state, sync on revoke.",
    "streamkit_commit_failures_total": "Async commits the broker refused (retried later).",
    "streamkit_commit_sync_seconds": "Time of synchronous commits on revoke.",
    "streamkit_transactions_total": "Exactly once: checkpoint transactions, by outcome.",
    "streamkit_rebalances_total": "Rebalance callbacks that moved partitions.",
    "streamkit_rebalance_seconds": "Time spent in those callbacks (revoke: drain and commit).",
    "streamkit_fetcher_polls_total": "consume() calls of the poll thread.",
    "streamkit_event_loop_tick_age_seconds": "Seconds since the event loop last ticked (~0.02).",
    "streamkit_table_restore_remaining_records": (
        "Changelog records a table partition still reads before it processes (0: restored)."
    ),
    "streamkit_table_restored_records_total": "Changelog records read by table partition restores.",
}

# Agent time per record: from a 10 µs transform to a 30 s remote call.
PROCESSING_BUCKETS: Final = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
# Produce-to-process: from a live pipeline (ms) to a day-old backlog.
LATENCY_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
)  # fmt: skip


class Buckets:
    """Histogram counts written by one thread (the event loop), read by the scraper."""

    __slots__ = ("bounds", "counts", "labels", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.labels = (*(repr(float(b)) for b in self.bounds), "+Inf")  # "le": 1e-05 ... 30.0
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def add(self, value: float, weight: int, total: float) -> None:
        """Count ``weight`` observations of ``value`` whose sum is ``total``."""
        self.counts[bisect_left(self.bounds, value)] += weight
        self.total += total

    def cumulative(self) -> tuple[list[tuple[str, float]], float]:
        """Prometheus buckets (``le`` and cumulative count) and the sum."""
        running = itertools.accumulate(list(self.counts))
        return [(le, float(c)) for le, c in zip(self.labels, running, strict=True)], self.total


class SliceTimings:
    """Processing time and end-to-end latency of one agent on one input topic."""

    __slots__ = ("latency", "processing")

    def __init__(self) -> None:
        self.processing = Buckets(PROCESSING_BUCKETS)
        self.latency = Buckets(LATENCY_BUCKETS)

    def observe(self, seconds: float, records: int, last: Any) -> None:
        """The runtime's slice observer (loop thread; once per slice, so it stays small).

        Args:
            seconds: How long the slice took.
            records: Records that went through in it (at least 1).
            last: The last of them, a confluent-kafka message.
        """
        self.processing.add(seconds / records, records, seconds)
        kind, timestamp_ms = last.timestamp()
        if kind:  # 0: the record has no timestamp
            age = max(time.time() - timestamp_ms / 1000, 0.0)
            self.latency.add(age, 1, age)


class WorkerCollector(Collector):
    """Builds every ``streamkit_*`` family from the worker's state, at scrape time.

    Args:
        worker: The worker to read.
        health: Its probes, for ``streamkit_live`` and ``streamkit_ready``.
        stats: Shared parser of the worker's librdkafka statistics (lag).
        clock: Monotonic seconds, as the worker's heartbeat uses.
    """

    def __init__(
        self,
        worker: WorkerView,
        health: Health,
        stats: StatsReader,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._worker = worker
        self._health = health
        self._stats = stats
        self._clock = clock
        # One per input topic (retry tiers included), fed by the partition
        # workers through Worker.on_slice.
        self.timings = {topic: SliceTimings() for topic in worker.processors}

    def _restores(self) -> Iterable[Metric]:
        tables = self._worker.tables
        yield from _restore_families(tables.restores() if tables is not None else ())

    def collect(self) -> Iterable[Metric]:
        """Read the worker once and yield every family (the scraper's thread)."""
        worker = self._worker
        handlers = worker.handlers
        agent_of = {topic: p.agent.name for topic, p in list(worker.processors.items())}

        info = _gauge("streamkit_worker_info", ["app", "group", "member"])
        info.add_metric([worker.app.name, worker.group, handlers.member or ""], 1)
        live = _gauge("streamkit_live")
        live.add_metric([], float(self._health.live().ok))
        ready = _gauge("streamkit_ready")
        ready.add_metric([], float(self._health.ready().ok))
        yield from (info, live, ready)

        consumed = _counter("streamkit_records_consumed_total", ["agent", "topic"])
        for topic, count in sorted(worker.consumed.items()):
            consumed.add_metric([agent_of[topic], topic], count)
        yield consumed
        emitted = _counter("streamkit_records_emitted_total", ["agent", "topic"])
        for processor in _distinct(worker.processors.values()):
            if processor.emitter is not None:
                for target, count in sorted(processor.emitter.emitted.items()):
                    emitted.add_metric([processor.agent.name, target], count)
        yield emitted
        late = _counter("streamkit_window_late_records_total", ["agent"])
        closed = _counter("streamkit_windows_closed_total", ["agent"])
        for processor in _distinct(worker.processors.values()):
            if processor.windows is not None:
                late.add_metric([processor.agent.name], processor.windows.late)
                closed.add_metric([processor.agent.name], processor.windows.closed)
        yield from (late, closed)
        rates = _gauge("streamkit_rate_limit_records_per_second", ["agent", "scope"])
        waited = _counter("streamkit_rate_limit_wait_seconds_total", ["agent"])
        for name, bucket in sorted(worker.rate_limits.buckets.items()):
            rates.add_metric([name, "worker"], bucket.rate)
            rates.add_metric([name, "group"], bucket.group_rate)
            waited.add_metric([name], bucket.waited)
        yield from (rates, waited)
        yield from self._failures(_distinct(worker.recoveries.values()))
        yield from self._timings(agent_of)
        yield from self._partitions(agent_of)
        yield from self._kafka()
        yield from self._restores()

    def _failures(self, recoveries: list[RecoveryView]) -> Iterable[Metric]:
        names: list[tuple[MetricName, Callable[[RecoveryView], int]]] = [
            ("streamkit_records_retried_total", lambda r: r.retried),
            ("streamkit_records_delayed_total", lambda r: r.delayed),
            ("streamkit_records_dead_lettered_total", lambda r: r.dead_lettered),
            ("streamkit_records_skipped_total", lambda r: r.skipped),
        ]
        for name, read in names:
            family = _counter(name, ["agent", "topic"])
            for recovery in recoveries:
                family.add_metric([recovery.agent.name, recovery.agent.source.name], read(recovery))
            yield family

    def _timings(self, agent_of: dict[str, str]) -> Iterable[Metric]:
        processing = _histogram("streamkit_processing_seconds", ["agent", "topic"])
        latency = _histogram("streamkit_end_to_end_latency_seconds", ["agent", "topic"])
        for topic, timings in sorted(self.timings.items()):
            labels = [agent_of[topic], topic]
            buckets, total = timings.processing.cumulative()
            processing.add_metric(labels, buckets, total)
            buckets, total = timings.latency.cumulative()
            latency.add_metric(labels, buckets, total)
        yield from (processing, latency)

    def _partitions(self, agent_of: dict[str, str]) -> Iterable[Metric]:
        topics = sorted(agent_of)
        assigned = dict.fromkeys(topics, 0)
        paused = dict.fromkeys(topics, 0)
        in_flight = dict.fromkeys(topics, 0)
        buffered = dict.fromkeys(topics, 0)
        owned = set()
        for partition in list(self._worker.workers.values()):
            topic = partition.tp.topic
            owned.add((topic, partition.tp.partition))
            assigned[topic] = assigned.get(topic, 0) + 1
            paused[topic] = paused.get(topic, 0) + partition.paused
            in_flight[topic] = in_flight.get(topic, 0) + partition.offsets.in_flight
            buffered[topic] = buffered.get(topic, 0) + partition.backlog
        per_topic: list[tuple[MetricName, dict[str, int]]] = [
            ("streamkit_partitions_assigned", assigned),
            ("streamkit_partitions_paused", paused),
        ]
        for name, values in per_topic:
            family = _gauge(name, ["topic"])
            for topic in topics:
                family.add_metric([topic], values[topic])
            yield family
        per_agent: list[tuple[MetricName, dict[str, int]]] = [
            ("streamkit_records_in_flight", in_flight),
            ("streamkit_records_buffered", buffered),
        ]
        for name, values in per_agent:
            family = _gauge(name, ["agent", "topic"])
            for topic in topics:
                family.add_metric([agent_of[topic], topic], values[topic])
            yield family
        lag = _gauge("streamkit_consumer_lag", ["topic", "partition"])
        for (topic, number), value in sorted(self._stats.read(self._worker.stats).lag.items()):
            if (topic, number) in owned:
                lag.add_metric([topic, str(number)], value)
        yield lag

    def _kafka(self) -> Iterable[Metric]:
        worker = self._worker
        handlers = worker.handlers
        commits = _counter("streamkit_commits_total", ["mode"])
        commits.add_metric(["async"], worker.commits)
        commits.add_metric(["sync"], handlers.sync_commits)
        failures = _counter("streamkit_commit_failures_total")
        failures.add_metric([], worker.commit_failures)
        sync = _summary("streamkit_commit_sync_seconds")
        sync.add_metric([], handlers.sync_commits, handlers.sync_commit_seconds)
        transactions = _counter("streamkit_transactions_total", ["outcome"])
        committed, aborted = worker.transactions
        transactions.add_metric(["committed"], committed)
        transactions.add_metric(["aborted"], aborted)
        rebalances = _counter("streamkit_rebalances_total", ["event"])
        seconds = _summary("streamkit_rebalance_seconds", ["event"])
        for event, count in handlers.events.items():
            rebalances.add_metric([event], count)
            seconds.add_metric([event], count, handlers.seconds[event])
        polls = _counter("streamkit_fetcher_polls_total")
        fetcher = worker.fetcher
        polls.add_metric([], fetcher.polls if fetcher is not None else 0)
        tick_age = _gauge("streamkit_event_loop_tick_age_seconds")
        if worker.heartbeat is not None:
            tick_age.add_metric([], max(self._clock() - worker.heartbeat, 0.0))
        yield from (commits, failures, sync, transactions, rebalances, seconds, polls, tick_age)


def _distinct(items: Iterable[T]) -> list[T]:
    """Each object once: retry tiers share their agent's processor and recovery."""
    return list({id(item): item for item in list(items)}.values())


def _restore_families(restores: Iterable[Any]) -> tuple[Metric, Metric]:
    remaining = _gauge("streamkit_table_restore_remaining_records", ["table", "partition"])
    restored = _counter("streamkit_table_restored_records_total", ["table", "partition"])
    for progress in restores:
        labels = [progress.table, str(progress.partition)]
        remaining.add_metric(labels, progress.remaining)
        restored.add_metric(labels, progress.done)
    return remaining, restored


def _counter(name: MetricName, labels: Sequence[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, HELP[name], labels=labels)


def _gauge(name: MetricName, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, HELP[name], labels=labels)


def _summary(name: MetricName, labels: Sequence[str] = ()) -> SummaryMetricFamily:
    return SummaryMetricFamily(name, HELP[name], labels=labels)


def _histogram(name: MetricName, labels: Sequence[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, HELP[name], labels=labels)
