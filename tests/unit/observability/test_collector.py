"""The collector's output, parsed back with prometheus_client's own parser."""

from __future__ import annotations

import json
import re
import time
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from streamkit import App
from streamkit.backends.memory import MemoryBackend, MemoryBroker
from streamkit.config import AppConfig
from streamkit.observability import HELP, Health, MetricName, SliceTimings, WorkerCollector
from streamkit.observability.kafka_stats import StatsReader
from streamkit.observability.state import WorkerView
from streamkit.runtime.host import WorkerThread
from streamkit.runtime.worker import Worker
from streamkit.types import TopicPartition
from tests.unit.observability.worker_fakes import (
    FakeBucket,
    FakeTicket,
    FakeWindows,
    orders_worker,
)

ROOT = Path(__file__).resolve().parents[3]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(worker: WorkerView, collector: WorkerCollector | None = None) -> tuple[str, Samples]:
    stats = StatsReader()
    if collector is None:
        collector = WorkerCollector(worker, Health(worker, 60.0, stats=stats), stats)
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_every_metric_name_has_help_and_is_exposed_and_documented() -> None:
    names = set(typing.get_args(MetricName))
    assert set(HELP) == names
    text, _ = scrape(orders_worker())
    exposed = set(re.findall(r"^# TYPE (\S+)", text, re.M))
    assert names == exposed
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    assert not [n for n in sorted(names) if f"`{n}`" not in deploy]


def test_window_counters_per_windowed_agent() -> None:
    worker = orders_worker()
    processor = worker.processors["orders"]
    processor.windows = FakeWindows(late=5, closed=40)
    _, samples = scrape(worker)
    assert value(samples, "streamkit_window_late_records_total", agent="enrich") == 5
    assert value(samples, "streamkit_windows_closed_total", agent="enrich") == 40


def test_rate_limits_show_this_workers_share_the_group_limit_and_the_waiting() -> None:
    worker = orders_worker()
    worker.rate_limits.buckets["enrich"] = FakeBucket(rate=50.0, group_rate=200.0, waited=3.5)
    _, samples = scrape(worker)
    rate = "streamkit_rate_limit_records_per_second"
    assert value(samples, rate, agent="enrich", scope="worker") == 50.0
    assert value(samples, rate, agent="enrich", scope="group") == 200.0
    assert value(samples, "streamkit_rate_limit_wait_seconds_total", agent="enrich") == 3.5


def test_counters_per_agent_and_topic_with_retry_tiers_counted_once() -> None:
    worker = orders_worker()
    worker.consumed = {"orders": 120, "orders.retry": 3}
    emitter = worker.processors["orders"].emitter
    assert emitter is not None
    emitter.emitted.update({"orders.out": 118, "orders.review": 2})
    recovery = worker.recoveries["orders"]
    recovery.retried, recovery.delayed, recovery.dead_lettered, recovery.skipped = 9, 3, 1, 4
    _, samples = scrape(worker)
    consumed = "streamkit_records_consumed_total"
    assert value(samples, consumed, agent="enrich", topic="orders") == 120
    assert value(samples, consumed, agent="enrich", topic="orders.retry") == 3
    emitted = "streamkit_records_emitted_total"
    assert value(samples, emitted, agent="enrich", topic="orders.out") == 118
    assert value(samples, emitted, agent="enrich", topic="orders.review") == 2
    assert len([k for k in samples if k[0] == emitted]) == 2  # the tier's shared emitter: once
    for name, expected in [("retried", 9), ("delayed", 3), ("dead_lettered", 1), ("skipped", 4)]:
        assert value(
            samples, f"streamkit_records_{name}_total", agent="enrich", topic="orders"
        ) == (expected)


def test_partitions_in_flight_and_lag_of_owned_partitions_only() -> None:
    worker = orders_worker()
    p0 = worker.workers[TopicPartition("orders", 0)]
    p0.backlog, p0.paused = 700, True
    p0.offsets.tickets = [FakeTicket(5), FakeTicket(6, finished=True)]
    worker.stats = json.dumps(
        {
            "cgrp": {"state": "up", "join_state": "steady"},
            "topics": {
                "orders": {
                    "partitions": {
                        "0": {"consumer_lag": 1500},
                        "1": {"consumer_lag": 0},
                        "2": {"consumer_lag": 99},  # someone else's
                        "-1": {"consumer_lag": -1},
                    }
                }
            },
        }
    )
    _, samples = scrape(worker)
    assert value(samples, "streamkit_partitions_assigned", topic="orders") == 2
    assert value(samples, "streamkit_partitions_assigned", topic="orders.retry") == 0
    assert value(samples, "streamkit_partitions_paused", topic="orders") == 1
    assert value(samples, "streamkit_records_buffered", agent="enrich", topic="orders") == 700
    assert value(samples, "streamkit_records_in_flight", agent="enrich", topic="orders") == 2
    lag = {
        dict(k[1])["partition"]: v for k, v in samples.items() if k[0] == "streamkit_consumer_lag"
    }
    assert lag == {"0": 1500, "1": 0}


def test_commits_rebalances_and_liveness_gauges() -> None:
    worker = orders_worker()
    worker.commits, worker.commit_failures = 40, 1
    worker.transactions = (7, 2)
    handlers = worker.handlers
    handlers.member, handlers.joined = "m-1", True
    handlers.events.update({"assign": 2, "revoke": 1})
    handlers.seconds.update({"assign": 0.002, "revoke": 1.5})
    handlers.sync_commits, handlers.sync_commit_seconds = 1, 0.04
    worker.heartbeat = time.monotonic()
    _, samples = scrape(worker)
    assert value(samples, "streamkit_commits_total", mode="async") == 40
    assert value(samples, "streamkit_commits_total", mode="sync") == 1
    assert value(samples, "streamkit_commit_failures_total") == 1
    assert value(samples, "streamkit_transactions_total", outcome="committed") == 7
    assert value(samples, "streamkit_transactions_total", outcome="aborted") == 2
    assert value(samples, "streamkit_commit_sync_seconds_sum") == 0.04
    assert value(samples, "streamkit_rebalances_total", event="revoke") == 1
    assert value(samples, "streamkit_rebalance_seconds_sum", event="revoke") == 1.5
    assert value(samples, "streamkit_rebalance_seconds_count", event="assign") == 2
    assert value(samples, "streamkit_worker_info", app="shop", group="shop", member="m-1") == 1
    assert value(samples, "streamkit_live") == 1
    assert value(samples, "streamkit_ready") == 1
    assert 0 <= value(samples, "streamkit_event_loop_tick_age_seconds") < 5


class Message:
    def __init__(self, timestamp_ms: int, kind: int = 1) -> None:
        self._timestamp = (kind, timestamp_ms)

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp


def test_slice_timings_weight_processing_by_records_and_sample_latency_per_slice() -> None:
    timings = SliceTimings()
    now_ms = int(time.time() * 1000)
    timings.observe(0.005, 100, Message(now_ms - 2_000))  # 50 µs per record
    timings.observe(0.3, 1, Message(now_ms - 20))
    timings.observe(0.001, 2, Message(0, kind=0))  # no timestamp: no latency sample
    worker = orders_worker()
    stats = StatsReader()
    collector = WorkerCollector(worker, Health(worker, 60.0, stats=stats), stats)
    collector.timings["orders"] = timings
    _, samples = scrape(worker, collector)
    labels = {"agent": "enrich", "topic": "orders"}
    processing = "streamkit_processing_seconds"
    assert value(samples, f"{processing}_count", **labels) == 103
    assert value(samples, f"{processing}_sum", **labels) == pytest.approx(0.306)
    assert value(samples, f"{processing}_bucket", le="5e-05", **labels) == 100
    assert value(samples, f"{processing}_bucket", le="0.0005", **labels) == 102
    assert value(samples, f"{processing}_bucket", le="0.25", **labels) == 102
    assert value(samples, f"{processing}_bucket", le="0.5", **labels) == 103
    latency = "streamkit_end_to_end_latency_seconds"
    assert value(samples, f"{latency}_count", **labels) == 2
    assert value(samples, f"{latency}_bucket", le="0.025", **labels) in (0, 1)  # 20 ms, if fast
    assert value(samples, f"{latency}_bucket", le="2.5", **labels) == 2
    assert value(samples, f"{latency}_bucket", le="1.0", **labels) <= 1


# -- a real worker on the in-memory backend: the runtime's hooks ---------------


@pytest.fixture
def shop() -> Iterator[tuple[App, MemoryBroker]]:
    app = App("shop")
    orders = app.topic("orders", value_serde="json", partitions=2)
    out = app.topic("orders.out", value_serde="json", partitions=2)
    app.topic("orders.review", value_serde="json", partitions=1)

    @app.agent(orders, emits=[out])
    def enrich(value: dict[str, Any]) -> list[dict[str, Any]]:
        return [value, value] if value["n"] % 10 == 0 else [value]

    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions or 1)
    broker.create_topic("shop.enrich.dlq", 1)
    yield app, broker


def test_the_runtime_feeds_the_collector(shop: tuple[App, MemoryBroker]) -> None:
    app, broker = shop
    config = AppConfig.load(app.name, {"brokers": "memory:9092"}, env={})
    worker = Worker(app, app.select(), config, backend=MemoryBackend(broker), handle_signals=False)
    stats = StatsReader()
    health = Health(worker, 60.0, stats=stats)
    collector = WorkerCollector(worker, health, stats)
    for topic, timings in collector.timings.items():
        worker.on_slice[topic] = timings.observe
    assert not health.ready().ok
    thread = WorkerThread("observability-test")
    future = thread.start(worker)
    try:
        n = 500
        for i in range(n):
            broker.append("orders", f"k{i % 7}".encode(), json.dumps({"n": i}).encode())
        deadline = time.monotonic() + 10
        while len(broker.messages("orders.out")) < n + n // 10:
            assert time.monotonic() < deadline, "the worker did not process the records"
            time.sleep(0.01)
        deadline = time.monotonic() + 10
        while not health.ready().ok:
            assert time.monotonic() < deadline, health.ready().reason
            time.sleep(0.01)
        _, samples = scrape(worker, collector)
    finally:
        worker.stop()
        assert future.result(10) == 0
        thread.close()
    labels = {"agent": "enrich", "topic": "orders"}
    assert value(samples, "streamkit_records_consumed_total", **labels) == n
    assert value(
        samples, "streamkit_records_emitted_total", agent="enrich", topic="orders.out"
    ) == (n + n // 10)
    assert value(samples, "streamkit_processing_seconds_count", **labels) == n
    assert value(samples, "streamkit_end_to_end_latency_seconds_count", **labels) >= 1
    assert value(samples, "streamkit_partitions_assigned", topic="orders") == 2
    assert value(samples, "streamkit_rebalances_total", event="assign") == 1
    assert value(samples, "streamkit_ready") == 1
    assert value(samples, "streamkit_fetcher_polls_total") > 0
