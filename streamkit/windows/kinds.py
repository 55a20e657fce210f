"""Window kinds: which windows a record belongs to, and when each one closes.

Times are milliseconds of event time. A window is ``[start, end)`` for the
fixed kinds (tumbling, hopping): a record at ``end`` is in the next window.
Sliding and session windows are made by their records, so their bounds are
record timestamps, both included.

Every kind answers one question for the runtime, decided once per
declaration: for a window, the stream time at which it closes. It is always
``end + grace`` (sessions: ``last record + gap + grace``), never a wall-clock
time and never a hidden default (:mod:`streamkit.windows.declaration`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from streamkit.errors import DeclarationError


class Window(NamedTuple):
    """The bounds of one window, in milliseconds since the epoch."""

    start: int
    end: int


def _ms(name: str, seconds: float) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise DeclarationError(f"{name} must be a positive number of seconds, not {seconds!r}")
    ms = round(seconds * 1000)
    if ms < 1:
        raise DeclarationError(f"{name} must be at least a millisecond, not {seconds!r}")
    return ms


@dataclass(frozen=True, slots=True)
class Hopping:
    """Fixed windows of ``size`` seconds, one starting every ``step`` seconds.

    Windows are aligned to the epoch (a 1-hour window starts on the hour), so
    every worker and every restart cuts the same windows. A record belongs to
    ``size / step`` windows.
    """

    size: float
    step: float

    def __post_init__(self) -> None:
        size, step = _ms("size", self.size), _ms("step", self.step)
        if step > size:
            raise DeclarationError(
                f"step ({self.step}s) is longer than size ({self.size}s): records between "
                "two windows would belong to none"
            )

    @property
    def size_ms(self) -> int:
        """The window length in milliseconds."""
        return _ms("size", self.size)

    @property
    def step_ms(self) -> int:
        """How far apart windows start, in milliseconds."""
        return _ms("step", self.step)

    def windows(self, ts: int) -> list[Window]:
        """The windows holding a record at ``ts``, oldest first."""
        size, step = self.size_ms, self.step_ms
        last = ts - ts % step
        first = last - ((size - 1) // step) * step
        return [Window(s, s + size) for s in range(max(first, 0), last + 1, step) if s + size > ts]


class Tumbling(Hopping):
    """Back-to-back windows of ``size`` seconds: each record is in exactly one."""

    __slots__ = ()

    def __init__(self, size: float) -> None:
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "step", size)
        Hopping.__post_init__(self)

    def __repr__(self) -> str:
        return f"Tumbling(size={self.size})"


@dataclass(frozen=True, slots=True)
class Sliding:
    """For each record, the records of its key in the ``size`` seconds up to it.

    The window of a record at ``t`` is ``[t - size, t]``, both ends included:
    a rolling aggregate ("the last 5 minutes, as of each record"). It is
    final once stream time reaches ``t + grace``; a late-arriving record
    inside it updates it until then.
    """

    size: float

    def __post_init__(self) -> None:
        _ms("size", self.size)

    @property
    def size_ms(self) -> int:
        """The look-back in milliseconds."""
        return _ms("size", self.size)


@dataclass(frozen=True, slots=True)
class Session:
    """Activity sessions: records of a key less than ``gap`` seconds apart are one session.

    A session is ``[first record, last record]``; a record within ``gap`` of
    two sessions joins them into one. It closes once stream time reaches its
    last record plus ``gap`` plus the grace.
    """

    gap: float

    def __post_init__(self) -> None:
        _ms("gap", self.gap)

    @property
    def gap_ms(self) -> int:
        """The inactivity gap in milliseconds."""
        return _ms("gap", self.gap)


WindowKind = Hopping | Sliding | Session
