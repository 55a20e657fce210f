"""The clock seam: where policy time comes from.

Policies that depend on elapsed time (the commit interval, timers and
crontabs, retry backoff and retry-tier due times) read a :class:`Clock` instead of the ``time``
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

import asyncio
import contextlib
import threading
import time
from typing import Protocol

# 2024-01-01T00:00:00Z: a fixed epoch, so record timestamps in tests are the
# same on every run and every machine.
DEFAULT_EPOCH_S = 1_704_067_200.0


class Clock(Protocol):
    """A source of time; ``monotonic`` and ``time`` may be called from any thread, never block."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; only differences matter."""
        ...

    def time(self) -> float:
        """Seconds since the Unix epoch, for record timestamps."""
        ...

    async def sleep_until(self, when: float) -> None:
        """Return once :meth:`time` has reached ``when`` (at once if it has already).

        Awaited on an event loop (the scheduler's timers); cancellable.
        """
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic` and :func:`time.time`."""

    def monotonic(self) -> float:
        """See :func:`time.monotonic`."""
        return time.monotonic()

    def time(self) -> float:
        """See :func:`time.time`."""
        return time.time()

    async def sleep_until(self, when: float) -> None:
        """:func:`asyncio.sleep` for the wall-clock seconds left until ``when``."""
        await asyncio.sleep(max(when - time.time(), 0.0))

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to: deterministic intervals, timestamps and ticks.

    :meth:`sleep_until` waits for :meth:`advance`, which may be called from
    another thread than the one whose event loop is waiting (a test thread
    driving workers on a loop thread): each waiter is woken on its own loop.

    Args:
        epoch: What :meth:`time` returns before the first :meth:`advance`.
    """

    def __init__(self, epoch: float = DEFAULT_EPOCH_S) -> None:
        self._epoch = epoch
        self._elapsed = 0.0
        # advance() may race with readers on other threads; a float read is
        # atomic, the read-modify-write in advance() is what needs the lock.
        self._lock = threading.Lock()
        # sleep_until() callers: (when, their loop, the future advance() resolves).
        self._waiters: list[tuple[float, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

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
            now = self._epoch + self._elapsed
            due = [w for w in self._waiters if w[0] <= now]
            self._waiters = [w for w in self._waiters if w[0] > now]
        for _, loop, future in due:
            # A loop that closed meanwhile has no one left to wake.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, future)

    async def sleep_until(self, when: float) -> None:
        """Return once :meth:`advance` has moved :meth:`time` to ``when`` or past it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = (when, loop, future)
        with self._lock:
            if self._epoch + self._elapsed >= when:
                return
            self._waiters.append(waiter)
        try:
            await future
        finally:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def __repr__(self) -> str:
        return f"ManualClock(elapsed={self._elapsed}s, time={self.time()})"


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():  # cancelled meanwhile: nothing to wake
        future.set_result(None)
