"""Every window kind against a brute-force reference, on generated out-of-order input.

The runtime runs in the test harness (the in-memory broker, one partition so
one stream time); the reference (``reference.py``) replays the same arrivals
and recomputes each window from its records. A last record far in the
future closes every other window, so the two are compared in full: results
(key, start, end, sum) and late records, exactly.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamkit import App, Hopping, Session, Sliding, Tumbling
from streamkit.testing import TestApp
from streamkit.windows import sum_of
from tests.unit.windows import reference

_names = itertools.count()
FLUSH_KEY = "~flush"

# Keys few enough to share windows, timestamps that go back by up to a few
# windows: out-of-order records, some within grace and some late. On a
# 250 ms grid, so records land exactly on window ends, gaps and grace edges.
arrivals = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.integers(min_value=0, max_value=100).map(lambda i: i * 250),
        st.integers(min_value=1, max_value=9),
    ),
    min_size=8,
    max_size=60,
)
examples = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_window(kind: Any, grace_ms: int, records: list[reference.Arrival]) -> tuple[Any, Any]:
    app = App(f"wref{next(_names)}")
    source = app.topic("in", partitions=1)
    out = app.topic("out", partitions=1)
    app.window(
        source,
        kind,
        name="w",
        aggregate=sum_of(lambda v: v["n"]),
        grace=grace_ms / 1000,
        emits=[out],
        idle=None,
    )
    with TestApp(app) as t:
        for key, ts, n in records:
            t.send(source, {"n": n}, key=key, timestamp=ts)
        t.run_until_idle()
        results = [r for r in t.records(out) if r.key != FLUSH_KEY]
        late = [
            (r.key, int(dict(r.headers)["streamkit-event-time"]), r.value["n"])
            for r in t.records(f"{app.name}.w.late")
        ]
    return reference.as_results(results), sorted(late)


def with_flush(records: list[reference.Arrival]) -> list[reference.Arrival]:
    return [*records, (FLUSH_KEY, 1_000_000, 0)]


def check(
    kind: Any,
    grace_ms: int,
    records: list[reference.Arrival],
    expected: Callable[[list[reference.Arrival]], tuple[list[Any], list[Any]]],
) -> None:
    fed = with_flush(records)
    want, want_late = expected(fed)
    got, got_late = run_window(kind, grace_ms, fed)
    assert got == sorted(r for r in want if r[0] != FLUSH_KEY)
    assert got_late == sorted(want_late)


@examples
@given(arrivals, st.sampled_from([0, 500, 2_000]))
def test_tumbling_matches_the_reference(records: list[Any], grace: int) -> None:
    check(Tumbling(1), grace, records, lambda fed: reference.hopping(fed, 1000, 1000, grace))


@examples
@given(arrivals, st.sampled_from([0, 1_500]))
def test_hopping_matches_the_reference(records: list[Any], grace: int) -> None:
    kind = Hopping(size=3, step=1)
    check(kind, grace, records, lambda fed: reference.hopping(fed, 3000, 1000, grace))


@examples
@given(arrivals, st.sampled_from([0, 1_000]))
def test_sessions_match_the_reference(records: list[Any], grace: int) -> None:
    check(Session(gap=1.5), grace, records, lambda fed: reference.sessions(fed, 1500, grace))


@examples
@given(arrivals, st.sampled_from([0, 1_000]))
def test_sliding_matches_the_reference(records: list[Any], grace: int) -> None:
    check(Sliding(size=2), grace, records, lambda fed: reference.sliding(fed, 2000, grace))
