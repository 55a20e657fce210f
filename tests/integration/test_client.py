"""The client on a real broker: send, ask from many callers, remote errors, tasks through a SIGKILL.

The worker runs :mod:`tests.integration.apps.serving` (``work`` doubles ``n``,
reports progress, fails on ``fail``); the client runs in this process, as a
web service would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from streamkit import App, RemoteError, RequestTimeout
from tests.integration.helpers import FAST_FAILOVER, WorkerProcess, read_topic

APP = "tests.integration.apps.serving:app"


EXACTLY_ONCE = {"STREAMKIT_PROCESSING_GUARANTEE": "exactly_once"}


@pytest.fixture
def serving(
    app_env: Callable[..., dict[str, str]],
    fresh_import: Callable[..., ModuleType],
    topics_to_delete: list[str],
) -> tuple[App, dict[str, str]]:
    """The serving app, imported here with fresh names, and the env for its worker."""
    env = app_env("serving", topics=("TEST_IN",), TEST_DELAYS="1", **FAST_FAILOVER)
    name = env["TEST_APP"]
    module = fresh_import(env, "tests.integration.apps.serving")
    topics_to_delete += [f"{name}.replies", f"{name}.tasks", f"{name}.work.dlq"]
    topics_to_delete += [f"{name}.work.delay.1s", f"{name}.work.delay.4s"]
    return module.app, env


def test_send_returns_where_the_broker_put_the_record(
    serving: tuple[App, dict[str, str]], kafka_bootstrap: str
) -> None:
    app, env = serving

    async def main() -> list[Any]:
        async with app.client() as c:
            return [await c.send("work", {"n": i}, key=f"k{i}") for i in range(20)]

    sent = asyncio.run(main())
    assert all(s.topic == env["TEST_IN"] for s in sent)
    records = read_topic(kafka_bootstrap, env["TEST_IN"], 20)
    where = {(r.partition, r.offset): json.loads(r.value or b"")["n"] for r in records}
    assert {(s.partition, s.offset) for s in sent} == set(where)
    assert sorted(where.values()) == list(range(20))


def test_a_thousand_asks_from_fifty_callers_are_each_answered_once_with_their_value(
    serving: tuple[App, dict[str, str]], start_member: Callable[..., WorkerProcess]
) -> None:
    app, env = serving
    start_member(APP, **env)

    async def main() -> tuple[list[tuple[int, Any]], int, int]:
        answers: list[tuple[int, Any]] = []
        async with app.client() as c:

            async def caller(first: int) -> None:
                for n in range(first, 1000, 50):
                    answers.append((n, await c.ask("work", {"n": n}, key=f"k{n}", timeout=60)))

            await asyncio.gather(*(caller(i) for i in range(50)))
            replies = c._replies
            assert replies is not None
            return answers, replies.in_flight, replies.dropped

    answers, in_flight, dropped = asyncio.run(main())
    assert sorted(n for n, _ in answers) == list(range(1000))
    assert all(a == {"n": n, "double": 2 * n} for n, a in answers)
    assert in_flight == 0 and dropped == 0


def test_a_failing_agent_raises_a_remote_error_and_a_gone_caller_is_harmless(
    serving: tuple[App, dict[str, str]], start_member: Callable[..., WorkerProcess]
) -> None:
    app, env = serving

    async def main() -> tuple[RemoteError, Any, int, int]:
        async with app.client() as c:
            # Asked before any worker runs: the answer comes after the timeout.
            with pytest.raises(RequestTimeout):
                await c.ask("work", {"n": 1, "step_s": 0}, timeout=0.5)
            start_member(APP, **env)
            with pytest.raises(RemoteError) as failed:
                await c.ask("work", {"n": 7, "fail": True}, timeout=60)
            after = await c.ask("work", {"n": 8}, timeout=60)
            replies = c._replies
            assert replies is not None
            return failed.value, after, replies.in_flight, replies.dropped

    error, after, in_flight, dropped = asyncio.run(main())
    assert error.type_name == "builtins.ValueError" and error.message == "cannot do 7"
    assert error.attempts == 2 and error.stage == "process"
    assert error.dead_letter_topic == f"{env['TEST_APP']}.work.dlq"
    assert after == {"n": 8, "double": 16}
    # The answer to the caller that gave up came, and was dropped.
    assert in_flight == 0 and dropped == 1


def test_tasks_through_a_sigkill_all_end_done_or_failed_once_with_progress(
    serving: tuple[App, dict[str, str]],
    kafka_bootstrap: str,
    start_worker: Callable[..., WorkerProcess],
    start_member: Callable[..., WorkerProcess],
) -> None:
    app, env = serving
    n = 60
    first = start_member(APP, **env, **EXACTLY_ONCE)

    async def submit() -> list[str]:
        async with app.client() as c:
            handles = []
            for i in range(n):
                work = {"n": i, "steps": 20, "step_s": 0.1, "fail": i % 10 == 9}
                handles.append(await c.submit("work", work, key=f"k{i}"))
            return [h.task_id for h in handles]

    ids = asyncio.run(submit())

    async def progress_seen() -> dict[str, Any]:
        async with app.client() as c:
            async for seen in c.watch(ids[-2]):  # one that does not fail
                if seen["progress"] is not None and seen["state"] == "running":
                    return seen
        raise AssertionError("no progress")

    running = asyncio.run(asyncio.wait_for(progress_seen(), 60))
    assert running["message"].startswith("step ")
    first.signal(signal.SIGKILL)
    first.wait(10)
    start_worker(APP, **env, **EXACTLY_ONCE)

    async def results() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with app.client() as c:
            for task_id in ids:
                try:
                    out[task_id] = await c.wait(task_id, timeout=120)
                except RequestTimeout:
                    out[task_id] = None
        return out

    finals = asyncio.run(results())
    assert all(f is not None for f in finals.values()), "tasks lost"
    for i, task_id in enumerate(ids):
        final = finals[task_id]
        if i % 10 == 9:
            assert final["state"] == "failed" and final["error"]["message"] == f"cannot do {i}"
        else:
            assert final["state"] == "done" and final["result"] == {"n": i, "double": 2 * i}
    # Exactly once, each task's final status was committed once.
    finals_written = Counter(
        r.key
        for r in read_topic(kafka_bootstrap, f"{env['TEST_APP']}.tasks", 0, idle=2.0)
        if json.loads(r.value or b"null")["state"] in ("done", "failed")
    )
    assert set(finals_written.values()) == {1}, finals_written.most_common(3)
    assert len(finals_written) == n
    assert os.environ["STREAMKIT_BROKERS"] == kafka_bootstrap


def test_delayed_tasks_run_once_each_at_their_time_across_a_rebalance_and_a_restart(
    serving: tuple[App, dict[str, str]],
    kafka_bootstrap: str,
    start_member: Callable[..., WorkerProcess],
) -> None:
    """40 tasks due 1-9 s out; a second worker joins, then the first is SIGKILLed."""
    app, env = serving
    n = 40
    first = start_member(APP, **env, **EXACTLY_ONCE)

    async def submit() -> dict[str, int]:
        due: dict[str, int] = {}
        async with app.client() as c:
            for i in range(n):
                delay = 1 + (i * 7) % 9  # 1..9 s, out of order
                eta = int(time.time() * 1000) + delay * 1000
                handle = await c.submit("work", {"n": i, "stamp": True}, key=f"k{i}", delay=delay)
                due[handle.task_id] = eta
        return due

    due = asyncio.run(submit())
    start_member(APP, **env, **EXACTLY_ONCE)
    first.signal(signal.SIGKILL)
    first.wait(10)

    async def results() -> dict[str, Any]:
        async with app.client() as c:
            return {task_id: await c.wait(task_id, timeout=120) for task_id in due}

    finals = asyncio.run(results())
    assert all(f["state"] == "done" for f in finals.values()), finals
    early = {
        t: due[t] - f["result"]["ran_at"]
        for t, f in finals.items()
        if f["result"]["ran_at"] < due[t]
    }
    assert not early, f"ran before their eta (ms early): {early}"
    # Exactly once, a task's final status and its one run: committed once each.
    written = Counter(
        r.key
        for r in read_topic(kafka_bootstrap, f"{env['TEST_APP']}.tasks", 0, idle=2.0)
        if json.loads(r.value or b"null")["state"] == "done"
    )
    assert len(written) == n and set(written.values()) == {1}, written.most_common(3)


def test_status_answers_within_its_timeout_for_known_and_unknown_tasks(
    serving: tuple[App, dict[str, str]],
) -> None:
    """No worker runs: a submitted task reads as queued, an unknown one as None, promptly."""
    app, _ = serving

    async def main() -> tuple[Any, Any]:
        async with app.client() as c:
            handle = await c.submit("work", {"n": 1})
            known = await asyncio.wait_for(c.status(handle.task_id, timeout=10), 20)
            unknown = await asyncio.wait_for(c.status("no-such-task", timeout=10), 20)
            return known, unknown

    known, unknown = asyncio.run(main())
    assert known is not None and known["state"] == "queued" and known["agent"] == "work"
    assert unknown is None
