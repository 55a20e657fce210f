"""Scheduled functions: ``@app.timer(every=30)`` and ``@app.crontab("*/5 * * * *")``.

In a group of several workers each tick runs on exactly one of them: the
worker that owns partition 0 of the app's one-partition ``<app>.timers``
topic. Ownership moves with the consumer group (cooperatively, so the old
owner has stopped before the new one starts), and ticks are aligned to the
clock (every 30 s means at :00 and :30), so a handover neither doubles nor
shifts the schedule. Ticks missed while no worker owns the timers are
skipped, not caught up.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streamkit.errors import DeclarationError
from streamkit.topics import Topic


@dataclass(frozen=True, slots=True)
class Timer:
    """A declared scheduled function.

    Attributes:
        name: Unique within the app.
        fn: ``def``/``async def`` taking ``()`` or ``(ctx)``; a returned value
            (or list) is emitted to each topic in ``emits``.
        emits: Topics it may emit to.
        every: Period in seconds (ticks aligned to multiples of it), or None.
        cron: A crontab expression (UTC), or None.
        is_async: Whether ``fn`` is a coroutine function.
        takes_ctx: Whether ``fn`` takes a context.
    """

    name: str
    fn: Callable[..., Any]
    emits: tuple[Topic | str, ...]
    every: float | None
    cron: str | None
    is_async: bool
    takes_ctx: bool

    def next_fire(self, now: float) -> float:
        """The first tick strictly after ``now`` (seconds since the epoch)."""
        if self.every is not None:
            return (math.floor(now / self.every) + 1) * self.every
        from croniter import croniter

        assert self.cron is not None
        start = datetime.fromtimestamp(now, UTC)
        following: datetime = croniter(self.cron, start).get_next(datetime)
        return following.timestamp()


def declare_timer(
    fn: Callable[..., Any],
    *,
    every: float | None,
    cron: str | None,
    emits: Sequence[Topic | str],
    name: str | None,
) -> Timer:
    """Inspect ``fn`` once and build its :class:`Timer`.

    Raises:
        DeclarationError: Bad period, bad crontab, or a signature that does not fit.
    """
    timer_name = name or getattr(fn, "__name__", "")
    if not timer_name or timer_name == "<lambda>":
        raise DeclarationError("a timer needs a name: pass name= for lambdas")
    if every is not None and not every > 0:
        raise DeclarationError(f"timer {timer_name}: every must be a positive number of seconds")
    if cron is not None:
        from croniter import croniter

        if not croniter.is_valid(cron):
            raise DeclarationError(f"timer {timer_name}: invalid crontab {cron!r}")
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len([p for p in params if p.default is p.empty]) > 1:
        raise DeclarationError(f"timer {timer_name}: must take () or (ctx)")
    return Timer(
        name=timer_name,
        fn=fn,
        emits=tuple(emits),
        every=every,
        cron=cron,
        is_async=inspect.iscoroutinefunction(fn),
        takes_ctx=bool(params),
    )
