"""Timers in a group of three workers: one tick per second in total, and the
ticks go on on another worker when the one running them is killed."""

from __future__ import annotations

import itertools
import json
import signal
from collections import Counter
from collections.abc import Callable

from tests.integration.helpers import (
    FAST_FAILOVER,
    WorkerProcess,
    read_topic,
    topic_size,
    wait_until,
)

APP = "tests.integration.apps.ticking:app"


def ticks(bootstrap: str, topic: str) -> list[dict[str, float]]:
    return [json.loads(r.value or b"") for r in read_topic(bootstrap, topic, 1, idle=0.3)]


def test_one_tick_per_second_across_workers_and_failover(
    kafka_bootstrap: str,
    app_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    env = app_env("ticks", partitions=1, topics=("TEST_OUT",), **FAST_FAILOVER)
    workers = [start_worker(APP, **env) for _ in range(3)]
    wait_until(lambda: topic_size(kafka_bootstrap, env["TEST_OUT"]) >= 6, 60, "six ticks")
    before = ticks(kafka_bootstrap, env["TEST_OUT"])
    per_second = Counter(t["fired_at"] for t in before)
    assert max(per_second.values()) == 1, f"a tick ran twice: {per_second.most_common(3)}"
    owners = {t["pid"] for t in before}
    assert len(owners) == 1, "ticks came from several workers at once"
    [owner_pid] = owners
    owner = next(w for w in workers if w.proc.pid == owner_pid)
    owner.signal(signal.SIGKILL)
    owner.wait(30)
    killed_at = max(t["fired_at"] for t in before)

    wait_until(
        lambda: any(t["pid"] != owner_pid for t in ticks(kafka_bootstrap, env["TEST_OUT"])),
        60,
        "ticks on another worker",
    )
    wait_until(
        lambda: topic_size(kafka_bootstrap, env["TEST_OUT"]) >= len(before) + 4, 30, "more ticks"
    )
    after = ticks(kafka_bootstrap, env["TEST_OUT"])
    per_second = Counter(t["fired_at"] for t in after)
    assert max(per_second.values()) == 1, f"a tick ran twice: {per_second.most_common(3)}"
    new_owners = {t["pid"] for t in after if t["fired_at"] > killed_at}
    assert owner_pid not in new_owners and len(new_owners) == 1
    stamps = sorted(per_second)
    resumed = [t for t in stamps if t > killed_at]
    gap = resumed[0] - killed_at
    steady = [b - a for a, b in itertools.pairwise(resumed)]
    print(f"{len(after)} ticks; failover gap {gap:.0f}s (session 6 s), then every {set(steady)} s")
    assert set(steady) == {1.0}
    for worker in workers:
        if worker is not owner:
            worker.signal(signal.SIGTERM)
            assert worker.wait(30) == 0
