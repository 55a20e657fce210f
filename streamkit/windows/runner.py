"""A windowed aggregation compiled for one worker: the agent function and its idle hook.

:func:`streamkit.runtime.processor.compile_agent` builds one :class:`WindowRun`
per windowed agent, with the agent's emitter, so results go out exactly like
any agent's emits: at once and acknowledged to the input's ticket at least
once; held for the checkpoint's transaction exactly once. Everything that
can be decided once (the kind's rules, the result shape, where late records
go) is decided here; per record there is a context-variable read, the
kind's ``add``, and one store write.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streamkit.context import Context
from streamkit.errors import SerializationError
from streamkit.windows.kinds import Hopping, Tumbling, Window
from streamkit.windows.logic import logic_for
from streamkit.windows.slice import STREAM_TIME_KEY, WindowSlice

if TYPE_CHECKING:
    from streamkit.runtime.processor import Emitter
    from streamkit.windows.declaration import Windowed

# A late record's headers, beside its own and its source's.
LATE_HEADER = "streamkit-late-window"
EVENT_TIME_HEADER = "streamkit-event-time"
STREAM_TIME_HEADER = "streamkit-stream-time"


class WindowRun:
    """One windowed agent in one worker (event-loop thread).

    Attributes:
        late: Records that arrived after every window they belong to closed.
        closed: Windows closed so far.
    """

    def __init__(
        self, windowed: Windowed, emitter: Emitter, decode_key: Callable[[bytes], Any]
    ) -> None:
        self.windowed = windowed
        self.store = windowed.store
        self.idle = windowed.idle
        self.late = 0
        self.closed = 0
        logic = logic_for(windowed.kind, windowed.aggregation, windowed.grace_ms)
        self._add, self._close, self.close_of = logic.add, logic.close, logic.close_of
        self._final = windowed.emit == "final"
        targets = emitter.defaults
        self._outputs = tuple(t for t in targets if t.name in windowed.output_names)
        late = windowed.late
        self._late_target = next((t for t in targets if late and t.name == late.name), None)
        self._send = emitter.send
        # A result is stamped with the last event time its window covers:
        # end - 1 ms of a half-open [start, end), the end of an inclusive one.
        # Replays stamp it alike, and a window over results (hourly into
        # daily) counts it in the right one.
        self._open_end = 1 if isinstance(windowed.kind, (Tumbling, Hopping)) else 0
        self._decode_key = decode_key
        self._result = windowed.result
        self._timestamp = windowed.timestamp

    # -- the slice of the partition being processed --------------------------

    def slice(self) -> WindowSlice:
        """This partition's windows (made on first use, index checked)."""
        part = self.store.current.get()
        if part is None:
            raise RuntimeError(f"window {self.windowed.name} used outside its partition's task")
        windows: WindowSlice | None = part.extension
        if windows is None or windows.run is not self:
            # A new worker's run (a producer replaced after a fence) keeps
            # the slice's state; only the outputs' sender changed.
            windows = part.extension = WindowSlice(self, part)
        windows.ensure()
        return windows

    # -- the agent function (value, ctx) -------------------------------------

    def process(self, value: Any, ctx: Context) -> None:
        """Add one record: advance stream time, close what is due, update its windows."""
        kb = ctx.raw_key
        if kb is None or kb == STREAM_TIME_KEY:
            raise ValueError(
                f"window {self.windowed.name} aggregates per key, and this record has "
                + ("no key" if kb is None else "a reserved key")
            )
        ts = ctx.timestamp if self._timestamp is None else _event_ms(self._timestamp(value))
        windows = self.slice()
        ticket = ctx.ticket
        try:
            windows.advance(ts, ticket, ticket.offset)
            if not windows.add(kb, ts, value, ticket, ticket.offset):
                self._on_late(value, ctx, ts, windows.stream_time)
        except BaseException:
            windows.invalidate()
            raise

    def add(self, kb: bytes, state: Any, ts: int, value: Any, st: int, ticket: Any) -> Any:
        """The kind's ``add``, emitting each updated window in ``current`` mode."""
        new, updated = self._add(state, ts, value, st)
        if new is not None and not self._final:
            for start, end, acc in updated:
                self._emit(kb, start, end, acc, ticket)
        return new

    def close(self, kb: bytes, state: Any, st: int, ticket: Any) -> Any:
        """The kind's ``close``, emitting each closed window in ``final`` mode."""
        kept, closed = self._close(state, st)
        self.closed += len(closed)
        if self._final:
            for start, end, acc in closed:
                self._emit(kb, start, end, acc, ticket)
        return kept

    def _emit(self, kb: bytes, start: int, end: int, acc: Any, ticket: Any) -> None:
        result = self._result
        value = (
            {"start": start, "end": end, "value": acc}
            if result is None
            else result(self._decode_key(kb), Window(start, end), acc)
        )
        stamp = max(end - self._open_end, 0)
        for target in self._outputs:
            try:
                encoded = target.encode_value(value)
            except SerializationError as exc:
                raise SerializationError(f"topic {target.name}: {exc}") from exc
            self._send(target, encoded, kb, None, ticket, stamp)

    def _on_late(self, value: Any, ctx: Context, ts: int, st: int) -> None:
        self.late += 1
        target = self._late_target
        if target is not None:
            headers = [
                (LATE_HEADER, self.windowed.name.encode()),
                (EVENT_TIME_HEADER, str(ts).encode()),
                (STREAM_TIME_HEADER, str(st).encode()),
                ("streamkit-source", f"{ctx.topic}[{ctx.partition}]@{ctx.offset}".encode()),
                *ctx.headers,
            ]
            raw = None if value is None else target.encode_value(value)
            self._send(target, raw, ctx.raw_key, headers, ctx.ticket)
        elif self.windowed.on_late is not None:
            self.windowed.on_late(value, ctx)

    # -- the partition worker's idle hook ------------------------------------

    def idle_due(self, now: float) -> float | None:
        """When idle advance closes this partition's next window (wall clock), if ever."""
        return self.slice().idle_due(now)

    def origin(self) -> int | None:
        """The committed offset the slice was restored at (ticks before any record)."""
        return self.slice().part.origin

    def tick(self, now: float, ticket: Any) -> None:
        """No record for ``idle`` seconds: move stream time on and close what is due."""
        windows = self.slice()
        try:
            windows.tick(now, ticket)
        except BaseException:
            windows.invalidate()
            raise


def _event_ms(found: Any) -> int:
    if isinstance(found, datetime.datetime):
        if found.tzinfo is None:
            raise ValueError(f"timestamp= returned a naive datetime ({found}); give it a tzinfo")
        return int(found.timestamp() * 1000)
    if isinstance(found, bool) or not isinstance(found, (int, float)):
        raise ValueError(f"timestamp= must return epoch milliseconds or a datetime, not {found!r}")
    return int(found)
