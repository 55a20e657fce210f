"""``streamkit run --processes 2`` on a real broker: one supervisor, two group members.

The delivery invariant is the single worker's, since each child is one:
every input record is in the output; duplicates come only from the child
that was killed, only from the partitions it owned, and only at or past
the offsets committed for them when it died.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamkit.localkafka import free_ports
from tests.integration.helpers import (
    APP,
    WorkerProcess,
    committed,
    end_offsets,
    keyed_records,
    produce,
    read_topic,
    topic_size,
    wait_until,
)
from tests.integration.test_observability import get as http

PARTITIONS = 6


def events(supervisor: WorkerProcess) -> list[dict[str, Any]]:
    """The supervisor's and its children's JSON log lines (they share its output)."""
    return [json.loads(line) for line in supervisor.output().splitlines() if line.startswith("{")]


def owned(supervisor: WorkerProcess, process: int) -> set[int]:
    """Partitions child ``process`` owns now, replayed from its lifecycle log."""
    parts: set[int] = set()
    for event in events(supervisor):
        if event.get("process") != process or "partitions" not in event:
            continue
        these = {
            int(p.rsplit("[", 1)[1].rstrip("]"))
            for p in str(event["partitions"]).split(", ")
            if "[" in p
        }
        if event["event"] == "partitions assigned":
            parts |= these
        elif str(event["event"]).startswith(("partitions revoked", "partitions lost")):
            parts -= these
    return parts


def starts(supervisor: WorkerProcess, process: int) -> list[int]:
    """The pids child ``process`` was started with, in order."""
    return [
        e["pid"]
        for e in events(supervisor)
        if e["event"] == "process started" and e.get("process") == process
    ]


@pytest.fixture
def two_processes(pipeline_env: Callable[..., dict[str, str]]) -> Callable[..., dict[str, str]]:
    """Factory: the configurable pipeline as two processes, committing often, with an endpoint."""

    def make(**env: str) -> dict[str, str]:
        return pipeline_env(
            PARTITIONS,
            STREAMKIT_PROCESSES="2",
            STREAMKIT_COMMIT_EVERY="200",
            STREAMKIT_COMMIT_INTERVAL="0.2",
            STREAMKIT_HTTP_PORT=str(free_ports(1)[0]),
            **env,
        )

    return make


def started_and_busy(
    bootstrap: str, env: dict[str, str], n: int, outputs: int, start: Callable[..., WorkerProcess]
) -> WorkerProcess:
    """``n`` records in, a supervisor started, both children in the group and ``outputs`` out."""
    produce(bootstrap, env["TEST_IN"], keyed_records(n))
    supervisor = start(APP, **env)
    wait_until(
        lambda: bool(owned(supervisor, 0)) and bool(owned(supervisor, 1)),
        90,
        "both children in the group",
    )
    wait_until(
        lambda: topic_size(bootstrap, env["TEST_OUT"]) >= outputs, 90, f"{outputs:,} outputs"
    )
    return supervisor


def test_a_killed_child_is_restarted_the_group_rebalances_and_nothing_is_lost(
    kafka_bootstrap: str,
    two_processes: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    n = 40_000
    env = two_processes(TEST_DELAY_S="0.0003")
    port = int(env["STREAMKIT_HTTP_PORT"])
    supervisor = started_and_busy(kafka_bootstrap, env, n, 4_000, start_worker)
    assert owned(supervisor, 0) | owned(supervisor, 1) == set(range(PARTITIONS))

    killed_owned = owned(supervisor, 1)
    [first_pid] = starts(supervisor, 1)
    os.kill(first_pid, signal.SIGKILL)
    window_from = committed(kafka_bootstrap, env["STREAMKIT_GROUP_ID"], env["TEST_IN"], PARTITIONS)
    assert topic_size(kafka_bootstrap, env["TEST_OUT"]) < n, "drained before the kill"

    wait_until(lambda: len(starts(supervisor, 1)) == 2, 30, "child 1 restarted")
    wait_until(lambda: bool(owned(supervisor, 1)), 90, "the restarted child back in the group")
    values = [
        json.loads(r.value or b"")
        for r in read_topic(kafka_bootstrap, env["TEST_OUT"], n, timeout=180)
    ]
    ids = Counter(v["id"] for v in values)
    assert not set(range(n)) - set(ids), f"{len(set(range(n)) - set(ids))} records lost"
    duplicated = [v for v in values if ids[v["id"]] > 1]
    assert {v["from"][0] for v in duplicated} <= killed_owned
    outside = [v for v in duplicated if v["from"][1] < window_from[v["from"][0]]]
    assert not outside, f"{len(outside)} duplicates below the kill's window, e.g. {outside[:3]}"

    wait_until(lambda: http(port, "/readyz")[0] == 200, 60, "the supervisor ready again")
    status, metrics = http(port, "/metrics")
    assert status == 200
    assert 'streamkit_process_restarts_total{process="1"} 1.0' in metrics
    assert 'streamkit_process_restarts_total{process="0"} 0.0' in metrics
    assert 'process="0"' in metrics.split("streamkit_records_", 1)[1]  # children's own

    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(60) == 0, supervisor.output()[-3000:]
    ends = end_offsets(kafka_bootstrap, env["TEST_IN"])
    assert committed(kafka_bootstrap, env["STREAMKIT_GROUP_ID"], env["TEST_IN"], PARTITIONS) == ends


def test_sigterm_drains_both_children_and_commits_only_what_they_finished(
    kafka_bootstrap: str,
    two_processes: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    n = 30_000
    env = two_processes(TEST_DELAY_S="0.0005")
    supervisor = started_and_busy(kafka_bootstrap, env, n, 2_000, start_worker)

    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(60) == 0, supervisor.output()[-3000:]
    stopped = [e for e in events(supervisor) if e["event"] == "stopped"]
    assert sorted(e["process"] for e in stopped) == [0, 1]
    assert any(e["event"] == "all processes stopped cleanly" for e in events(supervisor))

    done = committed(kafka_bootstrap, env["STREAMKIT_GROUP_ID"], env["TEST_IN"], PARTITIONS)
    outputs = {
        tuple(json.loads(r.value or b"")["from"])
        for r in read_topic(kafka_bootstrap, env["TEST_OUT"], 1, idle=2.0)
    }
    assert sum(done.values()) < n, "drained before the stop; the test proves nothing"
    # A partition the rebalance moved just before the stop may have nothing
    # committed (-1001); what is committed must all be finished.
    assert sum(max(o, 0) for o in done.values()) > 0, "nothing committed at all"
    for partition, offset in done.items():
        missing = [o for o in range(offset) if (partition, o) not in outputs]
        assert not missing, f"partition {partition}: committed past unfinished {missing[:3]}"


def test_a_child_failing_at_import_is_one_clear_error_not_a_restart_storm(
    tmp_path: Path,
    two_processes: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Imports in the supervisor (which checks the app first) and in child 0,
    # fails in child 1: as a module reading a file or a variable only some
    # processes have would.
    (tmp_path / "half_broken.py").write_text(
        "import os\n"
        "if os.environ.get('STREAMKIT_PROCESS_INDEX') == '1':\n"
        "    raise RuntimeError('no config file for this process')\n"
        "from tests.integration.apps.configurable import app\n"
    )
    supervisor = start_worker("half_broken:app", **two_processes())

    assert supervisor.wait(60) == 2, supervisor.output()[-3000:]
    out = supervisor.output()
    assert len(starts(supervisor, 0)) == len(starts(supervisor, 1)) == 1
    assert out.count("importing half_broken failed: RuntimeError: no config file") == 1
    refusals = [e for e in events(supervisor) if e["event"].startswith("process failed on its")]
    assert [(e["process"], e["exit_code"]) for e in refusals] == [(1, 2)]
