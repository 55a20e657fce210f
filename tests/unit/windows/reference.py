"""Brute-force window results over a whole input, for comparing with the runtime.

Each function replays the arrivals of one partition in order, keeping every
accepted record, and recomputes each window from those records when it
closes: no incremental state, no index. Rules as documented in
docs/windows.md: stream time is the newest timestamp so far; a record
closes what is due before it is added; a record is late when every window it
belongs to has closed.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

Arrival = tuple[str, int, int]  # key, event time (ms), value
Result = tuple[str, int, int, int]  # key, start, end, sum of values


def hopping(
    arrivals: list[Arrival], size: int, step: int, grace: int
) -> tuple[list[Result], list[Arrival]]:
    """Tumbling (step == size) and hopping windows; results of the windows closed by the end."""
    st = -1
    members: dict[tuple[str, int], list[int]] = defaultdict(list)
    closed: set[tuple[str, int]] = set()
    results: list[Result] = []
    late: list[Arrival] = []
    for key, ts, value in arrivals:
        st = max(st, ts)
        for (k, start), values in sorted(members.items()):
            if (k, start) not in closed and start + size + grace <= st:
                closed.add((k, start))
                results.append((k, start, start + size, sum(values)))
        first = max((ts - size) // step * step, 0)
        starts = [s for s in range(first, ts + 1, step) if s <= ts < s + size]
        open_ = [s for s in starts if s + size + grace > st]
        if not open_:
            late.append((key, ts, value))
        for s in open_:
            members[(key, s)].append(value)
    return results, late


def sessions(arrivals: list[Arrival], gap: int, grace: int) -> tuple[list[Result], list[Arrival]]:
    """Session windows, regrouped from the pending records at every arrival."""
    st = -1
    pending: dict[str, list[tuple[int, int]]] = defaultdict(list)
    results: list[Result] = []
    late: list[Arrival] = []

    def groups(records: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
        out: list[list[tuple[int, int]]] = []
        for r in sorted(records):
            if out and r[0] - out[-1][-1][0] < gap:
                out[-1].append(r)
            else:
                out.append([r])
        return out

    for key, ts, value in arrivals:
        st = max(st, ts)
        for k in sorted(pending):
            keep = []
            for group in groups(pending[k]):
                if group[-1][0] + gap + grace <= st:
                    results.append((k, group[0][0], group[-1][0], sum(v for _, v in group)))
                else:
                    keep += group
            pending[k] = keep
        joins = any(g[0][0] - gap < ts < g[-1][0] + gap for g in groups(pending[key]))
        if not joins and ts + gap + grace <= st:
            late.append((key, ts, value))
        else:
            pending[key].append((ts, value))
    return results, late


def sliding(arrivals: list[Arrival], size: int, grace: int) -> tuple[list[Result], list[Arrival]]:
    """Sliding windows: one per distinct record time, ``[t - size, t]``."""
    st = -1
    accepted: dict[str, list[tuple[int, int, int]]] = defaultdict(list)  # ts, value, arrival
    windows: dict[tuple[str, int], int | None] = {}  # (key, end) -> arrival index it closed at
    results: list[Result] = []
    late: list[Arrival] = []
    for i, (key, ts, value) in enumerate(arrivals):
        st = max(st, ts)
        for (k, end), closed_at in sorted(windows.items()):
            # [t - size, t] includes t: it closes once stream time passes t + grace.
            if closed_at is None and end + grace < st:
                windows[(k, end)] = i
                total = sum(v for t, v, a in accepted[k] if end - size <= t <= end and a < i)
                results.append((k, end - size, end, total))
        own = ts + grace >= st
        containing = [
            e for (k, e), c in windows.items() if k == key and c is None and ts <= e <= ts + size
        ]
        if not own and not containing:
            late.append((key, ts, value))
            continue
        accepted[key].append((ts, value, i))
        if own and (key, ts) not in windows:
            windows[(key, ts)] = None
    return results, late


def as_results(records: list[Any]) -> list[Result]:
    """The runtime's output records as reference tuples, sorted."""
    return sorted((r.key, r.value["start"], r.value["end"], r.value["value"]) for r in records)
