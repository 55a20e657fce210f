"""A group-wide rate limit on a real broker: three workers together keep 200 records/s.

The input holds a backlog produced up front, so the limit and not the input
sets the pace. Each worker takes the share of the budget its partitions are
of the topic's (2 of 6: 66.7/s). The rate is measured from the output
records' timestamps (stamped by the workers' producers as each record
starts), over 30 s that begin once the group has formed: the warm-up,
while one or two workers hold all the partitions and the shares move, is
left out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from tests.integration.helpers import (
    WorkerProcess,
    assigned_count,
    produce,
    read_topic,
    topic_size,
    wait_until,
)

APP = "tests.integration.apps.limited:app"
RATE = 200
WINDOW_S = 30.0
# Past the group's forming: the buckets' first tokens and the last share
# changes are behind.
SETTLE_S = 1.0
# Enough input for the whole run at the limit (about 45 s with the warm-up),
# with room to spare: a backlog that ran out would measure the input.
BACKLOG = 14_000
PARTITIONS = 6


def last_share(worker: WorkerProcess) -> float | None:
    """The share the worker last logged (``rate limit share``), if any."""
    found = None
    for line in worker.output().splitlines():
        if line.startswith("{") and '"rate limit share"' in line:
            found = float(json.loads(line)["share"])
    return found


def test_a_rate_limit_of_200_per_second_holds_across_three_workers(
    kafka_bootstrap: str,
    stateful_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    env = stateful_env("limited", partitions=PARTITIONS, TEST_RATE=f"{RATE}/s")
    produce(
        kafka_bootstrap,
        env["TEST_IN"],
        [(f"k{i}".encode(), json.dumps({"id": i}).encode()) for i in range(BACKLOG)],
    )
    workers = [start_worker(APP, **env) for _ in range(3)]
    wait_until(
        lambda: [assigned_count(w) for w in workers] == [2, 2, 2],
        60,
        "three workers owning two partitions each",
    )
    start = time.time() + SETTLE_S
    end = start + WINDOW_S
    # Each worker's share follows its partitions: a third each.
    wait_until(
        lambda: [last_share(w) for w in workers] == [0.3333] * 3, 10, "a third of the budget each"
    )
    while time.time() < end + 2.0:  # the window's last records acknowledged
        assert all(w.proc.poll() is None for w in workers), workers[0].output()[-3000:]
        time.sleep(0.2)
    for w in workers:
        w.stop()

    produced = topic_size(kafka_bootstrap, env["TEST_OUT"])
    assert produced < BACKLOG, "the backlog ran out: the input, not the limit, set the pace"
    records = read_topic(kafka_bootstrap, env["TEST_OUT"], produced, idle=0.5)
    stamps = [r.timestamp / 1000 for r in records]
    in_window = sum(1 for s in stamps if start <= s < end)
    rate = in_window / WINDOW_S
    print(f"measured {rate:.1f} records/s over {WINDOW_S:.0f} s ({in_window} records)")
    assert abs(rate - RATE) <= RATE * 0.10, f"{rate:.1f}/s over {WINDOW_S} s, limit {RATE}/s"
