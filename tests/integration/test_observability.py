"""The worker's HTTP endpoint on a real broker: probes, metrics, log keys.

Each test runs ``tests.integration.apps.configurable`` as ``streamkit run``
subprocesses with ``STREAMKIT_HTTP_PORT`` on a free port, and polls the
endpoints with deadlines.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamkit.localkafka import free_ports
from tests.integration.helpers import APP, WorkerProcess, keyed_records, produce, read_topic

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(port: int, path: str) -> tuple[int, str]:
    """Status and body; status 0 while nothing listens yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except (ConnectionError, urllib.error.URLError):
        return 0, ""


def metrics(port: int) -> Samples:
    status, body = get(port, "/metrics")
    assert status == 200, body
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), -1.0)


def poll(
    worker: WorkerProcess, what: str, check: Callable[[], bool], timeout: float = 60.0
) -> None:
    """Until ``check()`` holds; fails at once if the worker exits, else at the deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        assert worker.proc.poll() is None, f"worker exited:\n{worker.output()[-3000:]}"
        assert time.monotonic() < deadline, (
            f"timed out waiting for {what}:\n{worker.output()[-3000:]}"
        )
        time.sleep(0.1)


@pytest.fixture
def pipeline(
    new_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> Callable[..., dict[str, str]]:
    """Factory: env for one configurable pipeline with fresh topics, group and port."""

    def make(partitions: int = 4) -> dict[str, str]:
        app = unique_name("obs")
        return {
            "TEST_APP": app,
            "TEST_IN": new_topic(partitions=partitions),
            "TEST_OUT": new_topic(partitions=partitions),
            "STREAMKIT_GROUP_ID": app,
            "STREAMKIT_SESSION_TIMEOUT_MS": "6000",
            "STREAMKIT_COMMIT_INTERVAL": "0.2",
            # Lag from librdkafka statistics twice a second, not every 5 s.
            "STREAMKIT_CONSUMER_STATISTICS_INTERVAL_MS": "500",
        }

    return make


def start_served(
    start_worker: Callable[..., WorkerProcess], env: dict[str, str], **extra: str
) -> tuple[WorkerProcess, int]:
    [port] = free_ports(1)
    worker = start_worker(APP, **env, STREAMKIT_HTTP_PORT=str(port), **extra)
    return worker, port


def log_lines(worker: WorkerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]


def test_probes_metrics_and_log_keys_of_a_working_worker(
    kafka_bootstrap: str,
    pipeline: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    env = pipeline()
    worker, port = start_served(start_worker, env)
    poll(worker, "/readyz", lambda: get(port, "/readyz") == (200, "ready\n"))
    assert get(port, "/livez") == (200, "live\n")
    assert get(port, "/nope")[0] == 404

    n = 2_000
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(n))
    labels = {"agent": "forward", "topic": env["TEST_IN"]}
    poll(
        worker,
        f"{n} records consumed and emitted",
        lambda: (
            value(samples := metrics(port), "streamkit_records_consumed_total", **labels) == n
            and value(
                samples, "streamkit_records_emitted_total", agent="forward", topic=env["TEST_OUT"]
            )
            == n
        ),
    )
    assert len(read_topic(kafka_bootstrap, env["TEST_OUT"], n)) == n
    # Lag comes from librdkafka's statistics: zero on every partition once committed.
    lag = "streamkit_consumer_lag"
    poll(
        worker,
        "zero lag on the 4 partitions",
        lambda: sorted(v for (name, _), v in metrics(port).items() if name == lag) == [0.0] * 4,
    )
    samples = metrics(port)
    assert value(samples, "streamkit_processing_seconds_count", **labels) == n
    assert value(samples, "streamkit_end_to_end_latency_seconds_count", **labels) >= 1
    assert value(samples, "streamkit_records_in_flight", **labels) == 0
    assert value(samples, "streamkit_partitions_assigned", topic=env["TEST_IN"]) == 4
    assert value(samples, "streamkit_commits_total", mode="async") >= 1
    assert value(samples, "streamkit_rebalances_total", event="assign") == 1
    assert value(samples, "streamkit_live") == value(samples, "streamkit_ready") == 1
    [info] = [k for k in samples if k[0] == "streamkit_worker_info"]
    assert dict(info[1])["member"]
    assert value(samples, "process_resident_memory_bytes") > 0

    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()[-2000:]
    lines = log_lines(worker)
    lifecycle = {
        "http endpoint listening",
        "started",
        "partitions assigned",
        "stopping",
        "partitions revoked",
        "stopped",
    }
    seen = {line["event"] for line in lines}
    assert lifecycle - {"partitions revoked"} <= seen, seen
    for line in lines:
        if line["event"] in lifecycle:
            assert (line["app"], line["group"]) == (env["TEST_APP"], env["STREAMKIT_GROUP_ID"])
        if line["event"].startswith("partitions "):
            assert line["member"] == dict(info[1])["member"], line


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_an_idle_member_is_ready(
    protocol: str,
    pipeline: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    env = {**pipeline(partitions=1), "STREAMKIT_GROUP_PROTOCOL": protocol}
    first, first_port = start_served(start_worker, env)
    poll(first, "the first member ready", lambda: get(first_port, "/readyz")[0] == 200)
    second, second_port = start_served(start_worker, env)
    poll(second, "the idle member ready", lambda: get(second_port, "/readyz")[0] == 200)
    owned = [
        value(metrics(port), "streamkit_partitions_assigned", topic=env["TEST_IN"])
        for port in (first_port, second_port)
    ]
    assert sorted(owned) == [0, 1]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_stuck_agent_fails_liveness(
    kind: str,
    kafka_bootstrap: str,
    pipeline: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    env = pipeline(partitions=1)
    worker, port = start_served(
        start_worker,
        env,
        STREAMKIT_LIVENESS_TIMEOUT="2",
        TEST_STUCK_ID="3",
        TEST_ASYNC="1" if kind == "async" else "0",
    )
    poll(worker, "/readyz", lambda: get(port, "/readyz")[0] == 200)
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(10))
    poll(worker, "/livez to fail", lambda: get(port, "/livez")[0] == 503, timeout=30)
    status, reason = get(port, "/livez")
    expected = (
        "the event loop has not run"
        if kind == "sync"
        else f"agent forward has been on record {env['TEST_IN']}[0]@3"
    )
    assert status == 503 and expected in reason, reason
    # Not ready either: a stuck pod must not count as available.
    assert get(port, "/readyz") == (503, reason)
    # The endpoint keeps serving while the agent is stuck, event loop or not.
    samples = metrics(port)
    assert value(samples, "streamkit_live") == 0
    labels = {"agent": "forward", "topic": env["TEST_IN"]}
    assert value(samples, "streamkit_records_in_flight", **labels) >= 1
