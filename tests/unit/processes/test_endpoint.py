"""The supervisor's endpoint gathers its children's: two fake children behind real servers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from streamkit.observability.health import Verdict
from streamkit.observability.server import ObservabilityServer
from streamkit.processes.children import Child
from streamkit.processes.endpoint import ChildrenCollector, ChildrenHealth, ChildrenView
from tests.unit.observability.test_server import get


class FakeHealth:
    def __init__(self) -> None:
        self.live_verdict = Verdict(True, "live")
        self.ready_verdict = Verdict(False, "not in the group yet")

    def live(self) -> Verdict:
        return self.live_verdict

    def ready(self) -> Verdict:
        return self.ready_verdict


class FakeChild:
    """A child's endpoint: its health and one counter of its own."""

    def __init__(self, records: int) -> None:
        self.health = FakeHealth()
        registry = CollectorRegistry()
        counter = Counter("streamkit_records", "Records.", ["agent"], registry=registry)
        counter.labels("double").inc(records)
        self.server = ObservabilityServer(self.health, registry, "127.0.0.1", 0)
        self.server.start()


def _running() -> Any:
    return cast(Any, SimpleNamespace(returncode=None, pid=1))


@pytest.fixture
def family() -> Iterator[tuple[list[FakeChild], list[Child], int]]:
    fakes = [FakeChild(3), FakeChild(5)]
    children = [Child(i, http_port=f.server.port, process=_running()) for i, f in enumerate(fakes)]
    view = ChildrenView(children, time.monotonic)
    registry = CollectorRegistry()
    registry.register(ChildrenCollector(view))
    server = ObservabilityServer(ChildrenHealth(view), registry, "127.0.0.1", 0)
    server.start()
    yield fakes, children, server.port
    server.close()
    for fake in fakes:
        fake.server.close()


def test_metrics_carry_every_childs_samples_labelled_with_its_index(
    family: tuple[list[FakeChild], list[Child], int],
) -> None:
    _, children, port = family
    children[1].restarts = 2
    status, _, body = get(port, "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body)}
    records = {
        s.labels["process"]: s.value
        for s in families["streamkit_records"].samples
        if s.name == "streamkit_records_total"
    }
    assert records == {"0": 3.0, "1": 5.0}
    restarts = {
        s.labels["process"]: s.value
        for s in families["streamkit_process_restarts"].samples
        if s.name == "streamkit_process_restarts_total"
    }
    assert restarts == {"0": 0.0, "1": 2.0}
    openmetrics = get(port, "/metrics", accept="application/openmetrics-text; version=1.0.0")
    assert openmetrics[0] == 200
    assert 'streamkit_records_total{agent="double",process="1"} 5.0' in openmetrics[2]


def test_ready_only_when_every_child_is_and_says_which_is_not(
    family: tuple[list[FakeChild], list[Child], int],
) -> None:
    fakes, _, port = family
    assert get(port, "/readyz")[::2] == (
        503,
        "process 0: not in the group yet; process 1: not in the group yet\n",
    )
    fakes[0].health.ready_verdict = Verdict(True, "ready")
    assert get(port, "/readyz")[::2] == (503, "process 1: not in the group yet\n")
    fakes[1].health.ready_verdict = Verdict(True, "ready")
    assert get(port, "/readyz")[::2] == (200, "ready: all 2 processes\n")


def test_a_restarting_child_is_not_ready_but_still_live(
    family: tuple[list[FakeChild], list[Child], int],
) -> None:
    fakes, children, port = family
    for fake in fakes:
        fake.health.ready_verdict = Verdict(True, "ready")
    children[0].process = cast(Any, SimpleNamespace(returncode=-9, pid=1))
    children[0].restart_at = time.monotonic() + 30
    assert get(port, "/readyz")[::2] == (503, "process 0: restarting\n")
    assert get(port, "/livez")[0] == 200


def test_a_stuck_child_fails_liveness_with_its_reason(
    family: tuple[list[FakeChild], list[Child], int],
) -> None:
    fakes, _, port = family
    fakes[1].health.live_verdict = Verdict(False, "no progress for 61s")
    assert get(port, "/livez")[::2] == (503, "process 1: no progress for 61s\n")
