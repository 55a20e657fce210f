"""Tables in the test harness: contents, restarts from the in-memory changelog, retries."""

from __future__ import annotations

from typing import Any

import pytest

from streamkit import App, Context, RetryPolicy, StateError
from streamkit.testing import TestApp


def counting(guarantee: str, concurrency: int = 1, flaky: bool = False) -> App:
    app = App("count", processing_guarantee=guarantee)
    source = app.topic("count.in", partitions=3)
    out = app.topic("count.out", partitions=3)
    counts = app.table("counts", default=0)
    attempts: dict[int, int] = {}

    if concurrency == 1:

        @app.agent(
            source,
            emits=[out],
            tables=[counts],
            retry=RetryPolicy(attempts=3, backoff=0.01),
        )
        def count(value: dict[str, Any], ctx: Context) -> dict[str, Any]:
            counts[ctx.key] = counts[ctx.key] + 1
            if flaky and value["i"] % 7 == 0 and attempts.setdefault(value["i"], 0) < 1:
                attempts[value["i"]] += 1
                raise ValueError("fails its first try, after writing")
            return {"key": ctx.key, "n": counts[ctx.key]}

    else:

        @app.agent(source, emits=[out], tables=[counts], concurrency=concurrency)
        async def count_async(value: dict[str, Any], ctx: Context) -> dict[str, Any]:
            counts[ctx.key] = counts[ctx.key] + 1
            return {"key": ctx.key, "n": counts[ctx.key]}

    return app


def send(t: TestApp, start: int, stop: int) -> None:
    for i in range(start, stop):
        t.send("count.in", {"i": i}, key=f"k{i % 10}")


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_counts_survive_a_crash_and_a_rebalance(guarantee: str) -> None:
    with TestApp(counting(guarantee), workers=2) as t:
        send(t, 0, 200)
        t.run_until_idle()
        assert t.table("counts") == {f"k{i}": 20 for i in range(10)}
        t.crash_and_restart(0)
        send(t, 200, 300)
        t.run_until_idle()
        assert t.table("counts") == {f"k{i}": 30 for i in range(10)}
        t.rebalance(workers=1)
        send(t, 300, 400)
        t.run_until_idle()
        assert t.table("counts") == {f"k{i}": 40 for i in range(10)}


def test_exactly_once_a_retried_records_writes_count_once() -> None:
    with TestApp(counting("exactly_once", flaky=True)) as t:
        send(t, 0, 70)
        t.run_until_idle()
        assert t.table("counts") == {f"k{i}": 7 for i in range(10)}
        assert sorted(v["n"] for v in t.output("count.out") if v["key"] == "k0") == list(
            range(1, 8)
        )


def test_a_concurrent_async_agent_keeps_each_keys_count() -> None:
    with TestApp(counting("exactly_once", concurrency=4)) as t:
        send(t, 0, 120)
        t.run_until_idle()
        assert t.table("counts") == {f"k{i}": 12 for i in range(10)}


def test_a_key_of_another_partition_stops_the_worker_with_the_reason() -> None:
    app = App("wrong")
    source = app.topic("wrong.in", partitions=4)
    seen = app.table("seen")

    @app.agent(source, tables=[seen])
    def mark(value: dict[str, Any], ctx: Context) -> None:
        seen[value["other"]] = True

    with TestApp(app) as t:
        t.send("wrong.in", {"other": "b"}, key="a")
        with pytest.raises(StateError, match="lives in partition"):
            t.run_until_idle()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_writes_of_records_that_emit_nothing_reach_the_changelog(guarantee: str) -> None:
    # Exactly once, such a record's ticket was done at once (nothing held),
    # so anything advancing the offsets dropped it before the checkpoint
    # folded its writes: the offsets committed and the writes were lost.
    app = App("silent", processing_guarantee=guarantee)
    source = app.topic("silent.in", partitions=1)
    seen = app.table("seen", default=0)

    @app.agent(source, tables=[seen])
    def remember(value: dict[str, Any], ctx: Context) -> None:
        seen[ctx.key] = seen[ctx.key] + 1

    with TestApp(app) as t:
        for _ in range(3):
            t.send(source, {}, key="k")
        t.run_until_idle()
        t.crash_and_restart()
        assert t.table("seen") == {"k": 3}
        assert [r.value for r in t.records("silent.seen.changelog")][-1] == 3
