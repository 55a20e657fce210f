"""Test a pipeline without a broker: its agents on an in-memory Kafka, through the real runtime.

Example::

    from streamkit.testing import TestApp
    from pipelines.example import app

    def test_double():
        with TestApp(app) as t:
            t.send("example.in", {"id": 1, "n": 21}, key="a")
            t.run_until_idle()
            assert t.output("example.out") == [{"id": 1, "n": 42}]

A :class:`TestApp` runs real workers (:class:`~streamkit.runtime.worker.Worker`):
the same fetcher thread, partition workers, commit logic and rebalance
handlers as ``streamkit run``, over a :class:`~streamkit.backends.memory.MemoryBackend`
instead of librdkafka. Each ``TestApp`` has its own broker and its own
:class:`~streamkit.clock.ManualClock`, so tests never share state and time
only moves when the test (or :meth:`TestApp.run_until_idle`) moves it.
``STREAMKIT_*`` environment variables are ignored: a test behaves the same on
every machine. What the memory broker does not model is listed in
``docs/testing.md``.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from streamkit import harness_idle as idle
from streamkit.app import App
from streamkit.backends.memory import MemoryBackend, MemoryConsumer, MemoryProducer
from streamkit.backends.memory_broker import MemoryBroker, MemoryMessage
from streamkit.clock import ManualClock
from streamkit.config import AppConfig
from streamkit.errors import SerializationError, StreamkitError
from streamkit.harness_records import DeadLetterOrigin, DeadLetterRecord, Record, topic_codecs
from streamkit.runtime.host import WorkerThread
from streamkit.runtime.worker import Worker
from streamkit.serde.base import Serde
from streamkit.topics import Topic
from streamkit.types import TopicPartition

__all__ = [
    "DeadLetterOrigin",
    "DeadLetterRecord",
    "IdleTimeout",
    "ManualClock",
    "Record",
    "TestApp",
    "WorkerStopped",
]

T = TypeVar("T")

# Placeholder bootstrap servers: the config wants host:port, nothing connects.
_MEMORY_BROKERS = "memory:9092"
# Seconds a worker may take to stop when the test ends, unless the test says
# otherwise: production's 30 s drain budget made every test with a hung
# agent wait 30 s at teardown; the memory broker drains an idle worker in ms.
DEFAULT_SHUTDOWN_TIMEOUT_S = 2.0


class IdleTimeout(StreamkitError, TimeoutError):
    """``run_until_idle`` ran out of time; ``pending`` says what was still unfinished.

    When ``shutdown_timeout`` is given, the message also says how long
    leaving the ``with`` block may then wait for the stuck worker, and how
    to change that.
    """

    def __init__(
        self, timeout: float, pending: list[str], shutdown_timeout: float | None = None
    ) -> None:
        self.pending = pending
        lines = "\n  ".join(pending) or "(nothing reported)"
        message = f"not idle after {timeout:g}s; still pending:\n  {lines}"
        if shutdown_timeout is not None:
            message += (
                f"\nleaving the `with` block waits up to {shutdown_timeout:g}s for the stuck"
                " worker to stop; change it with TestApp(app, shutdown_timeout=...)"
            )
        super().__init__(message)


class WorkerStopped(StreamkitError, RuntimeError):
    """A worker stopped on its own without an error the test could be shown (exit code kept)."""


@dataclass(eq=False)
class _Running:
    worker: Worker
    future: concurrent.futures.Future[int]
    retired: bool = False  # stopped or crashed on purpose by the harness


class TestApp:
    """Runs ``app`` on an in-memory Kafka for one test; use it as a context manager.

    Example::

        with TestApp(app, workers=2, commit_every=1) as t:
            t.send("orders.raw", order, key=order["order_id"])
            t.run_until_idle()
            assert t.output("orders.enriched")[0]["total_eur"] == 25.0

    Args:
        app: The app whose agents run.
        agents: Run only these agents (default: all), as ``--agent`` does.
        workers: How many workers (group members) to start.
        clock: The clock driving commit intervals and record timestamps.
        timeout: Default seconds for :meth:`run_until_idle` and rebalances.
        **settings: App settings for this test (``commit_every=1``...),
            over the app's own; the environment is not read.
            ``shutdown_timeout`` defaults to 2 s here, not the app's
            (30 s unless set), so a hung agent does not hold up teardown.
    """

    __test__ = False  # a harness, not a test class, whatever pytest thinks of its name

    def __init__(
        self,
        app: App,
        *,
        agents: Sequence[str] = (),
        workers: int = 1,
        clock: ManualClock | None = None,
        timeout: float = 10.0,
        **settings: Any,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.app = app
        # Tables keep their stores in memory unless a test asks for files:
        # a restart then restores from the in-memory changelog.
        defaults = {
            "shutdown_timeout": DEFAULT_SHUTDOWN_TIMEOUT_S,
            "brokers": _MEMORY_BROKERS,
            "state_store": "memory",
        }
        self.config: AppConfig = AppConfig.load(
            app.name, {**app.settings, **defaults, **settings}, env={}
        )
        self.agents = app.select(agents)
        self.clock = clock or ManualClock()
        self.broker = MemoryBroker(self.clock)
        self.timeout = timeout
        self._workers_wanted = workers
        self._codecs = topic_codecs(app, self.config)
        for topic in app.topics.values():
            self.broker.create_topic(topic.name, topic.partitions or 1)
        self._backend = MemoryBackend(self.broker)
        self._thread: WorkerThread | None = None
        self._running: list[_Running] = []
        self._failure: BaseException | None = None
        self._failure_shown = False

    def __repr__(self) -> str:
        return f"TestApp({self.app.name!r}, workers={len(self._running)}, clock={self.clock!r})"

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> TestApp:
        self._thread = WorkerThread(f"streamkit-test-{self.app.name}")
        try:
            for _ in range(self._workers_wanted):
                self._running.append(self._start_worker())
            self._wait_stable(self.timeout)
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()
        if exc is None and self._failure is not None and not self._failure_shown:
            self._failure_shown = True
            raise self._failure

    def _close(self) -> None:
        self._note_stopped()
        running, self._running = self._running, []
        try:
            for r in running:
                self._retire(r)
        finally:
            if self._thread is not None:
                self._thread.close()

    def _start_worker(self) -> _Running:
        assert self._thread is not None, "use TestApp as a context manager: with TestApp(app) as t"
        worker = Worker(
            self.app,
            self.agents,
            self.config,
            backend=self._backend,
            clock=self.clock,
            handle_signals=False,
        )
        if worker.scheduler is not None:
            # Ticks emit nothing the broker would notice when they return
            # None: the scheduler wakes run_until_idle itself.
            worker.scheduler.on_progress = self.broker.poke
        future = self._thread.start(worker)
        # A worker that stops wakes run_until_idle, which then reports why.
        future.add_done_callback(lambda _: self.broker.poke())
        return _Running(worker, future)

    def _retire(self, running: _Running, *, abort: bool = False) -> None:
        running.retired = True
        if abort:
            running.worker.abort()  # a dead process commits nothing
        else:
            running.worker.stop()
        try:
            running.future.result(self.config.shutdown_timeout + 5)
        except concurrent.futures.TimeoutError:
            raise WorkerStopped("a worker did not stop within its shutdown timeout") from None

    # -- input and output --------------------------------------------------------

    def send(
        self,
        topic: str | Topic,
        value: Any,
        *,
        key: Any = None,
        headers: Mapping[str, str | bytes] | Sequence[tuple[str, str | bytes]] | None = None,
        partition: int | None = None,
        timestamp: int | None = None,
        raw: bool = False,
    ) -> Record:
        """Append one record to a declared topic, encoded with the topic's serdes.

        Args:
            topic: A topic the app declares (name or object).
            value: The value; ``None`` sends a tombstone.
            key: The key; the partition follows from it as with librdkafka's
                default partitioner (no key: round robin).
            headers: Headers as a dict or ``[(name, value)]``.
            partition: Force a partition instead of the partitioner's choice.
            timestamp: Milliseconds since the epoch (default: the harness clock).
            raw: Send ``key`` and ``value`` as given bytes, without the serdes
                (for example malformed input).

        Returns:
            The stored record, with its partition and offset (key and value
            as bytes when ``raw``).
        """
        name, codec = self._codec(topic)
        if raw:
            raw_key, raw_value = key, value
        else:
            try:
                raw_key = None if key is None else codec[0].serialize(key)
                raw_value = None if value is None else codec[1].serialize(value)
            except SerializationError as exc:
                raise SerializationError(f"topic {name}: {exc}") from exc
        pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
        encoded = [(h, v.encode() if isinstance(v, str) else v) for h, v in pairs]
        msg = self.broker.append(name, raw_key, raw_value, encoded or None, partition, timestamp)
        return self._decode(msg, None if raw else codec)

    def records(self, topic: str | Topic) -> list[Record]:
        """Every record of ``topic``, decoded: partition 0 first, each partition in offset order.

        Kafka orders records only within a partition, so this order is the
        one that is the same on every run.
        """
        name, codec = self._codec(topic)
        # Exactly once, what a read_committed consumer downstream would see:
        # nothing of an open or aborted transaction.
        messages = self.broker.messages(name, committed_only=self.config.exactly_once)
        return [self._decode(m, codec) for m in messages]

    def output(self, topic: str | Topic) -> list[Any]:
        """The decoded values of ``topic``, in the order of :meth:`records`."""
        return [r.value for r in self.records(topic)]

    def table(self, name: str) -> dict[Any, Any]:
        """A table's contents as the workers see them now: every partition, every key.

        Read on the workers' loop, between two records, so it is one
        consistent view (writes not yet checkpointed included), once every
        partition the workers own has its slices: right after a restart or
        a rebalance, that waits for their restores.
        """
        if name not in self.app.tables:
            raise KeyError(f"app {self.app.name} has no table {name!r}: {sorted(self.app.tables)}")
        deadline = time.monotonic() + self.timeout
        while not self._on_loop(lambda: idle.tables_restored(self.workers), deadline):
            if time.monotonic() > deadline:
                raise IdleTimeout(self.timeout, ["table partitions still restoring"], 0.0)
            time.sleep(0.002)  # restores run on their own thread: poll, with the deadline
        return self._on_loop(lambda: idle.table_contents(self.workers, name), deadline)

    def dead_letters(self, agent: str) -> list[DeadLetterRecord]:
        """What ``agent`` dead-lettered: the original key and value bytes, provenance headers.

        Each is a :class:`DeadLetterRecord`: a :class:`Record` whose
        ``__streams.errors.*`` headers are also readable decoded
        (``.exception``, ``.message``, ``.attempts``, ``.stage``,
        ``.first_failure``, ``.origin``).

        Raises:
            KeyError: The app has no such agent, or its dead-lettering is off.
        """
        declared = self.app.agents.get(agent)
        topic = None if declared is None else self.app.dead_letter_topic(declared)
        if topic is None:
            raise KeyError(f"app {self.app.name} has no agent {agent!r} with a dead-letter topic")
        return [DeadLetterRecord.of(r) for r in self.records(topic)]

    def committed(self, topic: str | Topic) -> dict[int, int]:
        """The app's group's committed offset per partition of ``topic`` (only those committed)."""
        name, _ = self._codec(topic)
        found = self.broker.committed(self.config.group_id, name)
        return {tp.partition: offset for tp, offset in found.items()}

    def _codec(self, topic: str | Topic) -> tuple[str, tuple[Serde, Serde]]:
        name = topic if isinstance(topic, str) else topic.name
        codec = self._codecs.get(name)
        if codec is None:
            raise KeyError(
                f"app {self.app.name} declares no topic {name!r}; it has: {', '.join(self._codecs)}"
            )
        return name, codec

    @staticmethod
    def _decode(msg: MemoryMessage, codec: tuple[Serde, Serde] | None) -> Record:
        key, value = msg.key(), msg.value()
        return Record(
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            key=key if codec is None or key is None else codec[0].deserialize(key),
            value=value if codec is None or value is None else codec[1].deserialize(value),
            headers=msg.headers() or [],
            timestamp=msg.timestamp()[1],
        )

    # -- running -----------------------------------------------------------------

    def run_until_idle(self, timeout: float | None = None, *, commit: bool = True) -> None:
        """Process until nothing is left to do, then (by default) commit.

        Idle: every record of the agents' input topics was fetched, processed,
        and everything it emitted was acknowledged; records emitted to topics
        the app itself consumes count too, so a chain of agents runs to its
        end. With ``commit=True``, the clock then moves one
        ``commit_interval`` so the runtime's own time-based commit runs, and
        this returns once the group's committed offsets reach the end of
        every input partition. With ``commit=False`` nothing more is
        committed than the runtime committed by itself (``commit_every``):
        what :meth:`crash_and_restart` then redelivers. Exactly once
        (``processing_guarantee="exactly_once"``), ``commit=False`` returns
        with the transaction still open: its outputs are invisible to
        :meth:`records`, and a crash then aborts it.

        A record whose agent raises is retried and dead-lettered by the
        agent's policies (see :meth:`dead_letters`), and counts as done;
        only a failure that stops the worker is raised here.

        Raises:
            IdleTimeout: Not idle within ``timeout`` seconds (default: the
                ``TestApp`` timeout); the error lists what was still pending.
            AgentError: A record failed and the agent does not dead-letter
                (``dead_letter=False``): the worker stopped, as ``streamkit
                run`` would; the agent's exception is the ``__cause__``.
            StreamkitError: Another failure stopped a worker (for example
                ``DeadLetterLimitError``).
        """
        budget = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        broker = self.broker
        while True:
            with broker.progress:
                seen = broker.progress_seq
            self._raise_if_stopped()
            pending = self._on_loop(self._pending, deadline)
            holding = bool(pending) and self._on_loop(self._holding, deadline)
            wake = self._on_loop(self._waiting_until, deadline) if pending else None
            if wake is not None and not holding:
                # Only retry backoffs and retry tiers not yet due are left:
                # their time passes at once, on the clock they wait on.
                self.clock.advance(max(wake - self.clock.time(), 0.0))
            elif holding:
                # Exactly once, outputs wait for the checkpoint (the
                # transaction), which is due when commit_interval passed on
                # the runtime's clock; commit=False stops right before it.
                if not commit:
                    return
                self.clock.advance(self.config.commit_interval)
            elif not pending and not commit:
                # What the runtime committed by itself counts once the broker
                # answered it: returning while its commit was on the way made
                # committed() racy (commit_every=1 on a loaded machine gave {}
                # where {0: 1} was committed).
                if not self._on_loop(self._commit_in_flight, deadline):
                    return
                pending = ["a commit the runtime sent, not answered yet"]
            elif not pending:
                pending = self._commit_lag()
                if not pending:
                    return
                # The runtime commits when commit_interval has passed on its
                # clock: move it, and the next slice or tick commits. Not
                # while a commit it sent is still unanswered: a second move
                # would make the next commit due at once, and the test's next
                # records would be committed behind its back.
                if not self._on_loop(self._commit_in_flight, deadline):
                    self.clock.advance(self.config.commit_interval)
            with broker.progress:
                while broker.progress_seq == seen:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise IdleTimeout(budget, pending, self.config.shutdown_timeout)
                    broker.progress.wait(remaining)

    def _pending(self) -> list[str]:
        return idle.pending(self.broker, self.config.group_id, self.workers)

    def _waiting_until(self) -> float | None:
        return idle.waiting_until(self.workers)

    def _holding(self) -> bool:
        return idle.holding(self.workers)

    def _commit_in_flight(self) -> bool:
        return idle.commit_in_flight(self.workers)

    def _commit_lag(self) -> list[str]:
        return idle.commit_lag(self.broker, self.config.group_id, self.workers)

    def _raise_if_stopped(self) -> None:
        self._note_stopped()
        if self._failure is not None:
            self._failure_shown = True
            raise self._failure

    def _note_stopped(self) -> None:
        """Keep the first failure of a worker that stopped without being asked to."""
        for r in self._running:
            if self._failure is not None:
                return
            if r.retired or not r.future.done():
                continue
            error = r.future.exception()
            code = None if error is not None else r.future.result()
            failure = r.worker.failure or error
            self._failure = failure or WorkerStopped(f"a worker exited with code {code}")

    def _on_loop(self, fn: Callable[[], T], deadline: float) -> T:
        assert self._thread is not None, "use TestApp as a context manager: with TestApp(app) as t"
        try:
            return self._thread.call(fn, max(deadline - time.monotonic(), 0.1))
        except concurrent.futures.TimeoutError:
            raise IdleTimeout(
                self.timeout, ["the event loop did not answer"], self.config.shutdown_timeout
            ) from None

    # -- group changes -----------------------------------------------------------

    @property
    def workers(self) -> list[Worker]:
        """The running workers, in start order: for looking inside (checkpoints, identity)."""
        return [r.worker for r in self._running]

    def assignment(self) -> list[list[TopicPartition]]:
        """The partitions each worker owns now, by worker index."""
        with self.broker.progress:
            members = [_consumer(r).member for r in self._running]
            return [sorted(m.owned) if m is not None else [] for m in members]

    def rebalance(
        self,
        workers: int | None = None,
        *,
        move: Mapping[tuple[str, int], int] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Change the group and wait until the new assignment is in place.

        Workers that leave do so gracefully (drain, commit, revoke), as on
        SIGTERM; partitions move cooperatively: revoked and committed by the
        old owner before the new owner starts at the committed offset.

        Args:
            workers: Start or stop workers until this many run.
            move: Move partitions to a worker: ``{("orders.raw", 0): 1}``.
            timeout: Seconds for the group to settle (default: the ``TestApp`` timeout).
        """
        if workers is not None:
            if workers < 1:
                raise ValueError(f"workers must be at least 1, got {workers}")
            while len(self._running) < workers:
                self._running.append(self._start_worker())
            while len(self._running) > workers:
                self._retire(self._running.pop())
        for (topic, partition), index in (move or {}).items():
            member = _consumer(self._running[index]).member
            if member is None:
                raise ValueError(f"worker {index} has not joined the group yet")
            self.broker.move(self.config.group_id, [TopicPartition(topic, partition)], member)
        self._wait_stable(self.timeout if timeout is None else timeout)

    def crash_and_restart(self, worker: int | None = None) -> None:
        """Kill workers without a commit or a goodbye, then start fresh ones in their place.

        Like ``kill -9``: the crashed worker revokes nothing and commits
        nothing more; its group membership ends at once (Kafka would wait
        for the session timeout). The new worker starts at the committed
        offsets, so records processed since the last commit come again.

        Args:
            worker: The index of the worker to crash (default: all of them).
        """
        indexes = range(len(self._running)) if worker is None else [worker]
        for i in indexes:
            crashed = self._running[i]
            _consumer(crashed).crash()
            # Exactly once, the worker's producer is a GuardedProducer around it.
            producer = getattr(crashed.worker.producer, "client", crashed.worker.producer)
            assert isinstance(producer, MemoryProducer)
            producer.crash()
            self._retire(crashed, abort=True)
            self._running[i] = self._start_worker()
        self._wait_stable(self.timeout)

    def expire_session(self, worker: int = 0) -> None:
        """Let a worker's group session time out while it is still alive.

        Its partitions are taken away at once; the worker hears it in
        ``on_lost``, drops them without committing (a commit now could
        overwrite the new owner's progress), then rejoins. Records it
        processed since its last commit are processed again.
        """
        _consumer(self._running[worker]).expire()
        self._wait_stable(self.timeout)

    def _wait_stable(self, budget: float) -> None:
        deadline = time.monotonic() + budget
        broker, group = self.broker, self.config.group_id
        with broker.progress:
            while not (
                all(_consumer(r).member is not None for r in self._running)
                and broker.stable(group)
                and not self._timers_starting()
            ):
                self._raise_if_stopped()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pending = broker.caught_up(group) or ["workers joining"]
                    raise IdleTimeout(budget, pending, self.config.shutdown_timeout)
                broker.progress.wait(remaining)

    def _timers_starting(self) -> bool:
        """Whether a worker owns the timers partition but has not started its timers (lock held).

        Waited for, so a clock the test moves right away finds the ticks
        scheduled from the clock's time before the move, not after it.
        """
        for r in self._running:
            member, scheduler = _consumer(r).member, r.worker.scheduler
            if scheduler is None or scheduler.running or member is None:
                continue
            if r.worker.timers_tp in member.owned:
                return True
        return False


def _consumer(running: _Running) -> MemoryConsumer:
    consumer = running.worker.consumer
    assert isinstance(consumer, MemoryConsumer)
    return consumer
