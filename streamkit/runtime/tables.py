"""The worker's tables: a slice per table and partition, restored before the partition runs.

On assign, a partition of an agent with tables is handed to the restore
thread (:mod:`streamkit.state.restore`) and starts only once every slice is
restored; the other partitions go on meanwhile. Its tasks then run in a
context where each table's :attr:`~streamkit.state.table.Table.current` is
that partition's slice, set once per partition, never per record.

On revoke the slices are persisted by the revoke's checkpoint and closed; a
lost partition's slices are closed without persisting (their writes are
redone by the next owner). What a checkpoint does with them is in
:mod:`streamkit.runtime.checkpoint`.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from streamkit.agent import Agent
from streamkit.config import AppConfig
from streamkit.runtime.codecs import Codecs
from streamkit.runtime.offsets import Ticket
from streamkit.runtime.processor import Processor
from streamkit.state.partition import CURRENT_RECORD, TablePartition, undo_writes
from streamkit.state.partitioner import partitioner_for
from streamkit.state.restore import ChangelogReader, Progress, RestoreJob, Restorer, SliceSpec
from streamkit.state.store import Store
from streamkit.state.table import NO_VALUE, Table
from streamkit.types import TopicPartition

log = structlog.get_logger("streamkit.tables")


def with_record(processor: Processor, exactly_once: bool) -> Processor:
    """Wrap an agent with tables: each record is the current one while it runs.

    Exactly once, a failed attempt's table writes are undone before the record
    is retried or dead-lettered, as its held records are dropped.
    """
    set_record = CURRENT_RECORD.set
    sync = processor.sync
    if sync is not None:
        if not exactly_once:

            def record_sync(msg: Any, ticket: Ticket) -> None:
                set_record(ticket)
                sync(msg, ticket)

        else:

            def record_sync(msg: Any, ticket: Ticket) -> None:
                set_record(ticket)
                try:
                    sync(msg, ticket)
                except BaseException:
                    undo_writes(ticket)
                    raise

        return replace(processor, sync=record_sync)
    run = processor.run_async
    assert run is not None

    async def record_async(msg: Any, ticket: Ticket) -> None:
        set_record(ticket)
        try:
            await run(msg, ticket)
        except BaseException:
            if exactly_once:
                undo_writes(ticket)
            raise

    return replace(processor, run_async=record_async)


class WorkerTables:
    """Every table slice of one worker, by partition (event-loop thread, unless said).

    Args:
        agents: The worker's agents; those with tables get slices.
        config: The settings (``state_dir``, ``state_store``, the guarantee).
        codecs: The worker's serdes.
        reader: Opens a changelog reader (called on the restore thread).
        on_error: A restore failed for a reason a retry cannot fix.
    """

    def __init__(
        self,
        agents: Sequence[Agent],
        config: AppConfig,
        codecs: Codecs,
        reader: Callable[[], ChangelogReader],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.by_topic: dict[str, tuple[Table, ...]] = {
            a.source.name: a.tables for a in agents if a.tables
        }
        self._exactly_once = config.exactly_once
        self._partitioner = partitioner_for(config.librdkafka("producer"))
        self._codecs = {
            t.name: codecs(t.changelog(None)) for ts in self.by_topic.values() for t in ts
        }
        self._root = (
            None if config.state_store == "memory" else Path(config.state_dir) / config.group_id
        )
        self._on_error = on_error
        self.restorer = Restorer(
            reader,
            config.state_store,
            skip_uncommitted=not config.exactly_once,
            earliest=config.auto_offset_reset == "earliest",
        )
        self.slices: dict[Any, list[TablePartition]] = {}
        self._jobs: dict[Any, RestoreJob] = {}
        self._paths: dict[Any, list[Path | None]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def __bool__(self) -> bool:
        return bool(self.by_topic)

    def uses(self, topic: str) -> bool:
        """Whether the agent reading ``topic`` has tables."""
        return topic in self.by_topic

    # -- assign, revoke, loss ------------------------------------------------

    def assign(self, tp: TopicPartition, start: Callable[[contextvars.Context], None]) -> None:
        """Restore ``tp``'s slices, then ``start(context)`` on the loop (fetcher thread)."""
        tables = self.by_topic[tp.topic]
        paths = [
            None if self._root is None else self._root / t.name / str(tp.partition) for t in tables
        ]
        specs = [
            SliceSpec(t.name, t.changelog_name, path, bool(t.ttl_ms))
            for t, path in zip(tables, paths, strict=True)
        ]
        loop = self.loop
        assert loop is not None

        def ready(stores: list[Store], partitions: int) -> None:  # restore thread
            loop.call_soon_threadsafe(self._ready, tp, job, tables, stores, partitions, start)

        def failed(exc: BaseException) -> None:  # restore thread
            loop.call_soon_threadsafe(self._on_error, exc)

        job = RestoreJob(tp.topic, tp.partition, specs, ready, failed)
        job.origin = any(t.windowed for t in tables)
        old = self._jobs.get(tp)
        if old is not None:
            old.cancelled = True
        self._jobs[tp] = job
        self._paths[tp] = paths
        self.restorer.submit(job)

    def _ready(
        self,
        tp: TopicPartition,
        job: RestoreJob,
        tables: tuple[Table, ...],
        stores: list[Store],
        partitions: int,
        start: Callable[[contextvars.Context], None],
    ) -> None:
        if job.cancelled or self._jobs.get(tp) is not job:
            for store in stores:
                store.close()
            self._unlock(tp, job)
            return
        context = contextvars.copy_context()
        slices = []
        for table, store in zip(tables, stores, strict=True):
            codec = self._codecs[table.name]
            part = TablePartition(
                table,
                tp.partition,
                partitions,
                store,
                codec.key,
                codec.value,
                self._partitioner,
                self._exactly_once,
            )
            part.origin = job.committed
            context.run(table.current.set, part)
            slices.append(part)
        self.slices[tp] = slices
        start(context)

    def release(self, tp: TopicPartition) -> None:
        """The partition leaves (any thread): a restore in progress stops."""
        job = self._jobs.get(tp)
        if job is not None:
            job.cancelled = True

    def close(self, tp: TopicPartition) -> None:
        """Close ``tp``'s slices and let go of their directories (loop thread)."""
        job = self._jobs.pop(tp, None)
        for part in self.slices.pop(tp, ()):
            part.close()
        if job is not None:
            self._unlock(tp, job)

    def _unlock(self, tp: TopicPartition, job: RestoreJob) -> None:
        for spec in job.slices:
            self.restorer.unlock(spec.path)

    def close_all(self) -> None:
        """Close every slice (shutdown) and end the restore thread."""
        for tp in list(self.slices) + list(self._jobs):
            self.release(tp)
            self.close(tp)
        self.restorer.stop()

    # -- what the checkpoint and the commit plumbing tell --------------------

    def committed(self, tp: Any, offset: int) -> None:
        """At least once: a commit of ``offset`` was confirmed; persist what it covers."""
        for part in self.slices.get(tp, ()):
            part.committed(offset)

    def reset(self, tp: Any) -> None:
        """Exactly once, after an abort: forget ``tp``'s uncommitted writes."""
        for part in self.slices.get(tp, ()):
            part.reset()

    def restoring(self) -> list[str]:
        """``table[partition]`` of each restore in progress (for ``/readyz``; any thread)."""
        return [f"{p.table}[{p.partition}]" for p in self.restorer.restoring()]

    def restores(self) -> list[Progress]:
        """The latest restore of each table partition (for ``/metrics``; any thread)."""
        return list(self.restorer.progress.values())

    def lookup(self, table: str, key: str, timeout: float) -> tuple[int, dict[str, Any]]:
        """``GET /tables/<table>/<key>`` (HTTP thread): answered on the loop, between records.

        Returns:
            ``(status, body)``: 200 with the value; 404 for an unknown table
            or key; 421 for a key whose partition another worker owns (the
            body names it); 503 while that partition restores.
        """
        found = next((t for ts in self.by_topic.values() for t in ts if t.name == table), None)
        loop = self.loop
        if found is None:
            return 404, {"error": f"no table {table!r}", "tables": sorted(self._codecs)}
        if loop is None or loop.is_closed():
            return 503, {"error": "the worker is not running"}
        codec = self._codecs[table]
        try:
            kb = codec.key.serialize(found.key_from_text(key))
        except Exception as exc:
            return 400, {"error": f"cannot encode key {key!r}: {exc}"}
        topic = next(t for t, ts in self.by_topic.items() if found in ts)
        future = asyncio.run_coroutine_threadsafe(self._lookup(found, topic, kb, key), loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            return 503, {"error": "the worker's loop did not answer in time"}

    async def _lookup(
        self, table: Table, topic: str, kb: bytes, key: str
    ) -> tuple[int, dict[str, Any]]:
        for tp, parts in self.slices.items():
            if tp.topic != topic:
                continue
            part = next(p for p in parts if p.table is table)
            partition = self._partitioner(kb, part.partitions)
            if partition != tp.partition:
                continue
            value = part.get_bytes(kb)
            if value is NO_VALUE:
                return 404, {"table": table.name, "key": key, "partition": partition}
            return 200, {"table": table.name, "key": key, "partition": partition, "value": value}
        owned = sorted(tp.partition for tp in self.slices if tp.topic == topic)
        counts = [ps[0].partitions for ps in self.slices.values() if ps]
        where: int | None = self._partitioner(kb, counts[0]) if counts else None
        restoring = [p.partition for p in self.restorer.restoring() if p.table == table.name]
        if where is not None and where in restoring:
            return 503, {"error": "restoring", "partition": where}
        return 421, {
            "error": "another worker owns this key's partition; ask it, or use "
            "`streamkit tables get`",
            "partition": where,
            "owned_here": owned,
        }
