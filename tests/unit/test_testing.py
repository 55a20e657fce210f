"""The test harness itself: what users rely on when they test with ``TestApp``."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from streamkit import AgentError, App, Context, RetryPolicy, SerializationError
from streamkit.clock import ManualClock
from streamkit.pytest_plugin import MemoryAppFactory
from streamkit.testing import DeadLetterRecord, IdleTimeout, Record, TestApp, WorkerStopped


def chain_app(name: str = "chain", partitions: int = 2, **settings: Any) -> App:
    """in -> parse -> mid -> total -> out, JSON values."""
    app = App(name, **settings)
    source = app.topic("in", partitions=partitions)
    mid = app.topic("mid", partitions=partitions)
    out = app.topic("out", partitions=partitions)

    @app.agent(source, emits=[mid])
    def parse(value: dict[str, Any]) -> dict[str, Any]:
        return {"id": value["id"], "cents": value["price"] * 100}

    @app.agent(mid, emits=[out])
    def total(value: dict[str, Any]) -> dict[str, Any]:
        return {"id": value["id"], "total": value["cents"] + 1}

    return app


def test_a_chain_of_agents_runs_to_its_end_in_one_call() -> None:
    with TestApp(chain_app()) as t:
        for i in range(50):
            t.send("in", {"id": i, "price": i}, key=f"k{i}")
        t.run_until_idle()
        assert sorted(v["id"] for v in t.output("out")) == list(range(50))
        assert sum(t.committed("in").values()) == sum(t.committed("mid").values()) == 50


def test_records_carry_keys_headers_partitions_offsets_and_clock_timestamps() -> None:
    clock = ManualClock(epoch=1_000.0)
    with TestApp(chain_app(), clock=clock) as t:
        first = t.send("in", {"id": 1, "price": 1}, key="a", headers={"trace": "x"})
        clock.advance(2.5)
        second = t.send("in", {"id": 2, "price": 2}, key="a", headers=[("h", b"\x00")])
        third = t.send("in", {"id": 3, "price": 3}, partition=1, timestamp=7)
        records = t.records("in")
    assert (first.key, first.headers, first.timestamp) == ("a", [("trace", b"x")], 1_000_000)
    assert (second.partition, second.offset, second.timestamp) == (first.partition, 1, 1_002_500)
    assert (third.partition, third.timestamp, third.key) == (1, 7, None)
    assert sorted(records, key=lambda r: r.value["id"]) == [first, second, third]


def test_emitted_records_keep_headers_given_to_ctx_emit_and_async_agents_work() -> None:
    app = App("async-app")
    source = app.topic("in")
    out = app.topic("out")

    @app.agent(source, emits=[out])
    async def relay(value: int, ctx: Context) -> None:
        await asyncio.sleep(0)
        ctx.emit(out, value + 1, key=f"k{value}", headers=[("from", ctx.topic.encode())])

    with TestApp(app) as t:
        t.send("in", 41)
        t.run_until_idle()
        [record] = t.records("out")
    assert (record.value, record.key, record.headers) == (42, "k41", [("from", b"in")])


def test_time_based_commits_happen_only_when_the_clock_moves() -> None:
    # commit_interval is tiny: on a real clock a commit would follow at once.
    with TestApp(chain_app(), commit_every=1_000_000, commit_interval=0.001) as t:
        t.send("in", {"id": 1, "price": 1}, partition=0)
        t.run_until_idle(commit=False)
        assert t.committed("in") == {}
        t.run_until_idle()  # moves the clock one commit_interval: the runtime commits
        assert t.committed("in") == {0: 1}


def test_count_based_commits_need_no_clock() -> None:
    with TestApp(chain_app(), commit_every=1) as t:
        t.send("in", {"id": 1, "price": 1}, partition=0)
        t.run_until_idle(commit=False)
        assert t.committed("in") == {0: 1}


def test_crash_and_restart_redelivers_exactly_what_was_uncommitted() -> None:
    with TestApp(chain_app(partitions=1)) as t:
        for i in range(3):
            t.send("in", {"id": i, "price": 1})
        t.run_until_idle()
        for i in range(3, 5):
            t.send("in", {"id": i, "price": 1})
        t.run_until_idle(commit=False)
        t.crash_and_restart()
        t.run_until_idle()
        assert [v["id"] for v in t.output("mid")] == [0, 1, 2, 3, 4, 3, 4]
        assert t.committed("in") == {0: 5}


def test_a_crash_commits_nothing_and_logs_no_commit_attempt() -> None:
    # One agent, so one clock move commits everything: no commit is left due.
    app = App("crash")
    source, out = app.topic("in"), app.topic("out")

    @app.agent(source, emits=[out])
    def relay(value: int) -> int:
        return value

    with TestApp(app) as t:
        t.send("in", 1)
        t.run_until_idle()
        t.send("in", 2)
        t.run_until_idle(commit=False)  # processed, not committed: a crash redelivers it
        assert t.committed("in") == {0: 1}
        with structlog.testing.capture_logs() as logs:
            t.crash_and_restart()
        assert t.committed("in") == {0: 1}
        attempts = [e for e in logs if "commit" in e["event"] or e.get("reason") == "shutdown"]
        assert attempts == [], "a crashed worker does not try to commit"
        t.run_until_idle()
        assert t.output("out") == [1, 2, 2]


def test_an_expired_session_drops_partitions_uncommitted_and_rejoins() -> None:
    with TestApp(chain_app(partitions=1)) as t:
        t.send("in", {"id": 1, "price": 1})
        t.run_until_idle(commit=False)
        t.expire_session()  # on_lost: dropped without a commit, then rejoined
        t.run_until_idle()
        assert [v["id"] for v in t.output("mid")] == [1, 1]
        assert t.committed("in") == {0: 1}
        assert len(t.assignment()[0]) == 2


def test_rebalance_moves_a_partition_and_its_new_owner_goes_on_from_the_commit() -> None:
    with TestApp(chain_app(), workers=2) as t:
        assert sorted(len(a) for a in t.assignment()) == [2, 2]  # in and mid, 2 partitions each
        t.send("in", {"id": 1, "price": 1}, partition=0)
        t.run_until_idle()
        owner = next(i for i, a in enumerate(t.assignment()) if ("in", 0) in a)
        t.rebalance(move={("in", 0): 1 - owner})
        assert ("in", 0) in t.assignment()[1 - owner]
        t.send("in", {"id": 2, "price": 1}, partition=0)
        t.run_until_idle()
        assert [v["id"] for v in t.output("mid")] == [1, 2]
        t.rebalance(workers=1)
        assert len(t.assignment()[0]) == 4


def test_an_agent_error_is_raised_by_run_until_idle_with_the_cause_attached() -> None:
    app = App("failing")
    source = app.topic("in")

    @app.agent(source, dead_letter=False)  # a failed record stops the worker
    def explode(value: int) -> None:
        if value == 13:
            raise ValueError("unlucky")

    with TestApp(app) as t:
        t.send("in", 1)
        t.send("in", 13)
        with pytest.raises(AgentError, match="unlucky") as failed:
            t.run_until_idle()
        assert isinstance(failed.value.__cause__, ValueError)
        assert failed.value.offset == 1
        assert t.committed("in") == {0: 1}


def wait_until_stopped(t: TestApp) -> None:
    """Block until the (single) worker stopped on its own: its end wakes the broker."""
    with t.broker.progress:
        while not t._running[0].future.done():
            t.broker.progress.wait(5)


def test_failed_records_are_dead_lettered_by_default_and_readable() -> None:
    app = App("dlq")
    source = app.topic("in")

    @app.agent(source)
    def explode(value: int) -> None:
        if value == 13:
            raise ValueError("unlucky")

    with TestApp(app) as t:
        for value in (12, 13, 14):
            t.send("in", value, key="k")
        t.run_until_idle()
        [dead] = t.dead_letters("explode")
        assert (dead.key, dead.value) == (b"k", b"13")  # the original bytes
        assert dict(dead.headers)["__streams.errors.message"] == b"unlucky"
        assert t.committed("in") == {0: 3}
        with pytest.raises(KeyError, match="no agent 'nope'"):
            t.dead_letters("nope")


def dead_letter_app() -> App:
    app = App("dlq-view")
    source = app.topic("in", partitions=2)

    @app.agent(source, retry=RetryPolicy(attempts=3, backoff=0.001, retry_on=(ValueError,)))
    def explode(value: int) -> None:
        if value == 13:
            raise ValueError("unlucky")

    return app


def test_dead_letters_have_a_typed_view_next_to_the_raw_headers() -> None:
    with TestApp(dead_letter_app()) as t:
        t.send("in", 12, key="k", partition=1)
        t.send("in", 13, key="k", partition=1)
        t.run_until_idle()
        [dead] = t.dead_letters("explode")
    assert isinstance(dead, DeadLetterRecord) and isinstance(dead, Record)
    assert dead.exception == "builtins.ValueError"
    assert dead.message == "unlucky"
    assert dead.attempts == 3
    assert dead.stage == "process"
    assert dead.origin == ("in", 1, 1)
    assert (dead.origin.topic, dead.origin.partition, dead.origin.offset) == ("in", 1, 1)
    assert dict(dead.headers)["__streams.errors.message"] == b"unlucky", "raw headers kept"
    assert isinstance(dead.first_failure, datetime) and dead.first_failure.tzinfo is UTC


def test_a_dead_letters_first_failure_is_on_the_harness_clock() -> None:
    with TestApp(dead_letter_app()) as t:
        t.clock.advance(60)
        t.send("in", 13)
        t.run_until_idle()
        [dead] = t.dead_letters("explode")
    assert dead.first_failure == datetime(2024, 1, 1, 0, 1, tzinfo=UTC)


def test_a_failure_the_test_never_looked_at_is_raised_when_the_app_stops() -> None:
    app = App("unobserved")
    source = app.topic("in")

    # No retries: a backoff would wait for the harness clock, which only
    # run_until_idle (or t.clock.advance) moves.
    @app.agent(source, dead_letter=False, retry=RetryPolicy(attempts=1))
    def explode(value: int) -> None:
        raise ValueError("nobody asked")

    harness = TestApp(app, commit_every=1)
    with pytest.raises(AgentError, match="nobody asked"), harness as t:
        t.send("in", 1)
        wait_until_stopped(t)  # failed, and nobody called run_until_idle


def test_run_until_idle_times_out_naming_what_is_pending() -> None:
    app = App("stuck")
    source = app.topic("in")

    @app.agent(source)
    async def wait_forever(value: int) -> None:
        await asyncio.Event().wait()

    with TestApp(app, shutdown_timeout=0.2) as t:
        t.send("in", 1)
        with pytest.raises(IdleTimeout, match=r"in\[0\]: 1 in flight from 0 \(processing\)"):
            t.run_until_idle(timeout=0.3)


def test_leaving_after_a_hung_agent_waits_a_short_shutdown_timeout_the_message_names() -> None:
    app = App("hung")
    source = app.topic("in")

    @app.agent(source)
    async def wait_forever(value: int) -> None:
        await asyncio.Event().wait()

    began = time.monotonic()
    with TestApp(app) as t:  # no shutdown_timeout= given
        t.send("in", 1)
        with pytest.raises(IdleTimeout, match=r"TestApp\(app, shutdown_timeout=") as idle:
            t.run_until_idle(timeout=0.2)
    assert time.monotonic() - began < 10, "not the production 30 s"
    assert t.config.shutdown_timeout == 2.0
    assert "2s" in str(idle.value)
    assert TestApp(app, shutdown_timeout=7).config.shutdown_timeout == 7


def test_each_harness_has_its_own_broker() -> None:
    app = chain_app()
    with TestApp(app) as one, TestApp(app) as two:
        one.send("in", {"id": 1, "price": 1})
        one.run_until_idle()
        two.run_until_idle()
        assert len(one.output("out")) == 1
        assert two.output("out") == []


def test_the_environment_does_not_leak_into_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMKIT_COMMIT_EVERY", "lots")
    monkeypatch.setenv("STREAMKIT_GROUP_ID", "someone-elses")
    t = TestApp(chain_app())
    assert (t.config.commit_every, t.config.group_id) == (1000, "chain")


def test_undeclared_topics_and_bad_worker_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="workers must be at least 1"):
        TestApp(chain_app(), workers=0)
    with TestApp(chain_app()) as t, pytest.raises(KeyError, match="declares no topic 'nope'"):
        t.send("nope", 1)


def test_a_worker_that_stops_without_an_error_is_reported() -> None:
    with TestApp(chain_app()) as t:
        t._running[0].worker.stop()
        wait_until_stopped(t)
        with pytest.raises(WorkerStopped, match="exited with code 0"):
            t.run_until_idle()
        t._failure = None  # seen: do not raise it again on exit


def test_the_memory_app_fixture_starts_and_stops_apps(memory_app: MemoryAppFactory) -> None:
    t = memory_app(chain_app(), workers=2)
    t.send("in", {"id": 1, "price": 2})
    t.run_until_idle()
    assert t.output("out") == [{"id": 1, "total": 201}]
    assert len(t.assignment()) == 2


def test_a_key_the_topic_cannot_encode_names_the_topic_and_what_it_accepts() -> None:
    with (
        TestApp(chain_app()) as t,
        pytest.raises(SerializationError, match="topic in: str: accepts only str, got int 123"),
    ):
        t.send("in", {"id": 1, "price": 2}, key=123)


def test_retry_backoff_passes_on_the_harness_clock_not_in_real_time() -> None:
    app = App("backoff")
    source = app.topic("in")
    out = app.topic("out")
    tries: list[float] = []

    # 30 s, then 60 s of backoff (no jitter): 90 s on the clock, none for real.
    @app.agent(
        source,
        emits=[out],
        retry=RetryPolicy(attempts=3, backoff=30, multiplier=2, max_delay=600, jitter=0),
    )
    def flaky(value: int) -> int:
        tries.append(t.clock.monotonic())
        if len(tries) < 3:
            raise TimeoutError("the service is slow to start")
        return value

    with TestApp(app) as t:
        began = time.monotonic()
        t.send("in", 7)
        t.run_until_idle()
        assert t.output("out") == [7]
        assert tries == [0.0, 30.0, 90.0]
        assert time.monotonic() - began < 5, "the backoff waited on the real clock"


def test_a_retry_tier_is_due_on_the_harness_clock() -> None:
    app = App("tiers")
    source = app.topic("in")
    out = app.topic("out")
    seen: list[tuple[str, float]] = []

    @app.agent(source, emits=[out], retry=RetryPolicy(attempts=1, retry_topics=(60, 600)))
    def once_more(value: int, ctx: Context) -> int:
        seen.append((ctx.topic, t.clock.monotonic()))
        if len(seen) < 3:
            raise TimeoutError("down for maintenance")
        return value

    with TestApp(app) as t:
        began = time.monotonic()
        t.send("in", 1)
        t.run_until_idle()
        assert t.output("out") == [1]
        assert seen == [
            ("in", 0.0),
            ("tiers.once_more.retry.60s", 60.0),
            ("tiers.once_more.retry.600s", 660.0),
        ]
        assert time.monotonic() - began < 5, "the tier waited on the real clock"
