"""Each window kind's rules over one key's stored windows, as plain functions of lists.

A logic object answers three questions about one key's state (the layouts
are in :mod:`streamkit.windows.slice`):

* ``add(state, ts, value, stream_time)``: the new state with the record in
  every window of it still open, and those windows as ``(start, end, acc)``;
  ``(None, ())`` when every window it belongs to has closed (it is late);
* ``close(state, stream_time)``: the state without the windows that closed
  (``None`` when nothing is left), and the closed windows;
* ``close_of(state)``: the stream time at which the next of them closes.

They never change a stored list in place: exactly once, a failed record's
writes are undone by putting the previous value back
(:func:`streamkit.state.partition.undo_writes`), which must still be the
value from before the record.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

from streamkit.windows.aggregations import Aggregation
from streamkit.windows.kinds import Hopping, Session, Sliding, WindowKind

Closed = list[tuple[int, int, Any]]


class HoppingLogic:
    """Tumbling and hopping windows: ``[[start, end, acc], ...]`` oldest first."""

    def __init__(self, kind: Hopping, aggregation: Aggregation, grace_ms: int) -> None:
        self.size, self.step, self.grace = kind.size_ms, kind.step_ms, grace_ms
        self._initial, self._add = aggregation.initial, aggregation.add

    def add(self, state: Any, ts: int, value: Any, st: int) -> tuple[Any, Closed]:
        """The state with the record in its open windows, and those windows."""
        size, step, grace = self.size, self.step, self.grace
        last = ts - ts % step
        if step == size:
            starts: Any = (last,) if last + size + grace > st else ()
        else:
            first = max(last - ((size - 1) // step) * step, 0)
            starts = [s for s in range(first, last + 1, step) if s + size > ts]
            starts = [s for s in starts if s + size + grace > st]
        if not starts:
            return None, []
        windows = list(state) if state else []
        by_start = {w[0]: i for i, w in enumerate(windows)}
        updated = []
        for start in starts:
            i = by_start.get(start)
            if i is None:
                window = [start, start + size, self._add(self._initial(), value)]
                windows.append(window)
            else:
                old = windows[i]
                window = windows[i] = [start, old[1], self._add(old[2], value)]
            updated.append((window[0], window[1], window[2]))
        if len(windows) > 1:
            windows.sort(key=_first)
        return windows, updated

    def close(self, state: Any, st: int) -> tuple[Any, Closed]:
        """The state without its closed windows (``None``: empty), and those windows."""
        grace = self.grace
        closed = [(w[0], w[1], w[2]) for w in state if w[1] + grace <= st]
        kept = [w for w in state if w[1] + grace > st]
        return kept or None, closed

    def close_of(self, state: Any) -> int | None:
        """The stream time at which the state's next window closes (or is cleaned up)."""
        return min(w[1] for w in state) + self.grace if state else None


class SessionLogic:
    """Sessions: ``[[first, last, acc], ...]`` oldest first, always ``gap`` or more apart."""

    def __init__(self, kind: Session, aggregation: Aggregation, grace_ms: int) -> None:
        self.gap, self.grace = kind.gap_ms, grace_ms
        self._initial, self._add, self._merge = _merging(aggregation)

    def add(self, state: Any, ts: int, value: Any, st: int) -> tuple[Any, Closed]:
        """The state with the record in its open windows, and those windows."""
        gap = self.gap
        sessions = state or []
        joined = [s for s in sessions if s[0] - gap < ts < s[1] + gap]
        if not joined:
            if ts + gap + self.grace <= st:
                return None, []
            new = [ts, ts, self._add(self._initial(), value)]
        else:
            acc = joined[0][2]
            for other in joined[1:]:
                acc = self._merge(acc, other[2])
            new = [min(joined[0][0], ts), max(joined[-1][1], ts), self._add(acc, value)]
        kept = [s for s in sessions if not s[0] - gap < ts < s[1] + gap]
        bisect.insort(kept, new, key=_first)
        return kept, [(new[0], new[1], new[2])]

    def close(self, state: Any, st: int) -> tuple[Any, Closed]:
        """The state without its closed windows (``None``: empty), and those windows."""
        edge = self.gap + self.grace
        closed = [(s[0], s[1], s[2]) for s in state if s[1] + edge <= st]
        kept = [s for s in state if s[1] + edge > st]
        return kept or None, closed

    def close_of(self, state: Any) -> int | None:
        """The stream time at which the state's next window closes (or is cleaned up)."""
        return min(s[1] for s in state) + self.gap + self.grace if state else None


class SlidingLogic:
    """Sliding windows: ``[records, ends]``, records ``[[ts, acc], ...]`` and open window ends."""

    def __init__(self, kind: Sliding, aggregation: Aggregation, grace_ms: int) -> None:
        self.size, self.grace = kind.size_ms, grace_ms
        self._initial, self._add, self._merge = _merging(aggregation)

    def _value(self, records: list[Any], end: int) -> Any:
        acc: Any = _NONE
        lo = end - self.size
        for ts, one in records:
            if lo <= ts <= end:
                acc = one if acc is _NONE else self._merge(acc, one)
        return acc

    def add(self, state: Any, ts: int, value: Any, st: int) -> tuple[Any, Closed]:
        """The state with the record in its open windows, and those windows."""
        records, ends = (state[0], state[1]) if state else ([], [])
        # [ts - size, ts] includes ts, so it takes records until stream time
        # passes ts + grace: with grace=0, records of the same millisecond.
        own = ts + self.grace >= st
        containing = [e for e in ends if ts <= e <= ts + self.size]
        if not own and not containing:
            return None, []
        records = list(records)
        bisect.insort(records, [ts, self._add(self._initial(), value)], key=_first)
        if own and ts not in ends:
            ends = sorted([*ends, ts])
            containing = sorted({*containing, ts})
        return [records, ends], [(e - self.size, e, self._value(records, e)) for e in containing]

    def close(self, state: Any, st: int) -> tuple[Any, Closed]:
        """The state without its closed windows (``None``: empty), and those windows."""
        records, ends = state[0], state[1]
        grace, size = self.grace, self.size
        closed = [(e - size, e, self._value(records, e)) for e in ends if e + grace < st]
        ends = [e for e in ends if e + grace >= st]
        # A record is still needed by the window of a record not yet late,
        # which ends at st - grace or after. The open windows' records are
        # among those: an open window ends at st - grace or after too.
        keep_from = st - grace - size
        records = [r for r in records if r[0] >= keep_from]
        return ([records, ends] if records or ends else None), closed

    def close_of(self, state: Any) -> int | None:
        """The stream time at which the state's next window closes (or is cleaned up)."""
        records, ends = state[0], state[1]
        times = []
        if ends:
            times.append(ends[0] + self.grace + 1)
        if records:
            times.append(records[0][0] + self.size + self.grace + 1)
        return min(times) if times else None


def _merging(
    aggregation: Aggregation,
) -> tuple[Callable[[], Any], Callable[[Any, Any], Any], Callable[[Any, Any], Any]]:
    merge = aggregation.merge
    assert merge is not None  # checked at declaration
    return aggregation.initial, aggregation.add, merge


Logic = HoppingLogic | SessionLogic | SlidingLogic
_NONE: Any = object()


def _first(item: list[Any]) -> Any:
    return item[0]


def logic_for(kind: WindowKind, aggregation: Aggregation, grace_ms: int) -> Logic:
    """The rules of ``kind`` (decided once, at declaration)."""
    if isinstance(kind, Hopping):
        return HoppingLogic(kind, aggregation, grace_ms)
    if isinstance(kind, Session):
        return SessionLogic(kind, aggregation, grace_ms)
    return SlidingLogic(kind, aggregation, grace_ms)
