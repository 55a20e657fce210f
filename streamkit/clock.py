"""The clock seam: where policy time comes from.

Policies that depend on elapsed time (the commit interval today; retry
backoff and timers later) read a :class:`Clock` instead of the ``time``
module, so a test can move time forward by exactly the amount it wants
instead of sleeping. Deadlines that only guard against hangs (the revoke
budget, the shutdown timeout) stay on real time on purpose: a frozen test
clock must never turn a stuck drain into an endless one.

Example::

    clock = ManualClock()
    committer = Committer(submit, every=1000, interval=1.0, clock=clock.monotonic)
    clock.advance(1.0)  # the next check finds a time-based commit due
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

# 2024-01-01T00:00:00Z: a fixed epoch, so record timestamps in tests are the
# same on every run and every machine.
DEFAULT_EPOCH_S = 1_704_067_200.0


class Clock(Protocol):
    """A source of time; both methods are called from any thread and must not block."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; only differences matter."""
        ...

    def time(self) -> float:
        """Seconds since the Unix epoch, for record timestamps."""
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic` and :func:`time.time`."""

    def monotonic(self) -> float:
        """See :func:`time.monotonic`."""
        return time.monotonic()

    def time(self) -> float:
        """See :func:`time.time`."""
        return time.time()

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to: deterministic intervals and timestamps.

    Args:
        epoch: What :meth:`time` returns before the first :meth:`advance`.
    """

    def __init__(self, epoch: float = DEFAULT_EPOCH_S) -> None:
        self._epoch = epoch
        self._elapsed = 0.0
        # advance() may race with readers on other threads; a float read is
        # atomic, the read-modify-write in advance() is what needs the lock.
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        """Seconds advanced since the clock was made."""
        return self._elapsed

    def time(self) -> float:
        """``epoch`` plus the seconds advanced."""
        return self._epoch + self._elapsed

    def advance(self, seconds: float) -> None:
        """Move time forward; a negative amount is refused (clocks do not go back).

        Raises:
            ValueError: ``seconds`` is negative.
        """
        if seconds < 0:
            raise ValueError(f"a clock cannot go back; got advance({seconds})")
        with self._lock:
            self._elapsed += seconds

    def __repr__(self) -> str:
        return f"ManualClock(elapsed={self._elapsed}s, time={self.time()})"
