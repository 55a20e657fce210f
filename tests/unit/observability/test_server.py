"""The HTTP endpoint on a free port, with a fake worker behind it."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from streamkit.errors import ConfigError
from streamkit.observability import Health, ObservabilityServer, WorkerCollector
from streamkit.observability.kafka_stats import StatsReader
from tests.unit.observability.worker_fakes import FakeRestore, FakeTables, FakeWorker, orders_worker


def get(port: int, path: str, accept: str | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if accept:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


@pytest.fixture
def served() -> Iterator[tuple[FakeWorker, int]]:
    worker = orders_worker()
    worker.tables = FakeTables()
    stats = StatsReader()
    health = Health(worker, 60.0, stats=stats)
    registry = CollectorRegistry()
    registry.register(WorkerCollector(worker, health, stats))
    server = ObservabilityServer(health, registry, "127.0.0.1", 0, tables=worker.tables)
    server.start()
    yield worker, server.port
    server.close()


def test_probes_answer_with_status_and_reason(served: tuple[FakeWorker, int]) -> None:
    worker, port = served
    assert get(port, "/livez") == (200, "text/plain; charset=utf-8", "starting\n")
    assert get(port, "/readyz")[::2] == (503, "waiting for kafka\n")
    worker.heartbeat = time.monotonic()
    assert get(port, "/readyz")[::2] == (503, "not in the group yet\n")
    worker.handlers.joined = True
    assert get(port, "/readyz?verbose=1")[::2] == (200, "ready\n")
    worker.stopping = True
    assert get(port, "/readyz")[::2] == (503, "stopping\n")
    assert get(port, "/livez")[::2] == (200, "stopping\n")


def test_metrics_in_prometheus_and_openmetrics_formats(served: tuple[FakeWorker, int]) -> None:
    worker, port = served
    worker.consumed["orders"] = 7
    status, content_type, body = get(port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    assert (
        samples[("streamkit_records_consumed_total", (("agent", "enrich"), ("topic", "orders")))]
        == 7
    )
    _, content_type, body = get(port, "/metrics", accept="application/openmetrics-text")
    assert content_type.startswith("application/openmetrics-text") and body.endswith("# EOF\n")


def test_unknown_paths_are_404(served: tuple[FakeWorker, int]) -> None:
    _, port = served
    assert get(port, "/")[0] == 404


def test_a_port_in_use_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = orders_worker()
        with pytest.raises(ConfigError, match=rf"http_port: cannot listen on 127.0.0.1:{port}"):
            ObservabilityServer(Health(worker, 60.0), CollectorRegistry(), "127.0.0.1", port)


def test_an_unknown_host_names_http_host() -> None:
    worker = orders_worker()
    with pytest.raises(ConfigError, match=r"http_host: cannot listen on no-such-host\.invalid:0"):
        ObservabilityServer(Health(worker, 60.0), CollectorRegistry(), "no-such-host.invalid", 0)


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    worker = orders_worker()
    try:
        server = ObservabilityServer(Health(worker, 60.0), CollectorRegistry(), "::1", 0)
    except ConfigError:
        pytest.skip("IPv6 loopback not configured")
    server.start()
    try:
        with urllib.request.urlopen(f"http://[::1]:{server.port}/livez", timeout=5) as response:
            assert response.status == 200
    finally:
        server.close()


def test_table_lookups_answer_with_the_tables_status_and_json(
    served: tuple[FakeWorker, int],
) -> None:
    worker, port = served
    assert worker.tables is not None
    assert get(port, "/tables/counts/k%2F1")[:2] == (404, "application/json")
    worker.tables.answer = (200, {"table": "counts", "key": "k/1", "partition": 2, "value": 7})
    status, _, body = get(port, "/tables/counts/k%2F1")
    assert (status, orjson.loads(body)["value"]) == (200, 7)
    assert worker.tables.asked == [("counts", "k/1"), ("counts", "k/1")]


def test_restores_are_metrics(served: tuple[FakeWorker, int]) -> None:
    worker, port = served
    assert worker.tables is not None
    worker.tables.restored = [FakeRestore("counts", 1, done=600, remaining=400)]
    body = get(port, "/metrics")[2]
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    labels = (("partition", "1"), ("table", "counts"))
    assert samples[("streamkit_table_restore_remaining_records", labels)] == 400
    assert samples[("streamkit_table_restored_records_total", labels)] == 600
