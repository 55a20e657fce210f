"""Windowed aggregations in the test harness: declaring, emitting, late records, idle, restarts."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from streamkit import NO_RETRY, App, DeclarationError, Hopping, Session, Sliding, Tumbling
from streamkit.testing import TestApp
from streamkit.windows import aggregate, count, max_of, min_of, reduce, sum_of

_names = itertools.count()
MINUTE_MS = 60_000
# Window-aligned event times, well after the harness clock's epoch.
T0 = 1_800_000_000_000 - 1_800_000_000_000 % MINUTE_MS


def make_app(guarantee: str = "at_least_once", **window: Any) -> tuple[App, Any, Any]:
    app = App(f"wunit{next(_names)}", processing_guarantee=guarantee)
    source = app.topic("in", partitions=1)
    out = app.topic("out", partitions=1)
    settings: dict[str, Any] = {
        "name": "w",
        "aggregate": count(),
        "grace": 0,
        "emits": [out],
        "idle": None,
        **window,
    }
    app.window(source, settings.pop("kind", Tumbling(60)), **settings)
    return app, source, out


def results(t: TestApp, out: Any) -> list[tuple[str, int, int, Any]]:
    return [(r.key, r.value["start"], r.value["end"], r.value["value"]) for r in t.records(out)]


# -- declaration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"grace": -1}, "grace must be 0 or more seconds"),
        ({"kind": Session(gap=60), "aggregate": aggregate(list, lambda a, v: a)}, "needs merge="),
        ({"kind": Sliding(size=60), "aggregate": aggregate(list, lambda a, v: a)}, "needs merge="),
        ({"kind": "tumbling"}, "the kind must be Tumbling, Hopping, Sliding or Session"),
        ({"aggregate": len}, "aggregate= takes count()"),
        ({"emit": "eventually"}, "emit must be 'final' or 'current'"),
        ({"emits": []}, "emits= names at least one topic"),
        ({"idle": 0}, "idle must be a positive number"),
        ({"late": "late-topic"}, "late= takes a topic or a function"),
    ],
)
def test_a_bad_declaration_stops_at_declaration_naming_the_setting(
    window: dict[str, Any], message: str
) -> None:
    with pytest.raises(DeclarationError, match=message):
        make_app(**window)


def test_window_kinds_refuse_sizes_that_make_no_windows() -> None:
    with pytest.raises(DeclarationError, match="step"):
        Hopping(size=60, step=120)
    with pytest.raises(DeclarationError, match="size must be a positive number"):
        Tumbling(0)


def test_hopping_windows_are_aligned_to_the_epoch_and_each_record_is_in_size_over_step() -> None:
    assert Hopping(size=3, step=1).windows(5_500) == [(3000, 6000), (4000, 7000), (5000, 8000)]
    assert Tumbling(60).windows(T0 + 59_999) == [(T0, T0 + MINUTE_MS)]


def test_a_window_declares_its_store_and_late_topic_like_any_agent() -> None:
    app, _, _ = make_app()
    assert f"{app.name}.w-windows.changelog" in app.topics
    assert f"{app.name}.w.late" in app.topics
    assert app.agents["w"].tables[0].name == "w-windows"


# -- emitting ------------------------------------------------------------------


def test_final_emits_once_when_stream_time_passes_end_plus_grace() -> None:
    app, source, out = make_app(grace=10)
    with TestApp(app) as t:
        for i in range(3):
            t.send(source, {"i": i}, key="a", timestamp=T0 + i * 1000)
        t.send(source, {}, key="b", timestamp=T0 + MINUTE_MS + 9_999)  # end + grace - 1 ms
        t.run_until_idle()
        assert results(t, out) == []
        t.send(source, {}, key="b", timestamp=T0 + MINUTE_MS + 10_000)
        t.run_until_idle()
        assert results(t, out) == [("a", T0, T0 + MINUTE_MS, 3)]


@pytest.mark.parametrize(
    ("kind", "last"),
    [(Tumbling(60), MINUTE_MS - 1), (Session(gap=30), 2000), (Sliding(size=60), 2000)],
    ids=["half-open", "session", "sliding"],
)
def test_a_result_is_stamped_with_the_last_event_time_its_window_covers(
    kind: Any, last: int
) -> None:
    app, source, out = make_app(kind=kind)
    with TestApp(app) as t:
        for ms in (0, 1000, 2000):
            t.send(source, {}, key="a", timestamp=T0 + ms)
        t.send(source, {}, key="b", timestamp=T0 + 10 * MINUTE_MS)
        t.run_until_idle()
        stamped = [(r.value["end"], r.timestamp) for r in t.records(out) if r.key == "a"]
        assert stamped and all(stamp <= end for end, stamp in stamped)
        assert stamped[-1][1] == T0 + last


def test_current_emits_the_window_after_every_record_that_changed_it() -> None:
    app, source, out = make_app(emit="current", aggregate=sum_of(lambda v: v["n"]))
    with TestApp(app) as t:
        for n in (1, 2, 3):
            t.send(source, {"n": n}, key="a", timestamp=T0 + n)
        t.send(source, {"n": 10}, key="a", timestamp=T0 + 2 * MINUTE_MS)  # closes the first
        t.run_until_idle()
        assert [v for *_, v in results(t, out)] == [1, 3, 6, 10]


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        (min_of(lambda v: v["n"]), 2),
        (max_of(lambda v: v["n"]), 7),
        (reduce(lambda a, b: a * b, of=lambda v: v["n"]), 70),
        (aggregate(list, lambda acc, v: [*acc, v["n"]]), [5, 2, 7]),
    ],
)
def test_each_aggregation_folds_the_window_records(aggregation: Any, expected: Any) -> None:
    app, source, out = make_app(aggregate=aggregation)
    with TestApp(app) as t:
        for n in (5, 2, 7):
            t.send(source, {"n": n}, key="a", timestamp=T0 + n)
        t.send(source, {"n": 1}, key="b", timestamp=T0 + MINUTE_MS)
        t.run_until_idle()
        assert results(t, out) == [("a", T0, T0 + MINUTE_MS, expected)]


def test_result_shapes_the_emitted_value_from_key_window_and_aggregate() -> None:
    app, source, out = make_app(
        result=lambda key, window, n: {"customer": key, "hour": window.start, "orders": n}
    )
    with TestApp(app) as t:
        t.send(source, {}, key="c1", timestamp=T0)
        t.send(source, {}, key="c2", timestamp=T0 + MINUTE_MS)
        t.run_until_idle()
        assert t.output(out) == [{"customer": "c1", "hour": T0, "orders": 1}]


def test_an_extracted_event_time_decides_the_window_not_the_record_timestamp() -> None:
    app, source, out = make_app(timestamp=lambda v: v["at"])
    with TestApp(app) as t:
        t.send(source, {"at": T0 + 5}, key="a", timestamp=T0 + 10 * MINUTE_MS)
        t.send(source, {"at": T0 + MINUTE_MS}, key="a", timestamp=T0)
        t.run_until_idle()
        assert results(t, out) == [("a", T0, T0 + MINUTE_MS, 1)]


# -- records the window cannot take --------------------------------------------


def test_late_records_go_to_the_late_topic_with_their_times_and_are_counted() -> None:
    app, source, _ = make_app()
    with TestApp(app) as t:
        t.send(source, {"n": 1}, key="a", timestamp=T0 + 2 * MINUTE_MS)
        t.send(source, {"n": 2}, key="a", timestamp=T0 + 5)  # its window closed already
        t.run_until_idle()
        (late,) = t.records(f"{app.name}.w.late")
        headers = dict(late.headers)
        assert (late.key, late.value) == ("a", {"n": 2})
        assert headers["streamkit-event-time"] == str(T0 + 5).encode()
        assert headers["streamkit-stream-time"] == str(T0 + 2 * MINUTE_MS).encode()
        assert headers["streamkit-source"] == b"in[0]@1"
        (worker,) = t.workers
        assert worker.processors["in"].windows is not None
        assert worker.processors["in"].windows.late == 1


def test_a_late_callback_gets_the_record_instead_of_the_topic() -> None:
    seen: list[Any] = []
    app, source, _ = make_app(late=lambda value, ctx: seen.append((value, ctx.offset)))
    assert f"{app.name}.w.late" not in app.topics
    with TestApp(app) as t:
        t.send(source, {"n": 1}, key="a", timestamp=T0 + 2 * MINUTE_MS)
        t.send(source, {"n": 2}, key="a", timestamp=T0)
        t.run_until_idle()
    assert seen == [({"n": 2}, 1)]


def test_records_without_a_key_or_a_good_event_time_are_dead_lettered_and_lose_nothing() -> None:
    app, source, out = make_app(timestamp=lambda v: v["at"], retry=NO_RETRY)
    with TestApp(app) as t:
        t.send(source, {"at": T0}, key=None)
        t.send(source, {"at": "yesterday"}, key="a")
        t.send(source, {"at": T0}, key="a")
        t.send(source, {"at": T0 + MINUTE_MS}, key="b")
        t.run_until_idle()
        letters = t.dead_letters("w")
        assert [d.origin[2] for d in letters] == [0, 1]
        assert "no key" in letters[0].message
        assert "epoch milliseconds or a datetime" in letters[1].message
        assert results(t, out) == [("a", T0, T0 + MINUTE_MS, 1)]


# -- stream time ---------------------------------------------------------------


def test_an_idle_partition_closes_its_last_window_after_the_idle_timeout() -> None:
    app, source, out = make_app(idle=30, grace=5)
    with TestApp(app) as t:
        t.send(source, {}, key="a", timestamp=T0 + 50_000)
        t.run_until_idle()
        # Stream time follows the wall clock from T0 + 50 s once 30 s passed:
        # the window [T0, T0 + 60 s) + 5 s grace is due 15 s after that, at
        # 30 s of quiet (the idle timeout is the longer of the two).
        t.clock.advance(27)
        t.run_until_idle()
        assert results(t, out) == []
        t.clock.advance(3)
        t.run_until_idle()
        assert results(t, out) == [("a", T0, T0 + MINUTE_MS, 1)]


def test_idle_advance_is_off_with_idle_none() -> None:
    app, source, out = make_app(idle=None)
    with TestApp(app) as t:
        t.send(source, {}, key="a", timestamp=T0)
        t.run_until_idle()
        t.clock.advance(3600)
        t.run_until_idle()
        assert results(t, out) == []


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_crash_mid_window_neither_loses_nor_double_counts(guarantee: str) -> None:
    app, source, out = make_app(guarantee)
    with TestApp(app) as t:
        for i in range(5):
            t.send(source, {}, key="a", timestamp=T0 + i)
        t.run_until_idle()  # committed, with the window open
        for i in range(5, 8):
            t.send(source, {}, key="a", timestamp=T0 + i)
        t.run_until_idle(commit=False)  # processed, not committed
        t.crash_and_restart()
        t.send(source, {}, key="a", timestamp=T0 + MINUTE_MS)
        t.run_until_idle()
        assert results(t, out) == [("a", T0, T0 + MINUTE_MS, 8)]


def test_stream_time_survives_a_restart_so_a_late_record_stays_late() -> None:
    app, source, out = make_app("exactly_once")
    with TestApp(app) as t:
        t.send(source, {}, key="a", timestamp=T0)
        t.send(source, {}, key="b", timestamp=T0 + 3 * MINUTE_MS)
        t.run_until_idle()
        t.crash_and_restart()
        t.send(source, {}, key="a", timestamp=T0 + MINUTE_MS)  # behind stream time
        t.send(source, {}, key="c", timestamp=T0 + 4 * MINUTE_MS)
        t.run_until_idle()
        assert [r[0] for r in results(t, out)] == ["a", "b"]
        assert [r.key for r in t.records(f"{app.name}.w.late")] == ["a"]


def test_the_docs_example_closes_the_hour_on_the_manual_clock() -> None:
    # docs/windows.md, "Testing windows", as written there.
    app = App(f"wunit{next(_names)}")
    orders = app.topic("orders.by_customer", partitions=4)
    revenue = app.topic("orders.revenue.hourly", partitions=4)
    app.window(
        orders,
        Tumbling(size=3600),
        name="hourly_revenue",
        aggregate=sum_of(lambda order: order["total_eur"]),
        grace=300,
        emits=[revenue],
    )
    hour = 3_600_000
    start = T0 - T0 % hour
    with TestApp(app) as t:
        t.send(orders, {"total_eur": 10.0}, key="c1", timestamp=start + 50_000)
        t.run_until_idle()
        assert t.output(revenue) == []
        t.clock.advance(2 * 3600)
        t.run_until_idle()
        assert t.output(revenue) == [{"start": start, "end": start + hour, "value": 10.0}]
