"""The worker: one consumer, one producer, one event loop, many partitions.

Threads and what they own:

* the **fetcher** thread calls ``consume()`` and runs the rebalance handlers;
* the **event loop** (main thread) runs every partition worker, serves
  producer delivery reports, commits, and handles signals.

Shutdown (SIGTERM/SIGINT, or a failed record) follows the checkpoint order
of :mod:`streamkit.runtime.commit`: stop fetching, finish the records in
flight, flush the producer, commit synchronously, leave the group, all within
``shutdown_timeout``. A failed record stops the worker with exit code 1 and
its offset uncommitted, so it is redelivered after the fix; so does a final
commit that did not go through, naming the offsets it could not commit.

Commits never move a partition's offset back (:mod:`streamkit.runtime.worker_commits`).
Partitions with tables start once restored (:mod:`streamkit.runtime.worker_tables`).
Exactly once, every checkpoint is a transaction instead
(:mod:`streamkit.runtime.checkpoint`, :mod:`streamkit.runtime.worker_transactions`).
Request answers, delay tiers and rate-limit shares: :mod:`streamkit.runtime.worker_requests`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from confluent_kafka import KafkaError
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamkit.agent import Agent
from streamkit.app import App
from streamkit.backends.base import Backend
from streamkit.backends.kafka import KafkaBackend, denial, refusal
from streamkit.clock import Clock, SystemClock
from streamkit.config import AppConfig
from streamkit.errors import StreamkitError
from streamkit.runtime.bounds import Bounds
from streamkit.runtime.checkpoint import StateCheckpoints, TransactionalCheckpoints
from streamkit.runtime.codecs import Codecs
from streamkit.runtime.commit import Committer, positions
from streamkit.runtime.exactly_once import hold, hold_settling, poisoning
from streamkit.runtime.failures import Recovery
from streamkit.runtime.fetcher import Fetcher
from streamkit.runtime.partition import PartitionWorker, SliceObserver
from streamkit.runtime.processor import Processor, ProducerGate, build_processors, make_sender
from streamkit.runtime.rebalance import RebalanceHandlers
from streamkit.runtime.scheduler import Scheduler
from streamkit.runtime.stop import report_stop
from streamkit.runtime.tables import with_record
from streamkit.runtime.transaction import transactional_id
from streamkit.runtime.worker_commits import CommitDuties
from streamkit.runtime.worker_requests import RequestDuties
from streamkit.runtime.worker_revoke import RevokeDuties
from streamkit.runtime.worker_tables import TableDuties
from streamkit.runtime.worker_transactions import TransactionalDuties
from streamkit.types import TopicPartition

log = structlog.get_logger("streamkit.worker")

# How often the loop serves delivery reports and checks commits while idle.
_TICK_S = 0.02
# librdkafka's default queue.buffering.max.messages, when not set.
_QUEUE_MESSAGES = 100_000
# Share of max_buffered_records one partition may hold started but not yet
# committable: a partition stuck behind one record stops at a quarter of the
# budget, and the others keep three quarters.
_IN_FLIGHT_SHARE = 4


class Worker(TableDuties, RevokeDuties, CommitDuties, TransactionalDuties, RequestDuties):
    """Runs a set of agents of one app until stopped. Implements ``PartitionHost``."""

    def __init__(
        self,
        app: App,
        agents: Sequence[Agent],
        config: AppConfig,
        backend: Backend | None = None,
        clock: Clock | None = None,
        handle_signals: bool = True,
        bounds: Bounds | None = None,
    ) -> None:
        self.app = app
        self.agents = list(agents)
        self.config = config
        self.group = config.group_id
        self.workers: dict[Any, PartitionWorker] = {}
        self.failure: BaseException | None = None
        self.records = 0
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fetcher: Fetcher | None = None
        self._stop = asyncio.Event()
        self._signals = 0
        self._producer_errors: set[int] = set()
        self._commit_errors: set[str] = set()
        # Read by streamkit.observability from its HTTP thread: plain values.
        self.heartbeat: float | None = None  # monotonic time of the loop's last tick
        self.stats: str | None = None  # librdkafka's last statistics (JSON), if enabled
        self.commit_failures = 0
        # Per input topic, set before run() when metrics are on.
        self.on_slice: dict[str, SliceObserver] = {}
        # Off when the worker runs on a thread other than the main one (the
        # test harness): asyncio only installs signal handlers there.
        self._handle_signals = handle_signals
        # The whole group's rebalance waits for a revoke, so it gets its own
        # short budget (revoke_timeout), and always stays below librdkafka's
        # poll deadline; 80% leaves room for the synchronous commit after it.
        self._revoke_budget = min(config.revoke_timeout, config.max_poll_interval_ms / 1000 * 0.8)
        self._backend = backend = backend or KafkaBackend()
        self._capacity = int(
            config.librdkafka("producer").get("queue.buffering.max.messages", _QUEUE_MESSAGES)
        )
        self._max_in_flight = max(config.max_buffered_records // _IN_FLIGHT_SHARE, 1)
        # Shutdown's final commit, by partition, once the drain is done; a
        # revoke or loss during close() takes its partitions out (fetcher thread).
        self._final: dict[Any, KafkaTopicPartition] = {}
        self.final_commit_failed = False
        self._aborted = False  # abort(): shutdown skips the final commit
        self._clock: Clock = clock or SystemClock()
        self.bounds = bounds
        self.finished = False
        # Timers run on the worker that owns partition 0 of <app>.timers.
        self.timers_tp = (
            TopicPartition(app.timers_topic.name, 0) if app.timers and not bounds else None
        )
        self.scheduler: Scheduler | None = None
        self.statuses = None  # made by _build when an agent serves requests
        self.checkpoints: TransactionalCheckpoints | None = None
        self._fences: list[float] = []
        self._renewal: asyncio.Future[None] | None = None
        self._group_metadata: Any = None  # exactly once: the consumer's, as of its last poll
        self.transactional_id = transactional_id(config) if config.exactly_once else None
        self.tables = self._new_tables(backend) if any(a.tables for a in self.agents) else None
        self.topic_tables = self._new_topic_tables(app, backend)
        self.producer = self._new_producer()
        self._gate = ProducerGate(self.producer, self._capacity)
        if self.transactional_id is not None:
            self.checkpoints = TransactionalCheckpoints(
                self,
                self._gate,
                self._transactions(self.producer),
                config.transaction_timeout_ms,
                on_error=self._fail,
                tables=self.tables,
            )
        self.state_checkpoints: StateCheckpoints | None = None
        if self.tables is not None and self.checkpoints is None:
            self.state_checkpoints = StateCheckpoints(
                self.workers, self.producer, self.tables, self._submit_commit, budget=10.0
            )
        self._build(self.producer)
        self.rate_limits = self._new_rate_limits()
        self.consumed = dict.fromkeys(self.processors, 0)  # records handed to agents, per topic
        self.handlers = RebalanceHandlers(
            self,
            self._revoke_budget,
            log_keys={"app": app.name, "group": self.group},
            # Exactly once, a revoke ends in a transaction commit, which is
            # never given up halfway: its outcome decides what the next owner
            # redoes. It may take until librdkafka's poll deadline.
            wait=config.max_poll_interval_ms / 1000 * 0.8 if self.checkpoints else None,
            on_callback=self._note_group if self.checkpoints else None,
            on_change=self._reshare if self.rate_limits else None,
        )
        self._committer = Committer(
            self._submit_commit,
            config.commit_every,
            config.commit_interval,
            clock=self._clock.monotonic,
        )
        self.consumer = backend.consumer(
            config,
            error_cb=self._on_client_error,
            on_commit=self._on_commit,
            stats_cb=self._on_stats,
        )

    def _build(self, producer: Any) -> None:
        """Compile the agents and their failure paths over ``producer`` (again after a fence)."""
        app, config, bounds = self.app, self.config, self.bounds
        checkpoints = self.checkpoints
        if self.timers_tp:
            if self.scheduler is None:
                self.scheduler = Scheduler(
                    app,
                    list(app.timers.values()),
                    Codecs(config),
                    producer,
                    self._clock,
                    gate=checkpoints,
                )
            else:
                self.scheduler.use(producer)
        if self.statuses is None:
            self.statuses = self._new_statuses(transactional=checkpoints is not None)
        statuses = self.statuses
        self.processors = build_processors(
            app,
            self.agents,
            config,
            producer,
            bounds.redirect if bounds else None,
            wrap=(lambda p: poisoning(p, checkpoints.poison)) if checkpoints else None,
            send=hold if checkpoints else None,
            status=statuses.for_agent if statuses is not None else None,
        )
        for topic, processor in list(self.processors.items()):
            if self.tables is not None and self.tables.uses(topic):
                self.processors[topic] = with_record(processor, config.exactly_once)
        self.recoveries: dict[str, Recovery] = {}
        self.delayed_topics: set[str] = set()
        send = hold_settling if checkpoints else make_sender(producer, settling=True)
        redirect = bounds.redirect if bounds else {}
        for agent in self.agents:
            dlq = app.dead_letter_topic(agent)
            dlq_name = redirect.get(dlq.name, dlq.name) if dlq else None
            # A bounded run (replay) must not write to the live tier topics:
            # the live group reads them and would emit the records to the live
            # outputs. Tier-eligible failures are final there (dead letters).
            tiers = () if bounds else tuple(t.name for t in app.retry_topics(agent))
            recovery = Recovery(agent, self.group, dlq_name, tiers, send, self._clock)
            self._answer_requests(agent, recovery, send)
            self.recoveries[agent.source.name] = recovery
            # A retry tier is one more input of the same agent, read when due.
            for tier in tiers:
                self.processors[tier] = self.processors[agent.source.name]
                self.recoveries[tier] = recovery
                self.delayed_topics.add(tier)
            self._add_delay_tiers(agent, recovery, send)

    # -- PartitionHost: called on the fetcher thread (release and abandon: worker_revoke)

    def assign(self, tps: list[TopicPartition]) -> None:
        """Create a worker per new partition and start it on the loop."""
        loop = self._loop
        assert loop is not None
        for tp in tps:
            if tp == self.timers_tp and self.scheduler is not None:
                loop.call_soon_threadsafe(self.scheduler.start)
                continue
            processor = self.processors.get(tp.topic)
            if processor is None:
                # A timers topic with more partitions than the 1 declared
                # (made by hand, or auto-created with num.partitions): only
                # partition 0 carries timer ticks.
                log.warning("ignoring a partition no agent reads", partition=str(tp))
                continue
            worker = self.workers[tp] = self._new_worker(tp, processor)
            self._start(worker)  # once its tables are restored; the others now

    def _new_worker(self, tp: TopicPartition, processor: Processor) -> PartitionWorker:
        return PartitionWorker(
            tp,
            processor,
            self._fail,
            self._after_slice,
            recovery=self.recoveries[tp.topic],
            delayed=tp.topic in self.delayed_topics,
            on_slice=self.on_slice.get(tp.topic),
            gate=self._gate,
            max_in_flight=self._max_in_flight,
            clock=self._clock,
            limit=self.rate_limits.bucket_of(processor.agent.name),
        )

    # -- loop side -----------------------------------------------------------

    def _dispatch(self, pairs: list[tuple[PartitionWorker, list[Any]]]) -> None:
        loop = self._loop
        assert loop is not None
        loop.call_soon_threadsafe(self._feed, pairs)

    def _feed(self, pairs: list[tuple[PartitionWorker, list[Any]]]) -> None:
        for worker, msgs in pairs:
            if worker.revoked:
                worker.taken += len(msgs)
            else:
                worker.feed(msgs)
                self.records += len(msgs)
                self.consumed[worker.tp.topic] += len(msgs)

    def _after_slice(self, taken: int) -> None:
        # Called by partition tasks after each slice of work: serve delivery
        # reports (they make offsets committable) and commit when due, right
        # where progress happens rather than on a timer that busy slices delay.
        self.producer.poll(0)
        if self._committer.due(taken):
            self._commit_due()

    def _commit_due(self) -> None:
        if self.state_checkpoints is not None:
            self._committer.reset()
            self.state_checkpoints.request()
        elif self.checkpoints is None:
            self._committer.commit_async(self.workers)
        else:
            self._committer.reset()
            self.checkpoints.request()

    def _request_checkpoint(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.request()

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self._stop.set()

    def _fail_threadsafe(self, exc: BaseException) -> None:
        self._on_loop(self._fail, exc)

    def _on_loop(self, fn: Callable[[Any], object], arg: Any) -> None:
        """Run ``fn(arg)`` on the event loop soon (any thread); dropped once it is closed."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, arg)

    def _on_client_error(self, err: Any) -> None:
        if err.fatal() or err.code() == KafkaError._FATAL:
            self._fail_threadsafe(StreamkitError(f"fatal Kafka client error: {err.str()}"))
        elif (refused := refusal(err)) is not None:
            # Credentials or certificates changed under a running worker:
            # librdkafka would retry them for ever.
            self._fail_threadsafe(StreamkitError(f"cannot stay connected to Kafka: {refused}"))
        elif err.code() not in self._producer_errors:
            # Once per kind until a commit succeeds again (the cluster is
            # back): a second outage is logged like the first.
            self._producer_errors.add(err.code())
            log.warning("kafka client error; librdkafka keeps retrying", error=err.str())

    def _on_stats(self, stats: str) -> None:
        # librdkafka statistics (statistics.interval.ms, on when the HTTP port
        # is): kept as received on the fetcher thread, parsed only when scraped.
        self.stats = stats

    def _check_deliveries(self) -> None:
        """Records whose emits the broker refused go to their partition's failure path.

        Exactly once, the transaction they were in can only abort: the next
        checkpoint does, at once.
        """
        for worker in list(self.workers.values()):
            if worker.offsets.failures:
                denied = next(
                    (d for t in worker.offsets.failures if (d := denial(t.error)) is not None),
                    None,
                )
                if denied is not None:
                    # Not the record's fault: dead-lettering it would commit
                    # past every record the principal may not write. The
                    # failed tickets hold the position back.
                    self._fail(
                        StreamkitError(
                            f"{worker.tp}: the broker refused an emit: {denied}; grant it "
                            "WRITE on the agent's output topics (offsets stay uncommitted "
                            "from the first refused record on)"
                        )
                    )
                    continue
                if self.checkpoints is not None:
                    if not worker.discarded:
                        self.checkpoints.request()
                    continue
                worker.handle_failures()

    def _on_signal(self, signame: str) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second signal: exiting now without draining", signal=signame)
            os._exit(1)
        log.info("stopping", signal=signame, group=self.group)
        self._stop.set()

    async def run(self) -> int:
        """Run until a signal or a failure; returns the process exit code."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        if self.tables is not None:
            self.tables.loop = loop
        if self._handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig.name)
        if self.checkpoints is not None:
            # Before joining the group: a cluster without transactions fails
            # here, naming the setting, and a restart with the same static
            # identity aborts what its previous life left open.
            await loop.run_in_executor(
                None, self.checkpoints.transactions.init, self.config.transaction_timeout_ms
            )
        if self.topic_tables is not None:
            # Global tables whole before the group is joined: no record sees
            # half a table. The joins are checked here too, before any record.
            await loop.run_in_executor(None, self.topic_tables.load)
            self.topic_tables.follow(loop)
        if self.rate_limits:
            await loop.run_in_executor(None, self._count_partitions)
        topics = sorted(self.processors) + ([self.timers_tp.topic] if self.timers_tp else [])
        fetcher = self._fetcher = Fetcher(
            self.consumer,
            self.workers,
            self._dispatch,
            batch=self.config.fetch_batch,
            max_backlog=self.config.max_buffered_records,
            max_bytes=self.config.max_buffered_bytes,
            on_fatal=self._fail_threadsafe,
            ends={tp: end for tp, (_, end) in self.bounds.ranges.items()} if self.bounds else None,
            rate=self.bounds.rate if self.bounds else None,
            on_poll=self._note_group if self.checkpoints else None,
            clock=self._clock,
        )
        if self.bounds:
            # A replay owns its partitions outright: no group rebalancing,
            # so the live group and other replays are never disturbed.
            ranges = self.bounds.ranges
            self.consumer.assign(
                [
                    KafkaTopicPartition(tp.topic, tp.partition, start)
                    for tp, (start, _) in ranges.items()
                ]
            )
            self.assign(list(ranges))
            self._reshare()  # a bounded run owns its partitions outright: the whole rate
        else:
            self.consumer.subscribe(
                topics,
                on_assign=self.handlers.on_assign,
                on_revoke=self.handlers.on_revoke,
                on_lost=self.handlers.on_lost,
            )
        log.info(
            "started",
            app=self.app.name,
            group=self.group,
            agents=", ".join(a.name for a in self.agents),
            topics=", ".join(topics),
        )
        # The loop runs from here on: /livez leaves "starting" before the
        # fetcher can make the member ready, never after.
        self.heartbeat = time.monotonic()
        fetcher.start()
        next_progress = 0.0
        try:
            while not self._stop.is_set():
                await asyncio.sleep(_TICK_S)
                self.heartbeat = time.monotonic()  # /livez: the loop is not blocked
                self.producer.poll(0)
                self._check_deliveries()
                if self._committer.due(0):
                    self._commit_due()
                if self.bounds and time.monotonic() >= next_progress:
                    next_progress = time.monotonic() + 0.5
                    self._bounded_progress(self.bounds)
        finally:
            code = await self._shutdown(fetcher)
        return code

    async def _stop_timers(self, timeout: float) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop(timeout)

    def _bounded_progress(self, bounds: Bounds) -> None:
        """Report progress; stop once every partition is done up to its end offset."""
        done = bounds.progress(self.workers)
        if bounds.on_progress is not None:
            bounds.on_progress(done)
        if bounds.reached(done):
            self.finished = True
            self._stop.set()

    # -- read by streamkit.observability (any thread) --------------------------

    @property
    def stopping(self) -> bool:
        """Asked to stop (a signal, a failure, :meth:`stop`): draining or done."""
        return self._stop.is_set()

    @property
    def fetcher(self) -> Fetcher | None:
        """The poll thread, once :meth:`run` has created it."""
        return self._fetcher

    @property
    def transactions(self) -> tuple[int, int]:
        """Exactly once: checkpoint transactions committed and aborted."""
        c = self.checkpoints
        return (c.committed, c.aborted) if c is not None else (0, 0)

    @property
    def commits(self) -> int:
        """Asynchronous commits sent so far."""
        return self._committer.commits

    # -- driving a worker from another thread (streamkit.testing) -------------

    def stop(self) -> None:
        """Stop as on SIGTERM: drain, flush, commit, leave the group (any thread)."""
        loop = self._loop
        if loop is None:
            self._stop.set()  # not running yet: run() returns at once
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._stop.set)

    def abort(self) -> None:
        """Stop like :meth:`stop` but without the final commit (any thread).

        For a worker whose process is meant to have died (the test harness's
        ``crash_and_restart``): its group membership is already gone, so a
        commit could only fail, and its log lines would claim one was tried.
        """
        self._aborted = True
        self.stop()

    def pending(self) -> list[str]:
        """What is unfinished, one line per partition; empty when idle (loop thread).

        Idle: every record the fetcher handed over was processed and every
        record it emitted was acknowledged. Called on the loop thread, so it
        sees the partition workers between two steps, never mid-record.
        """
        return [line for w in list(self.workers.values()) if (line := w.unfinished())]

    async def _shutdown(self, fetcher: Fetcher) -> int:
        deadline = time.monotonic() + self.config.shutdown_timeout
        fetcher.stop_fetching()
        await self._stop_timers(max(deadline - time.monotonic(), 0.0) / 2)
        workers = list(self.workers.values())
        drained = await asyncio.gather(*(w.drain(deadline - time.monotonic()) for w in workers))
        if not all(drained):
            log.warning("shutdown deadline passed with records in flight; they stay uncommitted")
        if self.checkpoints is not None:
            return await self._shutdown_transactional(fetcher, deadline)
        # Tables first: a partition whose changelog did not go through is
        # left out of the final commit.
        owned_now = [w for w in workers if self.workers.get(w.tp) is w and not w.released]
        # An aborted worker "died": it flushes no changelog (its producer
        # is gone in the harness, and waiting out the checkpoint's budget
        # for acks that never come overran the shutdown timeout).
        durable = [] if self._aborted else await self._flush_tables(owned_now, "shutdown")
        self.producer.flush(max(deadline - time.monotonic(), 0.0))
        self.producer.poll(0)
        # Only partitions still owned *now*, after the flush: one revoked or
        # lost during the drain or the flush belongs to another member, and
        # committing it would move that member's offset back (a frozen member
        # losing its partitions did, when this was read before the flush).
        # Positions not yet *confirmed* are included: an async commit still
        # in flight may fail at close.
        # The same worker object, not just the partition: a partition lost and
        # assigned again meanwhile has a new worker, and this one's positions
        # are stale (committing them moved the offset back: 722 -> 35).
        owned = [w for w in durable if self.workers.get(w.tp) is w and not w.released]
        self._final = {
            TopicPartition(p.topic, p.partition): p for p in positions(owned, confirmed=True)
        }
        self._closing = True
        return await self._close(fetcher, deadline)

    async def _close(self, fetcher: Fetcher, deadline: float) -> int:
        closed = fetcher.close(lambda consumer: self._commit_final(consumer, deadline))
        try:
            await asyncio.wait_for(
                asyncio.wrap_future(closed), max(deadline - time.monotonic(), 5.0)
            )
        except TimeoutError:
            log.warning("consumer did not close in time; exiting anyway")
            if self._final:
                self._final_left("final commit did not happen", list(self._final.values()))
        if self.tables is not None:
            self.tables.close_all()
        if self.topic_tables is not None:
            self.topic_tables.stop()
        if self.statuses is not None:
            self.statuses.close()
        if self.final_commit_failed and self.failure is None:
            return 1
        return report_stop(self.failure, self.group, self.records)
