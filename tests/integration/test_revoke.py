"""One slow partition must not stall the group, and stops must not outlive their records.

A revoke waits at most ``revoke_timeout`` for the records in flight of the
partitions that leave; the whole group's rebalance waits for it, so a slow
dependency on one partition otherwise holds every joining member idle. On
SIGTERM a partition stops starting buffered records, so a drain lasts as
long as the records already started, not as long as the buffer.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

import pytest

from tests.integration.helpers import (
    APP,
    WorkerProcess,
    assigned_count,
    committed,
    keyed_records,
    produce,
    read_topic,
    topic_size,
    wait_until,
    wait_until_committed,
)

SLOW_S = 15
REVOKE_S = 3


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_a_member_joining_while_one_partition_is_slow_gets_partitions_within_the_revoke_budget(
    kafka_bootstrap: str,
    pipeline_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
    protocol: str,
) -> None:
    env = pipeline_env(
        partitions=6,
        STREAMKIT_GROUP_PROTOCOL=protocol,
        TEST_CONCURRENCY="4",
        TEST_SLOW_PARTITION="0",
        TEST_SLOW_S=str(SLOW_S),
        STREAMKIT_REVOKE_TIMEOUT=str(REVOKE_S),
        STREAMKIT_SHUTDOWN_TIMEOUT="20",
    )
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(3_000))
    first = start_worker(APP, **env)
    wait_until(lambda: assigned_count(first) == 6, 60, "the first member owning all")
    wait_until(lambda: topic_size(kafka_bootstrap, env["TEST_OUT"]) >= 500, 60, "progress")
    joined = time.monotonic()
    joiners = [start_worker(APP, **env) for _ in range(2)]
    wait_until(lambda: all(assigned_count(w) > 0 for w in joiners), 60, "the joiners assigned")
    took = time.monotonic() - joined
    print(f"[{protocol}] joiners got partitions {took:.1f} s after starting (revoke {REVOKE_S} s)")
    # Process start (~2 s here) plus the revoke budget plus two rebalance
    # rounds; before the revoke budget this was 30 s (the shutdown timeout).
    assert took < REVOKE_S + 12, f"joining took {took:.1f} s"
    abandoned = [line for line in first.output().splitlines() if "revoke budget passed" in line]
    print(f"[{protocol}] revokes past the budget: {abandoned or 'none'}")
    for worker in (first, *joiners):
        worker.signal(signal.SIGTERM)
    for worker in (first, *joiners):
        assert worker.wait(60) == 0, worker.output()[-3000:]


def test_sigterm_with_slow_records_in_flight_exits_once_they_finish_and_redelivers_the_rest(
    kafka_bootstrap: str,
    pipeline_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    delay = 3.0
    env = pipeline_env(
        partitions=1,
        TEST_CONCURRENCY="4",
        TEST_DELAY_S=str(delay),
        STREAMKIT_COMMIT_EVERY="1",
    )
    n = 1_004
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(n))
    worker = start_worker(APP, **env)
    wait_until(lambda: assigned_count(worker) == 1, 60, "assignment")
    # Four records start within milliseconds of the assignment: the signal
    # lands a third of the way into them (a chosen moment, not a sync).
    time.sleep(delay / 3)
    began = time.monotonic()
    worker.signal(signal.SIGTERM)
    code = worker.wait(60)
    took = time.monotonic() - began
    print(f"SIGTERM with 4 records in flight and ~1,000 buffered: exit {code} after {took:.1f} s")
    assert code == 0, worker.output()[-3000:]
    assert took < delay + 1 + 2, f"the drain took {took:.1f} s, past its records"
    position = committed(kafka_bootstrap, env["STREAMKIT_GROUP_ID"], env["TEST_IN"], 1)[0]
    assert 0 < position < 20, f"committed {position}: buffered records were started"
    finisher = start_worker(APP, **{**env, "TEST_DELAY_S": "0"})
    wait_until_committed(kafka_bootstrap, env["STREAMKIT_GROUP_ID"], env["TEST_IN"], finisher)
    ids = {
        json.loads(r.value or b"")["id"] for r in read_topic(kafka_bootstrap, env["TEST_OUT"], n)
    }
    assert ids == set(range(n)), "buffered records redelivered, none lost"
    finisher.signal(signal.SIGTERM)
    assert finisher.wait(30) == 0
