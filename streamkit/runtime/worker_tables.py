"""The worker's tables: restored before their partitions start, flushed before they commit.

Split from :mod:`streamkit.runtime.worker`, like its commit and transaction
duties. A partition of an agent with tables starts only once its slices are
restored (:mod:`streamkit.runtime.tables`); at least once, a revoke or a
shutdown first gets the leaving partitions' changelog acknowledged, and a
partition whose changelog did not go through is left out of the commit.
Exactly once the transaction does that (:mod:`streamkit.runtime.checkpoint`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from typing import Any

from streamkit.agent import Agent
from streamkit.app import App
from streamkit.backends.base import Backend
from streamkit.config import AppConfig
from streamkit.errors import DeclarationError
from streamkit.runtime.bounds import Bounds
from streamkit.runtime.checkpoint import StateCheckpoints
from streamkit.runtime.codecs import Codecs
from streamkit.runtime.partition import PartitionWorker
from streamkit.runtime.tables import WorkerTables
from streamkit.runtime.topic_tables import Followed, WorkerTopicTables
from streamkit.types import TopicPartition


class TableDuties:
    """The base of :class:`~streamkit.runtime.worker.Worker`: its tables in assign and revoke.

    The annotations are the part of the worker these duties use.
    """

    agents: list[Agent]
    config: AppConfig
    bounds: Bounds | None
    workers: dict[Any, PartitionWorker]
    tables: WorkerTables | None
    topic_tables: WorkerTopicTables | None
    state_checkpoints: StateCheckpoints | None
    _loop: asyncio.AbstractEventLoop | None

    def _fail(self, exc: BaseException) -> None:
        raise NotImplementedError

    def _new_tables(self, backend: Backend) -> WorkerTables:
        if self.bounds is not None:
            # A replay would write the live tables' changelogs, and read
            # state the live group keeps changing.
            raise DeclarationError(
                "agents with tables cannot be replayed: the replay would write the live "
                f"tables' changelogs ({', '.join(a.name for a in self.agents if a.tables)})"
            )
        config = self.config
        return WorkerTables(
            self.agents,
            config,
            Codecs(config),
            lambda: backend.reader(config),
            on_error=self._fail,
        )

    def _new_topic_tables(self, app: App, backend: Backend) -> WorkerTopicTables | None:
        joins = {a.source.name: a.joins for a in self.agents if a.joins}
        if not app.global_tables and not joins:
            return None
        config = self.config
        codecs = Codecs(config)
        tables = [*app.global_tables.values(), *(t for ts in joins.values() for t in ts)]
        return WorkerTopicTables(
            list(app.global_tables.values()),
            joins,
            {t.name: codecs(t.source) for t in tables},
            lambda: backend.reader(config),
        )

    def _start(self, worker: PartitionWorker) -> None:
        """Start ``worker`` on the loop now, or once its tables are restored (fetcher thread)."""
        loop = self._loop
        assert loop is not None
        if self.tables is not None and self.tables.uses(worker.tp.topic):
            self.tables.assign(worker.tp, functools.partial(self._start_restored, worker))
        elif self.topic_tables is None:
            loop.call_soon_threadsafe(worker.start)
        else:
            loop.call_soon_threadsafe(self._start_restored, worker, contextvars.copy_context())

    def _start_restored(self, worker: PartitionWorker, context: contextvars.Context) -> None:
        # Loop thread. A partition revoked while it restored never starts.
        if self.workers.get(worker.tp) is not worker or worker.revoked:
            return
        topic_tables = self.topic_tables
        if topic_tables is not None and topic_tables.uses(worker.tp.topic):
            # Its source tables next, read on an executor thread: the loop
            # goes on processing the partitions that are ready.
            loop = self._loop
            assert loop is not None
            loading = loop.run_in_executor(None, topic_tables.load_partition, worker.tp)
            loading.add_done_callback(functools.partial(self._start_loaded, worker, context))
            return
        self._start_now(worker, context)

    def _start_loaded(
        self,
        worker: PartitionWorker,
        context: contextvars.Context,
        loading: asyncio.Future[list[Followed]],
    ) -> None:
        topic_tables = self.topic_tables
        assert topic_tables is not None
        if loading.cancelled():
            return
        if (exc := loading.exception()) is not None:
            self._fail(exc)
            return
        attached = topic_tables.attach(worker.tp, loading.result())
        if attached and self.workers.get(worker.tp) is worker and not worker.revoked:
            self._start_now(worker, context)

    def _start_now(self, worker: PartitionWorker, context: contextvars.Context) -> None:
        if self.topic_tables is not None:
            self.topic_tables.bind(worker.tp, lambda var, view: context.run(var.set, view))
        worker.context = context
        worker.start()

    def _tables_leave(self, tp: TopicPartition) -> None:
        """A partition leaves (any thread): a restore or a load in progress stops."""
        if self.tables is not None:
            self.tables.release(tp)
        if self.topic_tables is not None:
            self.topic_tables.release(tp)

    def _tables_drop(self, tp: TopicPartition) -> None:
        """A lost or abandoned partition: its slices close unpersisted (any thread).

        The next owner redoes what was not committed.
        """
        loop = self._loop
        if self.topic_tables is not None:
            self.topic_tables.release(tp)
        if self.tables is not None and loop is not None and not loop.is_closed():
            self.tables.release(tp)
            loop.call_soon_threadsafe(self.tables.close, tp)

    def _tables_close(self, tp: TopicPartition) -> None:
        """A revoked partition is gone (loop thread): close its slices."""
        if self.tables is not None:
            self.tables.close(tp)

    async def _flush_tables(
        self, workers: list[PartitionWorker], reason: str
    ) -> list[PartitionWorker]:
        """At least once: ``workers``' changelog first; those without durable state stay out."""
        state = self.state_checkpoints
        if state is None or self.tables is None:
            return workers
        stateful = [w for w in workers if w.tp in self.tables.slices]
        if not stateful or await state.checkpoint(reason, leaving=stateful):
            return workers
        return [w for w in workers if w.tp not in self.tables.slices]
