"""Runs an app's timers while this worker owns the timers partition.

Started by the assign handler for ``<app>.timers[0]`` and stopped by the
revoke, lost and shutdown paths, so at most one worker of the group ticks
at a time. A timer's emits are produced like an agent's, but belong to no
input offset: there is nothing to commit for them.

Ticks follow the worker's :class:`~streamkit.clock.Clock`: the real one in
production, the test harness's :class:`~streamkit.clock.ManualClock` in
tests, where ``clock.advance(5)`` fires exactly the ticks of those 5 seconds.
Every tick the clock passed while the scheduler slept is fired, in order;
a tick whose function runs past the next tick's time skips it instead of
queueing it (a slow timer must not fall ever further behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog

from streamkit.app import App
from streamkit.clock import Clock, SystemClock
from streamkit.runtime.codecs import Codecs
from streamkit.runtime.offsets import Ticket
from streamkit.runtime.processor import Send, make_sender
from streamkit.timers import Timer
from streamkit.topics import Topic
from streamkit.types import Headers

log = structlog.get_logger("streamkit.timers")


class TimerContext:
    """What a timer function gets as ``ctx``.

    Attributes:
        timer: The timer's name.
        fired_at: The scheduled time of this tick (seconds since the epoch).
    """

    __slots__ = ("_emit", "fired_at", "timer")

    def __init__(self, timer: str, fired_at: float, emit: Any) -> None:
        self.timer = timer
        self.fired_at = fired_at
        self._emit = emit

    def emit(
        self, topic: str | Topic, value: Any, key: Any = None, headers: Headers | None = None
    ) -> None:
        """Emit one record to a topic in the timer's ``emits``."""
        self._emit(topic, value, key, headers)


class _TickTicket(Ticket):
    """Delivery accounting for a tick's emits: failures are logged, not committed."""

    def __call__(self, err: Any, _msg: Any) -> None:
        # The ticket itself is the delivery callback (make_sender), so this,
        # not ack, is what librdkafka calls.
        self.pending -= 1
        if err is not None:
            log.error("timer emit failed", error=str(err))

    ack = __call__


class Released(Protocol):
    """What a tick's emits wait for, exactly once: no commit in progress."""

    async def until_released(self) -> None:
        """Return once nothing is being committed."""


class Scheduler:
    """The timer tasks of one worker (event-loop thread only).

    Args:
        app: The app.
        timers: Its timers.
        codecs: Serdes of the topics they emit to.
        producer: The worker's producer.
        clock: When ticks are due (default: the real clock).
        gate: Exactly once, the checkpoints: a tick's emits wait for a commit in progress.

    Attributes:
        on_progress: Called (loop thread, must not block) once the timers
            started and after every tick; the test harness wakes
            ``run_until_idle`` with it. ``None``: nobody listens.
    """

    def __init__(
        self,
        app: App,
        timers: Sequence[Timer],
        codecs: Codecs,
        producer: Any,
        clock: Clock | None = None,
        gate: Released | None = None,
    ) -> None:
        self._app = app
        # Exactly once: a tick's emits go out together once it returned,
        # never while a checkpoint commits (the producer refuses records then).
        self._gate = gate
        self._timers = list(timers)
        self._clock: Clock = clock or SystemClock()
        self._send: Send = make_sender(producer)
        self._targets = {
            t.name: {
                topic.name: codecs(topic) for topic in app.resolve_emits(f"timer {t.name}", t.emits)
            }
            for t in self._timers
        }
        self._tasks: list[asyncio.Task[None]] = []
        # Per timer, the tick it waits for; set in start(), so a clock moved
        # right after the timers started cannot skip the first ticks.
        self._due: dict[str, float] = {}
        self._firing: set[str] = set()
        self._unacked: list[tuple[str, _TickTicket]] = []
        self.on_progress: Callable[[], None] | None = None
        self.ticks = 0

    def use(self, producer: Any) -> None:
        """Emit through this producer from now on (a new one, after a fence)."""
        self._send = make_sender(producer)

    @property
    def running(self) -> bool:
        """Whether this worker currently runs the timers."""
        return bool(self._tasks)

    def start(self) -> None:
        """Begin ticking (this worker now owns the timers partition)."""
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        now = self._clock.time()
        self._due = {t.name: t.next_fire(now) for t in self._timers}
        self._tasks = [loop.create_task(self._run(t), name=f"timer {t.name}") for t in self._timers]
        log.info("timers started", timers=", ".join(t.name for t in self._timers))
        self._progressed()

    def pending(self) -> list[str]:
        """Ticks due on the clock but not fired, or fired with emits not yet acknowledged.

        Empty when the timers have caught up with the clock (or do not run
        here). Loop thread, like :meth:`Worker.pending`.
        """
        if not self._tasks:
            return []
        now = self._clock.time()
        self._unacked = [(name, t) for name, t in self._unacked if t.pending > 0]
        out = [
            f"timer {name}: tick due at {due:.3f} not fired yet"
            for name, due in self._due.items()
            if due <= now and name not in self._firing
        ]
        out += [f"timer {name}: tick running" for name in sorted(self._firing)]
        out += [f"timer {name}: {t.pending} emits waiting for acks" for name, t in self._unacked]
        return out

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop ticking; a tick in progress gets ``timeout`` seconds to finish."""
        tasks, self._tasks = self._tasks, []
        self._due, self._firing, self._unacked = {}, set(), []
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout)
            log.info("timers stopped")

    async def _run(self, timer: Timer) -> None:
        clock = self._clock
        while True:
            due = self._due[timer.name]
            await clock.sleep_until(due)
            woke = clock.time()
            self._firing.add(timer.name)
            try:
                await self._fire(timer, due)
            finally:
                self._firing.discard(timer.name)
            following = timer.next_fire(due)
            if following <= woke:
                # Passed while this tick waited (a test's clock.advance, or a
                # stalled loop): the latest such tick fires once, late; older
                # ones are skipped, so an hour's stall is one catch-up tick,
                # not 3,600 of them.
                while (later := timer.next_fire(following)) <= woke:
                    following = later
            else:
                # If the tick ran past the next one, skip to the first one
                # still ahead.
                following = timer.next_fire(max(due, clock.time()))
            self._due[timer.name] = following
            self._progressed()

    def _progressed(self) -> None:
        if self.on_progress is not None:
            self.on_progress()

    async def _fire(self, timer: Timer, due: float) -> None:
        targets = self._targets[timer.name]
        ticket = _TickTicket(-1)
        held: list[tuple[str, bytes, bytes | None, Headers | None]] | None = (
            [] if self._gate is not None else None
        )

        def emit(topic: str | Topic, value: Any, key: Any, headers: Headers | None) -> None:
            name = topic if isinstance(topic, str) else topic.name
            codec = targets.get(name)
            if codec is None:
                raise ValueError(f"timer {timer.name} does not declare {name!r} in emits")
            raw_key = None if key is None else codec.key.serialize(key)
            if held is not None:
                held.append((name, codec.value.serialize(value), raw_key, headers))
            else:
                self._send(name, codec.value.serialize(value), raw_key, headers, ticket)

        ctx = TimerContext(timer.name, due, emit)
        args = (ctx,) if timer.takes_ctx else ()
        try:
            result = timer.fn(*args)
            if timer.is_async:
                result = await result
            if result is not None:
                items = result if isinstance(result, (list, types.GeneratorType)) else [result]
                for item in items:
                    for name in targets:
                        emit(name, item, None, None)
        except Exception:
            # A failing tick must not stop the worker's agents; the next tick runs.
            log.exception("timer failed", timer=timer.name)
            held = None
        if held and self._gate is not None:
            await self._gate.until_released()
            for record in held:
                self._send(*record, ticket)
        if ticket.pending:
            self._unacked.append((timer.name, ticket))
        self.ticks += 1
