"""Per-record time limits: async calls cancelled past ``time_limit``, stage ``timeout``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from streamkit import App, DeclarationError, RetryPolicy
from streamkit.testing import TestApp

# Real seconds (a time limit guards against hangs, on the loop's clock): short.
LIMIT_S = 0.05
NO_RETRY = RetryPolicy(attempts=1)


def app_with(fn: Any, **kw: Any) -> App:
    app = App("timed")
    source = app.topic("in")
    out = app.topic("out")
    app.agent(source, emits=[out], name="work", **kw)(fn)
    return app


def test_a_sync_agent_is_refused_a_time_limit() -> None:
    def work(value: Any) -> Any:
        return value

    with pytest.raises(DeclarationError, match="time_limit needs an async def agent"):
        app_with(work, time_limit=5)


def test_a_sync_generator_is_refused_a_time_limit_too() -> None:
    def work(value: Any) -> Any:
        yield value

    with pytest.raises(DeclarationError, match="time_limit"):
        app_with(work, time_limit=5)


@pytest.mark.parametrize("bad", [0, -1, "5", True, float("nan"), float("inf")])
def test_a_time_limit_is_a_positive_number_of_seconds(bad: Any) -> None:
    async def work(value: Any) -> Any:
        return value

    with pytest.raises(DeclarationError, match="time_limit"):
        app_with(work, time_limit=bad)


def test_a_record_that_runs_over_is_cancelled_and_dead_lettered_with_stage_timeout() -> None:
    cancelled: list[int] = []

    async def work(value: int) -> int:
        if value == 2:
            try:
                await asyncio.Event().wait()  # a call that never answers
            except asyncio.CancelledError:
                cancelled.append(value)
                raise
        return value

    with TestApp(app_with(work, time_limit=LIMIT_S, retry=NO_RETRY)) as t:
        for i in range(4):
            t.send("in", i)
        t.run_until_idle()
        assert t.output("out") == [0, 1, 3]
        [dead] = t.dead_letters("work")
    assert cancelled == [2]
    assert (dead.stage, dead.exception, dead.attempts) == ("timeout", "builtins.TimeoutError", 1)
    assert "time_limit of 0.05 s" in dead.message
    assert dead.value == b"2"


def test_a_timeout_follows_the_retry_policy() -> None:
    calls: list[int] = []

    async def work(value: int) -> int:
        calls.append(value)
        if len(calls) == 1:
            await asyncio.sleep(10)  # only the first attempt is slow
        return value

    retry = RetryPolicy(attempts=3, backoff=0.0, jitter=0.0)
    with TestApp(app_with(work, time_limit=LIMIT_S, retry=retry)) as t:
        t.send("in", 7)
        t.run_until_idle()
        assert t.output("out") == [7]
        assert t.dead_letters("work") == []
    assert calls == [7, 7]


def test_every_attempt_over_the_limit_ends_in_one_timeout_dead_letter() -> None:
    async def work(value: int) -> int:
        await asyncio.sleep(10)
        return value

    retry = RetryPolicy(attempts=2, backoff=0.0, jitter=0.0)
    with TestApp(app_with(work, time_limit=LIMIT_S, retry=retry)) as t:
        t.send("in", 1)
        t.run_until_idle()
        [dead] = t.dead_letters("work")
    assert (dead.stage, dead.attempts) == ("timeout", 2)


def test_retry_on_decides_whether_a_timeout_is_retried() -> None:
    calls = 0

    async def work(value: int) -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(10)
        return value

    retry = RetryPolicy(attempts=3, backoff=0.0, retry_on=(ValueError,))
    with TestApp(app_with(work, time_limit=LIMIT_S, retry=retry)) as t:
        t.send("in", 1)
        t.run_until_idle()
        [dead] = t.dead_letters("work")
    assert (calls, dead.stage, dead.attempts) == (1, "timeout", 1)


def test_the_agents_own_timeout_error_is_a_process_failure() -> None:
    async def work(value: int, ctx: Any) -> int:
        raise TimeoutError("the agent's own deadline")

    with TestApp(app_with(work, time_limit=5, retry=NO_RETRY)) as t:
        t.send("in", 1)
        t.run_until_idle()
        [dead] = t.dead_letters("work")
    assert dead.stage == "process"


def test_an_async_generator_is_timed_over_its_whole_run() -> None:
    async def work(value: int) -> AsyncIterator[int]:
        yield value
        await asyncio.sleep(10)
        yield value + 1

    with TestApp(app_with(work, time_limit=LIMIT_S, retry=NO_RETRY)) as t:
        t.send("in", 1)
        t.run_until_idle()
        [dead] = t.dead_letters("work")
        # What it emitted before the limit was sent, as with any failure after an emit.
        assert t.output("out") == [1]
    assert dead.stage == "timeout"


def test_records_within_the_limit_are_untouched() -> None:
    async def work(value: int, ctx: Any) -> int:
        await asyncio.sleep(0)
        return value * 2

    with TestApp(app_with(work, time_limit=5, concurrency=4)) as t:
        for i in range(20):
            t.send("in", i, key=f"k{i}")
        t.run_until_idle()
        assert sorted(t.output("out")) == [i * 2 for i in range(20)]
        assert t.dead_letters("work") == []
