"""A worker's topic tables: global tables and source tables, read from their topics, then followed.

Global tables are read whole by :meth:`WorkerTopicTables.load`, before the
worker subscribes (on an executor thread), so no record is processed
against a table that is not all there. That call also checks that every
source table's topic is co-partitioned with the stream joined to it.

A source table's partition *p* is read to its end by :meth:`load_partition`
when the stream partition *p* is assigned, before its first record, and
dropped when the partition leaves (:meth:`release`): it is held only where
its stream partition is.

A follower thread then polls every held table partition for new records
(every ``poll_s``), decodes them, and hands each batch to the event loop,
which applies it between two records. A record that does not decode is
logged and skipped: the table keeps the key's previous value.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from streamkit.errors import DeclarationError
from streamkit.runtime.codecs import Codec
from streamkit.state.restore import ChangelogReader
from streamkit.state.topic_table import GlobalTable, SourceTable, TopicTable
from streamkit.types import TopicPartition

log = structlog.get_logger("streamkit.tables")

# How often the follower asks for new records: an update is visible to
# records processed about this long after it was written.
FOLLOW_POLL_S = 0.2
# A source table partition that cannot be read (the broker away) is tried
# again this often, as long as its stream partition stays assigned.
_LOAD_RETRY_S = 1.0

Batch = list[tuple[Any, Any]]


@dataclass(eq=False)
class Followed:
    """One table partition a worker holds, and how far it has read and applied it."""

    table: TopicTable
    partition: int
    view: dict[Any, Any]
    position: int = 0  # read up to (follower or loading thread)
    applied: int = 0  # applied up to (loop thread)
    released: bool = field(default=False)

    @property
    def topic(self) -> str:
        """The table's topic."""
        return self.table.source.name


class WorkerTopicTables:
    """Every topic table of one worker: its copies, and the thread that follows them.

    Args:
        global_tables: The app's global tables.
        joins: The source tables of each agent, by the agent's source topic.
        codecs: Each table's topic serdes, by table name.
        reader: Opens a reader (called on the loading and following threads).
        poll_s: How often the follower looks for new records.
    """

    def __init__(
        self,
        global_tables: Sequence[GlobalTable],
        joins: Mapping[str, Sequence[SourceTable]],
        codecs: dict[str, Codec],
        reader: Callable[[], ChangelogReader],
        poll_s: float = FOLLOW_POLL_S,
    ) -> None:
        self.global_tables = list(global_tables)
        self.joins = {topic: list(tables) for topic, tables in joins.items() if tables}
        self.views: dict[str, dict[Any, Any]] = {t.name: {} for t in self.global_tables}
        self._codecs = codecs
        self._reader = reader
        self._poll_s = poll_s
        self._lock = threading.Lock()
        # Global tables' partitions, then each assigned stream partition's
        # source table partitions (added and dropped on the loop thread).
        self._globals: list[Followed] = []
        self._partitions: dict[TopicPartition, list[Followed]] = {}
        self._loading: dict[TopicPartition, list[Followed]] = {}
        self._spare: list[ChangelogReader] = []
        self.skipped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def uses(self, topic: str) -> bool:
        """Whether the agent reading ``topic`` joins source tables."""
        return topic in self.joins

    def bind(self, tp: TopicPartition, set_var: Callable[[Any, Any], object]) -> None:
        """Set each table's view for ``tp``'s task: ``set_var(table.current, view)``."""
        for table in self.global_tables:
            set_var(table.current, self.views[table.name])
        for followed in self._partitions.get(tp, ()):
            set_var(followed.table.current, followed.view)

    # -- load ----------------------------------------------------------------

    def load(self) -> None:
        """Check the joins, then read every global table to its end (executor; the loop waits).

        Raises:
            DeclarationError: A table's topic does not exist, or a source
                table's topic has another partition count than its stream.
        """
        reader = self._borrow()
        try:
            for stream, joined in self.joins.items():
                for source_table in joined:
                    self._check_copartitioned(reader, stream, source_table)
            for table in self.global_tables:
                count = self._partitions_of(reader, table)
                view = self.views[table.name]
                for partition in range(count):
                    followed = Followed(table, partition, view)
                    self._read_to_end(reader, followed)
                    followed.applied = followed.position
                    self._globals.append(followed)
                log.info(
                    "global table loaded", table=table.name, keys=len(view), topic=table.source.name
                )
        finally:
            self._give_back(reader)

    def _partitions_of(self, reader: ChangelogReader, table: TopicTable) -> int:
        count = reader.partitions(table.source.name)
        if count is None:
            raise DeclarationError(
                f"{table.kind} table {table.name}: topic {table.source.name} does not exist; "
                "create it (streamkit topics create) and produce the table's data to it"
            )
        return count

    def _check_copartitioned(
        self, reader: ChangelogReader, stream: str, table: SourceTable
    ) -> None:
        count = self._partitions_of(reader, table)
        mine = reader.partitions(stream)
        if mine is not None and mine != count:
            raise DeclarationError(
                f"table {table.name}: its topic {table.source.name} has {count} partitions and "
                f"the stream {stream} joined to it {mine}; a join on the record key needs both "
                "co-partitioned (equal partition counts, keys written alike): repartition one "
                "of them, or use app.global_table() for small reference data"
            )

    def load_partition(self, tp: TopicPartition) -> list[Followed]:
        """Read ``tp``'s source table partitions to their ends (executor thread).

        Broker errors are retried until the partition is released.
        """
        loaded = [Followed(t, tp.partition, {}) for t in self.joins[tp.topic]]
        with self._lock:
            for old in self._loading.get(tp, ()):
                old.released = True
            self._loading[tp] = loaded
        reader = self._borrow()
        try:
            for followed in loaded:
                while True:
                    try:
                        self._read_to_end(reader, followed)
                        break
                    except Exception as exc:
                        if self._stop.is_set() or loaded[0].released:
                            return loaded
                        log.warning(
                            "source table: reading the partition failed; trying again",
                            table=followed.table.name,
                            partition=tp.partition,
                            error=str(exc),
                        )
                        followed.view.clear()
                        self._stop.wait(_LOAD_RETRY_S)
                followed.applied = followed.position
            log.info(
                "source tables loaded",
                partition=f"{tp.topic}[{tp.partition}]",
                keys=sum(len(f.view) for f in loaded),
            )
            return loaded
        finally:
            self._give_back(reader)

    def attach(self, tp: TopicPartition, loaded: list[Followed]) -> bool:
        """Follow ``tp``'s loaded table partitions from now on (loop thread).

        Returns:
            False when ``tp`` left while it loaded: nothing is followed.
        """
        with self._lock:
            if self._loading.get(tp) is loaded:
                del self._loading[tp]
            if any(f.released for f in loaded):
                return False
            self._partitions[tp] = loaded
            return True

    def release(self, tp: TopicPartition) -> None:
        """``tp`` leaves (any thread): its table partitions are dropped, a load stops."""
        with self._lock:
            for followed in (*self._loading.pop(tp, ()), *self._partitions.pop(tp, ())):
                followed.released = True

    def _read_to_end(self, reader: ChangelogReader, followed: Followed) -> None:
        low, high = reader.bounds(followed.topic, followed.partition)
        followed.position = max(followed.position, low)
        for batch in self._read(reader, followed, high):
            _apply(followed.view, batch)

    def _read(self, reader: ChangelogReader, followed: Followed, end: int) -> list[Batch]:
        table, topic, partition = followed.table, followed.topic, followed.partition
        codec = self._codecs[table.name]
        out = []
        for records in reader.read(topic, partition, followed.position, end):
            batch = []
            for offset, kb, vb, _ in records:
                try:
                    key = None if kb is None else codec.key.deserialize(kb)
                    value = None if vb is None else codec.value.deserialize(vb)
                except Exception as exc:
                    self.skipped += 1
                    log.warning(
                        "table record skipped: it does not decode",
                        table=table.name,
                        record=f"{topic}[{partition}]@{offset}",
                        error=str(exc),
                    )
                    continue
                batch.append((key, value))
            out.append(batch)
        # read() returns once the position reached end (markers included).
        followed.position = end
        return out

    def _borrow(self) -> ChangelogReader:
        with self._lock:
            if self._spare:
                return self._spare.pop()
        return self._reader()

    def _give_back(self, reader: ChangelogReader) -> None:
        with self._lock:
            if not self._stop.is_set():
                self._spare.append(reader)
                return
        reader.close()

    # -- follow (while the worker runs) --------------------------------------

    def follow(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the follower thread; batches are applied on ``loop``."""
        self.loop = loop
        self._thread = threading.Thread(target=self._run, name="streamkit-tables", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        reader = self._reader()
        try:
            while not self._stop.wait(self._poll_s):
                try:
                    self._poll(reader)
                except Exception as exc:  # the broker away: the next round tries again
                    log.warning("topic tables: reading updates failed", error=str(exc))
        finally:
            reader.close()

    def _held(self) -> Iterator[Followed]:
        with self._lock:
            held = [*self._globals, *(f for fs in self._partitions.values() for f in fs)]
        return iter(held)

    def _poll(self, reader: ChangelogReader) -> None:
        loop = self.loop
        assert loop is not None
        for followed in self._held():
            _, high = reader.bounds(followed.topic, followed.partition)
            if high <= followed.position or followed.released:
                continue
            batches = self._read(reader, followed, high)
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._applied, followed, batches, followed.position)

    def _applied(self, followed: Followed, batches: list[Batch], position: int) -> None:
        # Loop thread, between two records. A released partition's view is
        # gone with its task; applying to it would be harmless but useless.
        if followed.released:
            return
        for batch in batches:
            _apply(followed.view, batch)
        followed.applied = position

    def behind(self, ends: Callable[[str, int], int]) -> list[str]:
        """Table partitions not applied up to ``ends(topic, partition)`` yet (the test harness)."""
        with self._lock:
            loading = [f"{tp}: source tables loading" for tp in self._loading]
        return loading + [
            f"{f.table.kind} table {f.table.name} topic {f.topic}[{f.partition}] read to "
            f"{f.applied}, end {end}"
            for f in self._held()
            if (end := ends(f.topic, f.partition)) > f.applied
        ]

    def stop(self) -> None:
        """End the follower thread and close the readers."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            spare, self._spare = self._spare, []
        for reader in spare:
            reader.close()


def _apply(view: dict[Any, Any], batch: Batch) -> None:
    for key, value in batch:
        if value is None:
            view.pop(key, None)
        else:
            view[key] = value
