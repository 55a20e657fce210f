"""A worker's global tables: read whole before the group is joined, then followed.

:meth:`WorkerGlobals.load` runs before the worker subscribes (on an executor
thread), so no record is processed against a table that is not all there.
Then a follower thread polls each table topic's partitions for new records
(every ``poll_s``), decodes them, and hands each batch to the event loop,
which applies it between two records. A record that does not decode is
logged and skipped: the table keeps the key's previous value.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from streamkit.errors import DeclarationError
from streamkit.runtime.codecs import Codec
from streamkit.state.global_table import GlobalTable
from streamkit.state.restore import ChangelogReader

log = structlog.get_logger("streamkit.tables")

# How often the follower asks for new records: an update is visible to
# records processed about this long after it was written.
GLOBAL_POLL_S = 0.2


class WorkerGlobals:
    """Every global table of one worker: its copy of each, and the thread that follows them.

    Args:
        tables: The app's global tables.
        codecs: Each table's source serdes, by table name.
        reader: Opens a reader (called on the loading and following threads).
        poll_s: How often the follower looks for new records.
    """

    def __init__(
        self,
        tables: Sequence[GlobalTable],
        codecs: dict[str, Codec],
        reader: Callable[[], ChangelogReader],
        poll_s: float = GLOBAL_POLL_S,
    ) -> None:
        self.tables = list(tables)
        self.views: dict[str, dict[Any, Any]] = {t.name: {} for t in self.tables}
        self._codecs = codecs
        self._reader = reader
        self._poll_s = poll_s
        # Read up to (follower thread), and applied up to (loop thread).
        self.positions: dict[tuple[str, int], int] = {}
        self.applied: dict[tuple[str, int], int] = {}
        self.skipped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def bind(self, set_var: Callable[[Any, Any], object]) -> None:
        """Set each table's view in a context: ``set_var(table.current, view)``."""
        for table in self.tables:
            set_var(table.current, self.views[table.name])

    # -- load (before the group is joined) -----------------------------------

    def load(self) -> None:
        """Read every table topic to its end now (executor thread; the loop waits)."""
        reader = self._reader()
        try:
            for table in self.tables:
                topic = table.source.name
                count = reader.partitions(topic)
                if count is None:
                    raise DeclarationError(
                        f"global table {table.name}: topic {topic} does not exist; create it "
                        "(streamkit topics create) and produce the reference data to it"
                    )
                view: dict[Any, Any] = {}
                for partition in range(count):
                    low, high = reader.bounds(topic, partition)
                    self.positions[(topic, partition)] = low
                    for batch in self._read(reader, table, partition, low, high):
                        _apply(view, batch)
                self.views[table.name].update(view)
                self.applied.update(self.positions)
                log.info("global table loaded", table=table.name, keys=len(view), topic=topic)
        finally:
            reader.close()

    def _read(
        self, reader: ChangelogReader, table: GlobalTable, partition: int, start: int, end: int
    ) -> list[list[tuple[Any, Any]]]:
        codec = self._codecs[table.name]
        topic = table.source.name
        out = []
        for records in reader.read(topic, partition, start, end):
            batch = []
            for offset, kb, vb, _ in records:
                try:
                    key = None if kb is None else codec.key.deserialize(kb)
                    value = None if vb is None else codec.value.deserialize(vb)
                except Exception as exc:
                    self.skipped += 1
                    log.warning(
                        "global table record skipped: it does not decode",
                        table=table.name,
                        record=f"{topic}[{partition}]@{offset}",
                        error=str(exc),
                    )
                    continue
                batch.append((key, value))
            out.append(batch)
        # read() returns once the position reached end (markers included).
        self.positions[(topic, partition)] = end
        return out

    # -- follow (while the worker runs) --------------------------------------

    def follow(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the follower thread; batches are applied on ``loop``."""
        self.loop = loop
        self._thread = threading.Thread(target=self._run, name="streamkit-globals", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        reader = self._reader()
        try:
            while not self._stop.wait(self._poll_s):
                try:
                    self._poll(reader)
                except Exception as exc:  # the broker away: the next round tries again
                    log.warning("global tables: reading updates failed", error=str(exc))
        finally:
            reader.close()

    def _poll(self, reader: ChangelogReader) -> None:
        loop = self.loop
        assert loop is not None
        partitions = list(self.positions.items())
        for table in self.tables:
            topic = table.source.name
            view = self.views[table.name]
            for (name, partition), position in partitions:
                if name != topic:
                    continue
                _, high = reader.bounds(topic, partition)
                if high <= position:
                    continue
                batches = self._read(reader, table, partition, position, high)
                if not loop.is_closed():
                    loop.call_soon_threadsafe(
                        self._applied,
                        view,
                        batches,
                        (topic, partition),
                        self.positions[(topic, partition)],
                    )

    def _applied(
        self,
        view: dict[Any, Any],
        batches: list[list[tuple[Any, Any]]],
        where: tuple[str, int],
        position: int,
    ) -> None:
        # Loop thread, between two records.
        for batch in batches:
            _apply(view, batch)
        self.applied[where] = position

    def behind(self, ends: Callable[[str, int], int]) -> list[str]:
        """Table partitions not read up to ``ends(topic, partition)`` yet (the test harness)."""
        return [
            f"global table topic {topic}[{partition}] read to {position}, end {end}"
            for (topic, partition), position in list(self.applied.items())
            if (end := ends(topic, partition)) > position
        ]

    def stop(self) -> None:
        """End the follower thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _apply(view: dict[Any, Any], batch: list[tuple[Any, Any]]) -> None:
    for key, value in batch:
        if value is None:
            view.pop(key, None)
        else:
            view[key] = value
