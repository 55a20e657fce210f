from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import structlog

from streamkit import App, DeclarationError
from streamkit.runtime.scheduler import TimerContext
from streamkit.testing import TestApp


def test_every_ticks_are_aligned_to_the_clock() -> None:
    app = App("t", brokers="127.0.0.1:9092")

    @app.timer(every=30)
    def beat() -> None: ...

    timer = app.timers["beat"]
    assert timer.next_fire(1_000.0) == 1_020.0
    assert timer.next_fire(1_020.0) == 1_050.0, "strictly after now"
    assert app.timers_topic.name == "t.timers" and app.timers_topic.partitions == 1
    assert "t.timers" in app.topics


def test_crontab_next_fire_in_utc() -> None:
    app = App("t", brokers="127.0.0.1:9092")

    @app.crontab("*/5 * * * *")
    def report() -> None: ...

    now = datetime(2026, 11, 22, 10, 3, 12, tzinfo=UTC).timestamp()
    assert (
        app.timers["report"].next_fire(now) == datetime(2026, 11, 22, 10, 5, tzinfo=UTC).timestamp()
    )


@pytest.mark.parametrize(
    ("decorate", "message"),
    [
        (lambda app: app.timer(every=0), "positive"),
        (lambda app: app.crontab("every tuesday"), "invalid crontab"),
    ],
)
def test_bad_schedules(
    decorate: Callable[[App], Callable[[Callable[[], None]], object]], message: str
) -> None:
    app = App("t", brokers="127.0.0.1:9092")

    def job() -> None: ...

    with pytest.raises(DeclarationError, match=message):
        decorate(app)(job)


def test_timer_emits_must_be_declared() -> None:
    app = App("t", brokers="127.0.0.1:9092")

    @app.timer(every=1, emits=["nowhere"])
    def job() -> None: ...

    with pytest.raises(DeclarationError, match="timer job emits to 'nowhere'"):
        app.resolve_emits("timer job", app.timers["job"].emits)


def test_timers_tick_exactly_when_the_harness_clock_says() -> None:
    app = App("ticks")
    out = app.topic("ticks.out")

    @app.timer(every=2, emits=[out])
    def beat(ctx: TimerContext) -> float:
        return ctx.fired_at

    with TestApp(app) as t:
        start = t.clock.time()  # 2024-01-01T00:00:00Z, a multiple of 2 s
        t.run_until_idle()
        assert t.output(out) == [], "no tick before the clock moves"
        t.clock.advance(5)
        t.run_until_idle()
        assert t.output(out) == [start + 2, start + 4]
        t.clock.advance(1)
        t.run_until_idle()
        assert t.output(out) == [start + 2, start + 4, start + 6]


def test_crontabs_follow_the_harness_clock_too() -> None:
    app = App("cron")
    out = app.topic("cron.out")
    fired: list[float] = []

    @app.crontab("*/5 * * * *", emits=[out])
    def report(ctx: TimerContext) -> str:
        fired.append(ctx.fired_at)
        return "report"

    with TestApp(app) as t:
        start = t.clock.time()
        t.clock.advance(11 * 60)
        t.run_until_idle()
        assert fired == [start + 300, start + 600]
        assert t.output(out) == ["report", "report"]


def test_a_long_stall_fires_one_late_tick_not_every_missed_one() -> None:
    app = App("stall")
    out = app.topic("stall.out")

    @app.timer(every=1, emits=[out])
    def beat(ctx: TimerContext) -> float:
        return ctx.fired_at

    with TestApp(app) as t:
        start = t.clock.time()
        t.clock.advance(3600.5)  # an hour without a turn, as a stalled loop has
        t.run_until_idle()
        assert t.output(out) == [start + 1, start + 3600]


def test_a_tick_whose_emit_the_broker_refuses_is_logged() -> None:
    app = App("refused")
    out = app.topic("refused.out")

    @app.timer(every=1, emits=[out])
    def beat(ctx: TimerContext) -> float:
        return ctx.fired_at

    t = TestApp(app)
    del t.broker._logs[out.name]
    with structlog.testing.capture_logs() as logs, t:
        t.clock.advance(1)
        t.run_until_idle()
    assert any(e["event"] == "timer emit failed" for e in logs)
