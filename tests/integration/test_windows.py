"""Windows on a real broker: no double counting across SIGKILLs, and idle partitions close.

The pipeline (:mod:`tests.integration.apps.windowing`) counts records per key
in tumbling windows of event time. Exactly once, every closed window's
count, read ``read_committed``, is emitted once and equals the number of
inputs of that key in that window, however often the worker was killed
while windows were open.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from collections.abc import Callable

import pytest

from tests.integration.helpers import (
    WorkerProcess,
    end_offsets,
    produce,
    read_topic,
    wait_until,
    wait_until_committed,
)
from tests.integration.test_tables import read_all

APP = "tests.integration.apps.windowing:app"
KEYS = 40
WINDOW_MS = 10_000
STEP_MS = 10  # event time per input: 1,000 inputs per window


@pytest.fixture
def windowing_env(stateful_env: Callable[..., dict[str, str]]) -> Callable[..., dict[str, str]]:
    def make(partitions: int = 4, **env: str) -> dict[str, str]:
        made = stateful_env("windows", partitions, **env)
        app = made["TEST_APP"]
        return {
            "CHANGELOG": f"{app}.per_window-windows.changelog",
            "LATE": f"{app}.per_window.late",
            **made,
        }

    return make


@pytest.mark.parametrize(
    ("guarantee", "stop"),
    [("exactly_once", signal.SIGKILL), ("at_least_once", signal.SIGTERM)],
    ids=["exactly_once-sigkill", "at_least_once-sigterm"],
)
def test_windows_count_each_input_once_across_restarts_mid_window(
    guarantee: str,
    stop: signal.Signals,
    kafka_bootstrap: str,
    windowing_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
    topics_to_delete: list[str],
) -> None:
    """12,000 inputs over 40 keys in 12 windows; stopped three times mid-window, same state dir.

    Exactly once through SIGKILLs; at least once through SIGTERMs, whose
    drain commits everything processed, so nothing may be counted twice
    either.
    """
    n = 12_000
    env = windowing_env(
        STREAMKIT_PROCESSING_GUARANTEE=guarantee,
        STREAMKIT_GROUP_INSTANCE_ID="pod-0",
        TEST_EVENT_TIME="1",
        TEST_DELAY_S="0.0003",
    )
    topics_to_delete += [env["CHANGELOG"], env["LATE"]]
    records = [
        (f"k{i % KEYS}".encode(), json.dumps({"id": i, "ts": i * STEP_MS}).encode())
        for i in range(n)
    ]
    # One record per key far ahead closes every window of its partition.
    records += [
        (f"k{k}".encode(), json.dumps({"id": n + k, "ts": 100 * n * STEP_MS}).encode())
        for k in range(KEYS)
    ]
    produce(kafka_bootstrap, env["TEST_IN"], records)
    rng = random.Random(7)
    for _ in range(3):
        worker = start_worker(APP, **env)
        worker.wait_for_log('"partitions assigned"', timeout=60)
        before = sum(end_offsets(kafka_bootstrap, env["CHANGELOG"]).values())

        def moved_on(before: int = before) -> bool:
            return sum(end_offsets(kafka_bootstrap, env["CHANGELOG"]).values()) > before + 20

        wait_until(moved_on, 60, "window updates after the restart")
        time.sleep(rng.uniform(0.1, 0.5))  # the kill lands at a random moment, on purpose
        worker.signal(stop)
        code = worker.wait(30)
        assert stop == signal.SIGKILL or code == 0, worker.output()[-3000:]
    last = start_worker(APP, **env)
    wait_until_committed(kafka_bootstrap, env["STREAMKIT_GROUP_ID"], env["TEST_IN"], last, 120)
    last.signal(signal.SIGTERM)
    assert last.wait(60) == 0, last.output()[-3000:]

    want = Counter((f"k{i % KEYS}", i * STEP_MS // WINDOW_MS * WINDOW_MS) for i in range(n))
    results = read_all(kafka_bootstrap, env["TEST_OUT"], read_committed=True)
    emitted = Counter((key.decode(), value["start"]) for key, value in results)
    assert [w for w, c in emitted.items() if c > 1] == [], "windows emitted twice"
    got = {(key.decode(), value["start"]): value["value"] for key, value in results}
    assert got == dict(want), {w: (got.get(w), c) for w, c in want.items() if got.get(w) != c}
    assert sum(end_offsets(kafka_bootstrap, env["LATE"]).values()) == 0


def test_an_idle_partition_closes_its_last_window_after_the_idle_timeout(
    kafka_bootstrap: str,
    windowing_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
    topics_to_delete: list[str],
) -> None:
    """No later record ever comes: idle advance closes the window on the wall clock."""
    env = windowing_env(partitions=1, TEST_WINDOW_S="2", TEST_IDLE_S="1")
    topics_to_delete += [env["CHANGELOG"], env["LATE"]]
    worker = start_worker(APP, **env)
    worker.wait_for_log('"partitions assigned"', timeout=60)
    produce(kafka_bootstrap, env["TEST_IN"], [(b"a", b"{}")] * 3)  # timestamped now
    sent = time.time()
    (result,) = read_topic(kafka_bootstrap, env["TEST_OUT"], expected=1, timeout=30)
    assert result.value is not None
    value = json.loads(result.value)
    assert value["value"] == 3
    # It closed once the wall clock passed the window's end, not before, and
    # within the idle timeout plus a poll after it.
    assert value["end"] / 1000 <= time.time()
    assert time.time() - sent < 2 + 1 + 5
