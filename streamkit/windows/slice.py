"""One partition's windows: stream time, the open windows in the store, and when each closes.

The open windows of a key are one value of the window store (a table, so a
changelog-backed, restored slice per partition: :mod:`streamkit.state.partition`):

* tumbling and hopping: ``[[start, end, acc], ...]``, oldest first;
* sessions: ``[[first, last, acc], ...]``, oldest first;
* sliding: ``[[[ts, acc], ...], [end, ...]]``: the records still needed, and
  the ends of the windows not yet final (one per distinct record timestamp).

Stream time is the newest event time the partition has seen. It is stored
too, under a key no record has (:data:`STREAM_TIME_KEY`), so a restart or a
new owner goes on from the same stream time and closes nothing twice and
nothing late. It moves on records and, after ``idle`` seconds without one,
with the wall clock from where the last record left it (:meth:`WindowSlice.tick`).

An index in memory says, per close time, which keys have a window closing
then, so closing costs one heap look per record and touches only the keys
that close. It is built from the store when the slice opens (a scan of the
open windows, which are all the store holds) and again after anything that
took writes back (an aborted transaction, a failed record).

Each close is written like a record's update, on the ticket of the record
(or idle tick) that moved stream time past it: its final results and the
store's update go out in the same checkpoint, and exactly once in the same
transaction, so a crash repeats both or neither.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streamkit.state.partition import DELETED
from streamkit.state.table import NO_VALUE

if TYPE_CHECKING:
    from streamkit.state.partition import TablePartition
    from streamkit.windows.runner import WindowRun

# A key no record has: the Kafka key of a record is its bytes, and the
# window store's own stream-time entry starts with a NUL no serde writes
# first for a text key. (Keys are checked against it on the way in.)
STREAM_TIME_KEY = b"\x00streamkit:stream-time"

# emit(kb, start, end, acc, ticket): one window's result for key bytes kb.
EmitWindow = Callable[[bytes, int, int, Any, Any], None]


class WindowSlice:
    """The windows of one partition (event-loop thread, inside the partition's task).

    Args:
        run: The compiled window (kind, aggregation, grace, emit mode, outputs).
        part: The window store's slice for this partition (its ``origin``
            is where an idle tick is accounted before any record).
    """

    def __init__(self, run: WindowRun, part: TablePartition) -> None:
        self.run = run
        self.part = part
        self.stream_time = -1
        self._closes: dict[int, set[bytes]] = {}
        self._key_close: dict[bytes, int] = {}
        self._heap: list[int] = []
        self._generation = -1
        # Idle advance: stream time and wall clock when the partition last
        # went quiet; `seen` says records came since.
        self._anchor_st = -1
        self._anchor_wall: float | None = None
        self.seen = False

    # -- the index -----------------------------------------------------------

    def ensure(self) -> None:
        """Rebuild the index if the slice's writes were taken back since it was built."""
        if self._generation != self.part.generation:
            self.rebuild()

    def invalidate(self) -> None:
        """A record failed halfway: its writes are undone, so the index may be wrong."""
        self._generation = -1

    def rebuild(self) -> None:
        """Index every key's next close from the store (and its uncommitted overlay)."""
        part = self.part
        self._closes.clear()
        self._key_close.clear()
        self._heap = []
        found = part.get_bytes(STREAM_TIME_KEY)
        self.stream_time = -1 if found is NO_VALUE else int(found)
        close = self.run.close_of
        for kb, state in part.raw_items():
            if kb == STREAM_TIME_KEY:
                continue
            when = close(state)
            if when is not None:
                self._index(kb, when)
        self._generation = part.generation

    def _index(self, kb: bytes, when: int | None) -> None:
        old = self._key_close.get(kb)
        if old == when:
            return
        if old is not None:
            keys = self._closes[old]
            keys.discard(kb)
            if not keys:
                del self._closes[old]
        if when is None:
            self._key_close.pop(kb, None)
            return
        self._key_close[kb] = when
        same = self._closes.get(when)
        if same is None:
            self._closes[when] = {kb}
            heapq.heappush(self._heap, when)
        else:
            same.add(kb)

    def next_close(self) -> int | None:
        """The earliest stream time at which some window closes."""
        heap, closes = self._heap, self._closes
        while heap and heap[0] not in closes:
            heapq.heappop(heap)
        return heap[0] if heap else None

    # -- records -------------------------------------------------------------

    def advance(self, ts: int, ticket: Any, src: int) -> None:
        """Move stream time to ``ts`` if it is newer, and close what is due."""
        if ts > self.stream_time:
            self.stream_time = ts
            self.part.put(STREAM_TIME_KEY, ts, ticket, src)
        heap = self._heap
        if heap and heap[0] <= self.stream_time:
            self._close_due(ticket, src)

    def _close_due(self, ticket: Any, src: int) -> None:
        st, heap, closes = self.stream_time, self._heap, self._closes
        part, run = self.part, self.run
        while heap and heap[0] <= st:
            keys = closes.get(heapq.heappop(heap))
            if not keys:
                continue
            for kb in sorted(keys):
                state = part.get_bytes(kb)
                if state is NO_VALUE:  # gone meanwhile: the entry was stale
                    self._index(kb, None)
                    continue
                kept = run.close(kb, state, st, ticket)
                if kept is None:
                    part.put(kb, DELETED, ticket, src)
                    self._index(kb, None)
                else:
                    part.put(kb, kept, ticket, src)
                    self._index(kb, run.close_of(kept))

    def add(self, kb: bytes, ts: int, value: Any, ticket: Any, src: int) -> bool:
        """Add a record to its key's open windows; ``False`` if it is late for all of them."""
        part = self.part
        state = part.get_bytes(kb)
        new = self.run.add(
            kb, None if state is NO_VALUE else state, ts, value, self.stream_time, ticket
        )
        if new is None:
            return False
        part.put(kb, new, ticket, src)
        self._index(kb, self.run.close_of(new))
        self.seen = True
        return True

    # -- idle advance (the partition has no record to process) ---------------

    def idle_due(self, now: float) -> float | None:
        """The wall-clock time at which idle advance closes the next window, if any."""
        if self.seen or self._anchor_wall is None:
            self._anchor_st, self._anchor_wall, self.seen = self.stream_time, now, False
        idle = self.run.idle
        when = self.next_close()
        if idle is None or when is None:
            return None
        return self._anchor_wall + max(idle, (when - self._anchor_st) / 1000)

    def tick(self, now: float, ticket: Any) -> None:
        """Advance stream time with the wall clock since the partition went quiet."""
        idle, anchor = self.run.idle, self._anchor_wall
        if idle is None or anchor is None or now - anchor < idle:
            return
        # The tick's writes count as inputs of the next offset (not of the
        # last record): at least once, a restore applies them only once a
        # commit passed them, and that commit waited for their results.
        self.advance(self._anchor_st + int((now - anchor) * 1000), ticket, ticket.offset + 1)
