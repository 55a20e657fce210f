"""Group-wide rate limits: parsing, shares, the token bucket, and the runtime on a manual clock."""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from streamkit import App, DeclarationError, RetryPolicy
from streamkit.agent import parse_rate
from streamkit.clock import ManualClock
from streamkit.runtime.rate_limit import RateLimits, TokenBucket, share
from streamkit.testing import TestApp
from streamkit.types import TopicPartition

# -- declaration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "per_second"),
    [
        ("100/s", 100.0),
        ("6000/min", 100.0),
        ("5/h", 5 / 3600),
        (" 2.5 / second ", 2.5),
        ("30/m", 0.5),
        (200, 200.0),
        (0.5, 0.5),
        (None, None),
    ],
)
def test_rates_are_parsed_once_into_records_per_second(
    spec: str | float | None, per_second: float | None
) -> None:
    parsed = parse_rate(spec)
    if per_second is None:
        assert parsed is None
    else:
        assert parsed == pytest.approx(per_second)


@pytest.mark.parametrize("spec", ["100", "fast", "10/d", "/s", "-1/s", "0/s", "inf/s", 0, True])
def test_a_bad_rate_fails_at_declaration_naming_rate_limit(spec: Any) -> None:
    app = App("bad-rate")
    source = app.topic("in")
    with pytest.raises(DeclarationError, match="rate_limit") as caught:

        @app.agent(source, rate_limit=spec)
        def handle(value: Any) -> None:
            return None

    assert "agent handle" in str(caught.value)
    assert "handle" not in app.agents


def test_the_declared_agent_carries_its_rate_and_a_window_can_have_one() -> None:
    app = App("rates")
    source = app.topic("in")

    @app.agent(source, rate_limit="6000/min")
    def handle(value: Any) -> None:
        return None

    assert app.agents["handle"].rate_limit == 100.0

    @app.agent(app.topic("other"))
    def free(value: Any) -> None:
        return None

    assert app.agents["free"].rate_limit is None


# -- shares --------------------------------------------------------------------


def test_a_share_is_owned_over_total_partitions() -> None:
    assert share(2, 6) == pytest.approx(1 / 3)
    assert share(6, 6) == 1.0
    assert share(0, 6) == 0.0
    assert share(0, 0) == 0.0
    # A count read before the topic grew never gives a share above 1.
    assert share(5, 4) == 1.0


def limits_for(app: App, totals: dict[str, int]) -> RateLimits:
    inputs = {
        a.name: [a.source.name, *(t.name for t in app.retry_topics(a))] for a in app.agents.values()
    }
    limits = RateLimits(app.agents.values(), inputs, ManualClock().monotonic)
    limits.totals.update(totals)
    return limits


def test_shares_of_every_assignment_add_up_to_the_whole_budget() -> None:
    app = App("shares")

    @app.agent(app.topic("in", partitions=6), rate_limit="200/s")
    def handle(value: Any) -> None:
        return None

    limits = limits_for(app, {"in": 6})
    rng = random.Random(16)
    for _ in range(200):
        members = rng.randint(1, 8)
        owners = [rng.randrange(members) for _ in range(6)]
        total = sum(
            limits.shares([TopicPartition("in", p) for p, o in enumerate(owners) if o == m])[
                "handle"
            ]
            for m in range(members)
        )
        assert total == pytest.approx(1.0)


def test_retry_tiers_count_as_partitions_of_the_agent() -> None:
    app = App("tiers")

    @app.agent(app.topic("in", partitions=4), rate_limit=100, retry=RetryPolicy(retry_topics=(60,)))
    def handle(value: Any) -> None:
        return None

    [tier] = app.retry_topics(app.agents["handle"])
    limits = limits_for(app, {"in": 4, tier.name: 4})
    owned = [TopicPartition("in", 0), TopicPartition("in", 1), TopicPartition(tier.name, 0)]
    assert limits.shares(owned) == {"handle": pytest.approx(3 / 8)}
    # An agent without a limit has no bucket at all.
    assert limits.bucket_of("other") is None


def test_an_unknown_or_grown_topic_counts_the_partitions_seen() -> None:
    app = App("grown")

    @app.agent(app.topic("in"), rate_limit=100)
    def handle(value: Any) -> None:
        return None

    limits = limits_for(app, {"in": 4})
    # Partition 5 of a topic read as 4 partitions: it has at least 6 now.
    assert limits.shares([TopicPartition("in", 5)]) == {"handle": pytest.approx(1 / 6)}


# -- the bucket ----------------------------------------------------------------


def bucket(rate: float, clock: ManualClock) -> TokenBucket:
    b = TokenBucket(rate, clock.monotonic)
    b.set_rate(rate)
    return b


def test_a_new_bucket_starts_one_record_at_once_then_spaces_them_at_its_rate() -> None:
    clock = ManualClock()
    b = bucket(10.0, clock)
    assert b.take() == 0.0
    # Reserved one after another: the next three are due 0.1, 0.2 and 0.3 s out.
    assert [b.take() for _ in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    clock.advance(0.3)
    assert b.take() == pytest.approx(0.1)


def test_an_idle_bucket_fills_to_one_second_of_its_rate_and_no_more() -> None:
    clock = ManualClock()
    b = bucket(10.0, clock)
    clock.advance(3600)
    free = list(itertools.takewhile(lambda wait: wait == 0.0, (b.take() for _ in range(100))))
    assert len(free) == 10  # the burst: one second's worth


def test_a_slow_rate_still_holds_one_token() -> None:
    clock = ManualClock()
    b = bucket(5 / 3600, clock)  # "5/h"
    clock.advance(3600)
    assert b.take() == 0.0
    assert b.take() == pytest.approx(720.0)


def test_a_smaller_share_keeps_what_was_earned_up_to_its_new_cap() -> None:
    clock = ManualClock()
    b = bucket(100.0, clock)
    clock.advance(10)  # full: 100 tokens
    b.set_rate(20.0)
    assert b.tokens == pytest.approx(20.0)
    assert b.capacity == pytest.approx(20.0)


def test_a_token_given_back_is_the_next_callers() -> None:
    clock = ManualClock()
    b = bucket(1.0, clock)
    assert b.take() == 0.0
    assert b.take() == pytest.approx(1.0)
    b.give_back()
    assert b.take() == pytest.approx(1.0)


def test_no_share_means_wait_for_one() -> None:
    b = TokenBucket(10.0, ManualClock().monotonic)
    assert b.take() == 0.0  # the first token of a new bucket
    assert math.isinf(b.take())


# -- the runtime, on the harness's manual clock --------------------------------


def limited_app(
    rate: str | float, partitions: int = 2, fn: Callable[[Any], Any] | None = None, **kw: Any
) -> App:
    app = App("limited")
    source = app.topic("in", partitions=partitions)
    out = app.topic("out", partitions=partitions)

    def relay(value: Any) -> Any:
        return value

    app.agent(source, emits=[out], name="relay", rate_limit=rate, **kw)(fn or relay)
    return app


def starts(t: TestApp) -> list[float]:
    """Seconds from the first output to each output (the memory broker stamps them on the clock)."""
    stamps = sorted(r.timestamp for r in t.records("out"))
    return [(s - stamps[0]) / 1000 for s in stamps]


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_records_start_at_the_rate_and_only_the_clock_moves() -> None:
    clock = ManualClock()
    with TestApp(limited_app("10/s"), clock=clock) as t:
        for i in range(30):
            t.send("in", i, key=f"k{i}")
        began = time.monotonic()
        t.run_until_idle()
        assert time.monotonic() - began < 5  # the manual clock waited, not the test
        gaps = starts(t)
    assert len(gaps) == 30
    # One token at once, then one per 100 ms, both partitions sharing the bucket.
    assert gaps == pytest.approx([i / 10 for i in range(30)], abs=0.002)


def test_an_async_agent_is_limited_the_same_way() -> None:
    async def relay(value: Any) -> Any:
        return value

    with TestApp(limited_app(20, fn=relay)) as t:
        for i in range(20):
            t.send("in", i, key=f"k{i}")
        t.run_until_idle()
        gaps = starts(t)
    assert gaps == pytest.approx([i / 20 for i in range(20)], abs=0.002)


def test_a_concurrent_agent_is_limited_the_same_way() -> None:
    async def relay(value: Any) -> Any:
        return value

    with TestApp(limited_app(20, fn=relay, concurrency=4)) as t:
        for i in range(20):
            t.send("in", i, key=f"k{i}")
        t.run_until_idle()
        gaps = starts(t)
    assert gaps == pytest.approx([i / 20 for i in range(20)], abs=0.002)


def bucket_rates(t: TestApp) -> list[float]:
    return [w.rate_limits.buckets["relay"].rate for w in t.workers]


def test_the_budget_is_shared_by_partitions_and_follows_every_rebalance() -> None:
    with TestApp(limited_app("12/s", partitions=4), workers=2) as t:
        wait_for(lambda: bucket_rates(t) == [6.0, 6.0], "two even shares")
        t.rebalance(move={("in", 0): 1})
        wait_for(lambda: sorted(bucket_rates(t)) == [3.0, 9.0], "shares after a move")
        t.rebalance(workers=3)
        wait_for(
            lambda: sum(bucket_rates(t)) == pytest.approx(12.0) and min(bucket_rates(t)) > 0,
            "three shares that add up to the group's rate",
        )
        t.rebalance(workers=1)
        wait_for(lambda: bucket_rates(t) == [12.0], "the whole rate for the one left")


def test_two_workers_together_keep_the_group_rate() -> None:
    # Per-worker limits would let 2 x 10 records a second through.
    with TestApp(limited_app("10/s", partitions=4), workers=2) as t:
        wait_for(lambda: bucket_rates(t) == [5.0, 5.0], "two even shares")
        for i in range(40):
            t.send("in", i, partition=i % 4)
        t.run_until_idle()
        gaps = starts(t)
    assert len(gaps) == 40
    # Each worker: its first record at once, then 5 a second; 20 each.
    assert gaps[-1] == pytest.approx(19 / 5, abs=0.002)
    assert sum(1 for g in gaps if g < 1.0) <= 10 + 2  # a second's worth, plus each one's first


def test_in_place_retries_take_tokens_too() -> None:
    tries: dict[int, int] = {}

    def flaky(value: int) -> int:
        tries[value] = tries.get(value, 0) + 1
        if tries[value] == 1:
            raise ConnectionError("the downstream said 429")
        return value

    retry = RetryPolicy(attempts=2, backoff=0.0, jitter=0.0)
    clock = ManualClock()
    with TestApp(limited_app("10/s", fn=flaky, retry=retry), clock=clock) as t:
        began = clock.time()
        for i in range(10):
            t.send("in", i, key=f"k{i}")
        t.run_until_idle(commit=False)
        assert sorted(t.output("out")) == list(range(10))
        elapsed = clock.time() - began
    # 20 calls at 10 a second, the first at once: 1.9 s, not the 0.9 s of 10 records.
    assert elapsed == pytest.approx(1.9, abs=0.01)


def test_a_partition_waiting_for_a_token_is_revoked_at_once_and_its_record_runs_once() -> None:
    seen: list[int] = []

    def relay(value: int) -> int:
        seen.append(value)
        return value

    # One record an hour: the second waits 3600 s on the (manual) clock.
    with TestApp(limited_app("1/h", partitions=1, fn=relay), workers=2) as t:
        owner = 0 if t.assignment()[0] else 1
        t.send("in", 1)
        t.send("in", 2)
        wait_for(lambda: len(t.records("out")) == 1, "the first record")
        wait_for(
            lambda: t.workers[owner].workers[TopicPartition("in", 0)].limit_due > 0,
            "the second waiting for its token",
        )
        began = time.monotonic()
        t.rebalance(move={("in", 0): 1 - owner}, timeout=5)
        assert time.monotonic() - began < 3  # the drain did not wait out the token
        t.run_until_idle()
        assert seen == [1, 2]
        assert sorted(t.output("out")) == [1, 2]


def test_every_input_of_the_agent_shares_its_budget_retry_and_delay_tiers_too() -> None:
    app = App("all-inputs")
    source = app.topic("in", partitions=2)

    @app.agent(source, rate_limit=10, retry=RetryPolicy(retry_topics=(60,)), delays=True)
    def relay(value: Any) -> None:
        return None

    declared = app.agents["relay"]
    tiers = {t.name for t in (*app.retry_topics(declared), *app.delay_topics(declared))}
    assert tiers
    with TestApp(app) as t:
        [worker] = t.workers
        assert worker.rate_limits.topics() == {"in", *tiers}
        # The one worker owns every partition of every input: the whole rate.
        wait_for(lambda: worker.rate_limits.buckets["relay"].rate == 10.0, "the whole rate")
