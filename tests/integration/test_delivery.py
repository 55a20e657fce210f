"""At-least-once delivery on a real broker: restarts, crashes and failing records.

Each test runs ``tests.integration.apps.configurable`` as worker processes
with its own topics and group, and checks the delivery invariant on what
lands in the output topic: every input record is there, and duplicates only
come from the window a crash left uncommitted.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.helpers import (
    APP,
    KEYS,
    WorkerProcess,
    committed,
    keyed_records,
    produce,
    read_topic,
    topic_size,
    wait_until,
)

N = 20_000


@pytest.fixture
def pipeline(pipeline_env: Callable[..., dict[str, str]]) -> dict[str, str]:
    """One configurable pipeline with fresh 4-partition topics and group."""
    return pipeline_env()


def outputs(bootstrap: str, topic: str, expected: int) -> list[dict[str, Any]]:
    return [json.loads(r.value or b"") for r in read_topic(bootstrap, topic, expected)]


def assert_complete(values: list[dict[str, Any]], n: int) -> Counter[int]:
    ids = Counter(v["id"] for v in values)
    missing = set(range(n)) - set(ids)
    assert not missing, f"{len(missing)} records lost, e.g. {sorted(missing)[:5]}"
    return ids


def test_graceful_restart_loses_nothing_and_duplicates_nothing(
    kafka_bootstrap: str, pipeline: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    produce(kafka_bootstrap, pipeline["TEST_IN"], keyed_records(N))
    slow = {**pipeline, "TEST_DELAY_S": "0.0002"}
    first = start_worker(APP, **slow)
    wait_until(lambda: topic_size(kafka_bootstrap, pipeline["TEST_OUT"]) >= 3_000, 60, "progress")
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0, first.output()[-2000:]
    stopped_at = topic_size(kafka_bootstrap, pipeline["TEST_OUT"])
    assert stopped_at < N, "the worker drained everything before SIGTERM; the test proves nothing"

    second = start_worker(APP, **pipeline)
    values = outputs(kafka_bootstrap, pipeline["TEST_OUT"], N)
    ids = assert_complete(values, N)
    duplicates = sum(c - 1 for c in ids.values())
    print(f"graceful restart after {stopped_at} outputs: {duplicates} duplicates")
    assert duplicates == 0
    second.signal(signal.SIGTERM)
    assert second.wait(30) == 0


def test_crash_loses_nothing_and_duplicates_stay_in_uncommitted_window(
    kafka_bootstrap: str, pipeline: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    produce(kafka_bootstrap, pipeline["TEST_IN"], keyed_records(N))
    commit_often = {"STREAMKIT_COMMIT_EVERY": "200", "STREAMKIT_COMMIT_INTERVAL": "0.2"}
    first = start_worker(APP, **pipeline, **commit_often, TEST_DELAY_S="0.0002")
    wait_until(lambda: topic_size(kafka_bootstrap, pipeline["TEST_OUT"]) >= 3_000, 60, "progress")
    first.signal(signal.SIGKILL)
    assert first.wait(30) == -signal.SIGKILL
    killed_at = topic_size(kafka_bootstrap, pipeline["TEST_OUT"])
    assert killed_at < N
    # Every output comes from one input, so the outputs beyond the committed
    # offsets are exactly the uncommitted window the restart will redo.
    offsets = committed(kafka_bootstrap, pipeline["STREAMKIT_GROUP_ID"], pipeline["TEST_IN"], 4)
    window = killed_at - sum(max(o, 0) for o in offsets.values())

    start_worker(APP, **pipeline, **commit_often)
    values = outputs(kafka_bootstrap, pipeline["TEST_OUT"], N)
    ids = assert_complete(values, N)
    duplicates = sum(c - 1 for c in ids.values())
    print(f"crash after {killed_at} outputs: {duplicates} duplicates, uncommitted window {window}")
    assert duplicates <= window
    # Commits kept up while the worker ran: the window is a few chunks of
    # 256 records, not the whole run.
    assert window <= 5_000


def test_output_keeps_keys_and_per_key_order(
    kafka_bootstrap: str, pipeline: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    n = 5_000
    produce(kafka_bootstrap, pipeline["TEST_IN"], keyed_records(n))
    worker = start_worker(APP, **pipeline, TEST_ASYNC="1")
    out = read_topic(kafka_bootstrap, pipeline["TEST_OUT"], n)
    assert len(out) == n
    last: dict[bytes, int] = {}
    for record in sorted(out, key=lambda r: (r.partition, r.offset)):
        value = json.loads(record.value or b"")
        assert record.key == f"k{value['id'] % KEYS}".encode()
        assert value["n"] == 2 * (value["id"] // KEYS)
        key = record.key or b""
        assert value["n"] > last.get(key, -1), f"order broken for key {key!r}"
        last[key] = value["n"]
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def _locate(bootstrap: str, topic: str, wanted_id: int) -> tuple[int, int]:
    for record in read_topic(bootstrap, topic, 1, idle=0.5):
        if json.loads(record.value or b"{}").get("id") == wanted_id:
            return record.partition, record.offset
    raise AssertionError(f"record {wanted_id} not in {topic}")


@pytest.mark.parametrize("failure", ["agent raises", "malformed json"])
def test_failing_record_stops_worker_and_stays_uncommitted(
    kafka_bootstrap: str,
    pipeline: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    failure: str,
) -> None:
    data = keyed_records(2_000)
    bad_id = 1_234
    env = {**pipeline, "TEST_DLQ": "0"}  # the foundation's stop-on-failure mode
    if failure == "agent raises":
        env["TEST_FAIL_ID"] = str(bad_id)
        produce(kafka_bootstrap, pipeline["TEST_IN"], data)
        partition, offset = _locate(kafka_bootstrap, pipeline["TEST_IN"], bad_id)
    else:
        key = data[bad_id][0]
        data[bad_id] = (key, b'{"id": 1234, "n": ')  # truncated JSON
        produce(kafka_bootstrap, pipeline["TEST_IN"], data)
        found = [
            (r.partition, r.offset)
            for r in read_topic(kafka_bootstrap, pipeline["TEST_IN"], len(data), idle=0.5)
            if r.value == data[bad_id][1]
        ]
        assert len(found) == 1
        partition, offset = found[0]

    worker = start_worker(APP, **env)
    assert worker.wait(60) == 1
    log = worker.output()
    assert f"partition={partition} offset={offset}" in log, log[-2000:]
    assert pipeline["TEST_IN"] in log
    expected = "cannot decode value" if failure == "malformed json" else "cannot handle record"
    assert expected in log
    assert (
        committed(kafka_bootstrap, pipeline["STREAMKIT_GROUP_ID"], pipeline["TEST_IN"], 4)[
            partition
        ]
        == offset
    ), "the failed record's offset must stay uncommitted, with everything before it"
