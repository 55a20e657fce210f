"""Exactly once through the real worker over the in-memory broker's transactions.

Every test counts outputs per input: under exactly once each input's
outputs are visible once, whatever crashed, retried, expired or was fenced.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from streamkit import App, Context, RetryPolicy
from streamkit.errors import FencedError
from streamkit.testing import TestApp


def pairs_app(partitions: int = 2, fail_first: frozenset[int] = frozenset()) -> App:
    """Input ``v`` emits ``2v`` then ``2v + 1``; inputs in ``fail_first`` raise once, between."""
    app = App("eos", processing_guarantee="exactly_once")
    source = app.topic("in", partitions=partitions)
    out = app.topic("out", partitions=partitions)
    tries: Counter[int] = Counter()

    @app.agent(source, emits=[out], retry=RetryPolicy(attempts=3, backoff=0.001))
    def split(value: int, ctx: Context) -> None:
        tries[value] += 1
        ctx.emit(out, 2 * value)
        if value in fail_first and tries[value] == 1:
            raise TimeoutError("the first try fails after one of its two emits")
        ctx.emit(out, 2 * value + 1)

    return app


def expected(inputs: range) -> list[int]:
    return sorted(x for v in inputs for x in (2 * v, 2 * v + 1))


def send(t: TestApp, inputs: range) -> None:
    for v in inputs:
        t.send("in", v, key=str(v))


def test_a_retried_records_first_emits_are_not_committed_beside_the_retrys() -> None:
    with TestApp(pairs_app(fail_first=frozenset({3, 7}))) as t:
        send(t, range(10))
        t.run_until_idle()
        assert sorted(t.output("out")) == expected(range(10))
        assert sum(t.committed("in").values()) == 10


def test_an_open_transaction_is_invisible_and_a_crash_aborts_it() -> None:
    with TestApp(pairs_app()) as t:
        send(t, range(10))
        t.run_until_idle()
        send(t, range(10, 30))
        t.run_until_idle(commit=False)  # processed, the transaction still open
        assert sorted(t.output("out")) == expected(range(10))
        t.crash_and_restart()
        t.run_until_idle()
        assert sorted(t.output("out")) == expected(range(30))


def test_an_expired_session_aborts_and_the_rejoined_worker_redoes_from_the_commit() -> None:
    with TestApp(pairs_app(), workers=2) as t:
        send(t, range(20))
        t.run_until_idle()
        send(t, range(20, 40))
        t.run_until_idle(commit=False)
        t.expire_session(0)
        t.run_until_idle()
        assert sorted(t.output("out")) == expected(range(40))


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def test_records_finishing_before_an_earlier_one_commit_only_with_their_offsets() -> None:
    # Offset 0 is the slowest of eight concurrent records: the others finish
    # first, and a checkpoint runs meanwhile. Their outputs must not commit
    # in it (its offsets stop before offset 0), or the crash after it would
    # run them again beside their committed outputs.
    app = App("eos-concurrent", processing_guarantee="exactly_once")
    source = app.topic("in", partitions=1)
    out = app.topic("out", partitions=1)
    head_may_finish = threading.Event()
    finished: list[int] = []

    @app.agent(source, emits=[out], concurrency=8)
    async def slow_head(value: int) -> int:
        while value == 0 and not head_may_finish.is_set():
            await asyncio.sleep(0.001)
        finished.append(value)
        return value

    with TestApp(app) as t:
        for v in range(8):
            t.send("in", v, key=str(v))
        wait_for(lambda: len(finished) == 7, "the seven fast records")
        checkpoints = t.workers[0].checkpoints
        assert checkpoints is not None
        t.clock.advance(t.config.commit_interval)
        wait_for(lambda: checkpoints.committed >= 1, "a checkpoint")
        assert t.output("out") == []
        assert t.committed("in") == {}
        t.crash_and_restart()
        head_may_finish.set()
        t.run_until_idle()
        assert sorted(t.output("out")) == list(range(8))


def test_a_fenced_producer_is_replaced_once_then_the_worker_stops() -> None:
    with TestApp(pairs_app()) as t:
        send(t, range(10))
        t.run_until_idle()
        worker = t.workers[0]
        assert worker.transactional_id is not None
        t.broker.fence(worker.transactional_id)
        send(t, range(10, 20))
        t.run_until_idle()
        assert sorted(t.output("out")) == expected(range(20))
        t.broker.fence(worker.transactional_id)  # again, within a minute: someone else has it
        send(t, range(20, 25))
        with pytest.raises(FencedError, match=r"transactional\.id"):
            t.run_until_idle()
        assert sorted(t.output("out")) == expected(range(20))


def test_at_least_once_apps_see_no_transactions() -> None:
    app = App("alo")
    source = app.topic("in")
    out = app.topic("out")

    @app.agent(source, emits=[out])
    def same(value: Any) -> Any:
        return value

    with TestApp(app) as t:
        t.send("in", 1)
        t.run_until_idle()
        assert t.workers[0].transactional_id is None
        assert t.output("out") == [1]
