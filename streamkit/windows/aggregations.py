"""What a window computes: an accumulator started empty, each record added in.

An :class:`Aggregation` is three plain functions, fixed at declaration:
``initial()`` makes an empty accumulator, ``add(acc, value)`` folds a record
in, and ``merge(a, b)`` combines two accumulators. Merging is what session
windows do when a record bridges two sessions, and what sliding windows do
to combine their records, so those two kinds need it; the fixed kinds never
call it.

Accumulators are stored in the window store's changelog with its value
serde (JSON unless ``state_serde`` says otherwise), so they must be values
that serde can encode: numbers, strings, lists, dicts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Extract = Callable[[Any], Any]


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class Aggregation:
    """How records fold into a window's value.

    Attributes:
        name: For ``repr`` and the docs (``count``, ``sum``...).
        initial: Makes the accumulator of an empty window.
        add: ``(acc, value) -> acc``: one record folded in.
        merge: ``(acc, acc) -> acc``, or ``None`` when there is no way to
            combine two (then only tumbling and hopping windows take it).
    """

    name: str
    initial: Callable[[], Any]
    add: Callable[[Any, Any], Any]
    merge: Callable[[Any, Any], Any] | None = None


def count() -> Aggregation:
    """The number of records in the window."""
    return Aggregation("count", lambda: 0, lambda acc, _: acc + 1, lambda a, b: a + b)


def sum_of(of: Extract = _identity) -> Aggregation:
    """The sum of ``of(value)`` over the window's records."""
    return Aggregation("sum", lambda: 0, lambda acc, v: acc + of(v), lambda a, b: a + b)


def _pick(better: Callable[[Any, Any], Any], of: Extract, name: str) -> Aggregation:
    def add(acc: Any, value: Any) -> Any:
        x = of(value)
        return x if acc is None else better(acc, x)

    def merge(a: Any, b: Any) -> Any:
        return b if a is None else a if b is None else better(a, b)

    return Aggregation(name, lambda: None, add, merge)


def min_of(of: Extract = _identity) -> Aggregation:
    """The smallest ``of(value)`` in the window."""
    return _pick(min, of, "min")


def max_of(of: Extract = _identity) -> Aggregation:
    """The largest ``of(value)`` in the window."""
    return _pick(max, of, "max")


def reduce(fn: Callable[[Any, Any], Any], of: Extract = _identity) -> Aggregation:
    """``fn`` folded over ``of(value)`` of the window's records (the first one starts it).

    ``fn`` also merges two partial results, so it must be associative
    (``operator.add``, ``max``, a dict union) for sessions and sliding windows.
    """
    return _pick(fn, of, "reduce")


def aggregate(
    initial: Callable[[], Any],
    add: Callable[[Any, Any], Any],
    merge: Callable[[Any, Any], Any] | None = None,
) -> Aggregation:
    """A user aggregation: ``initial()``, ``add(acc, value)``, ``merge`` (sessions, sliding)."""
    return Aggregation("aggregate", initial, add, merge)
