from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from streamkit import App, DeclarationError


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
