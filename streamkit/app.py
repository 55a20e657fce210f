"""``App``: the registry of an application's topics and agents.

An ``App`` only holds declarations; it never connects to Kafka. Running is the
runtime's job, reached lazily through :meth:`App.run`, so importing a pipeline
module (for tests, ``streamkit graph`` or ``topics create``) is free of I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from streamkit.agent import Agent, declare_agent
from streamkit.app_tables import TableDeclarations
from streamkit.config import AppConfig
from streamkit.delays import delay_tiers, delay_topic
from streamkit.errors import DeclarationError
from streamkit.group_by import REPARTITION, GroupBy
from streamkit.policies import DeadLetterPolicy, RetryPolicy
from streamkit.requests import replies_topic, serving, tasks_topic
from streamkit.state.table import Table
from streamkit.state.topic_table import GlobalTable, SourceTable
from streamkit.timers import Timer, declare_timer
from streamkit.topics import SerdeSpec, Topic
from streamkit.windows.aggregations import Aggregation
from streamkit.windows.declaration import DEFAULT_IDLE_S, LateFn, ResultFn, Windowed
from streamkit.windows.kinds import WindowKind

if TYPE_CHECKING:
    from streamkit.client import BlockingClient, Client

TFn = TypeVar("TFn", bound=Callable[..., Any])


class App(TableDeclarations):
    """A stream-processing application: one consumer group, many agents.

    Example::

        app = App("example")  # brokers from STREAMKIT_BROKERS
        source = app.topic("example.in", value_serde="json", partitions=4)
        sink = app.topic("example.out", value_serde="json", partitions=4)

        @app.agent(source, emits=[sink])
        def double(value, ctx):
            return {"id": value["id"], "n": value["n"] * 2}

    Args:
        name: The app name; also the consumer group id unless ``group_id`` is set.
        brokers: Bootstrap servers; default from ``STREAMKIT_BROKERS``.
        **settings: Any :class:`~streamkit.config.AppConfig` setting
            (``commit_every=500``, ``kafka={"security.protocol": "SSL"}``...).
            Checked when the app starts, so a bad value stops it before it connects.
    """

    def __init__(self, name: str, brokers: str | None = None, **settings: Any) -> None:
        self.name = name
        self.settings: dict[str, Any] = {"brokers": brokers, **settings}
        self.topics: dict[str, Topic] = {}
        self.agents: dict[str, Agent] = {}
        self.timers: dict[str, Timer] = {}
        self.tables: dict[str, Table] = {}
        self.global_tables: dict[str, GlobalTable] = {}
        self.source_tables: dict[str, SourceTable] = {}
        # Each repartition topic (group_by=) and the topic it re-keys.
        self.repartitions: dict[str, Topic] = {}

    def __repr__(self) -> str:
        return f"App({self.name!r}, topics={list(self.topics)}, agents={list(self.agents)})"

    def topic(
        self,
        name: str,
        *,
        value_serde: SerdeSpec = "json",
        key_serde: SerdeSpec = "str",
        partitions: int | None = None,
        replication: int | None = None,
        config: Mapping[str, str] | None = None,
    ) -> Topic:
        """Declare a topic; declaring the same name twice must agree.

        Args:
            name: Kafka topic name.
            value_serde: ``"bytes"``, ``"str"``, ``"json"``, ``"avro:<record name>"``
                or a codec object.
            key_serde: The same choices for keys.
            partitions: Partition count used by ``streamkit topics create``.
            replication: Replication factor used by ``streamkit topics create``
                (default: the app's ``replication`` setting, else the broker's).
            config: Topic configs used by ``streamkit topics create``.
        """
        declared = Topic(
            name,
            value_serde=value_serde,
            key_serde=key_serde,
            partitions=partitions,
            replication=replication,
            config=dict(config or {}),
        )
        existing = self.topics.get(name)
        if existing is not None and existing != declared:
            raise DeclarationError(f"topic {name} is declared twice with different settings")
        self.topics[name] = declared
        return declared

    def agent(
        self,
        source: Topic,
        *,
        emits: Sequence[Topic | str] = (),
        name: str | None = None,
        concurrency: int = 1,
        retry: RetryPolicy | None = None,
        dead_letter: DeadLetterPolicy | bool | None = None,
        tables: Sequence[Table | SourceTable] = (),
        group_by: Callable[[Any], Any] | GroupBy | None = None,
        requests: bool = False,
        delays: bool | Sequence[int] = False,
        rate_limit: str | float | None = None,
        time_limit: float | None = None,
    ) -> Callable[[TFn], TFn]:
        """Bind a function to ``source``; returns the function unchanged.

        The function takes ``(value)`` or ``(value, ctx)`` and may be ``def`` or
        ``async def``. A returned value is emitted once to each topic in
        ``emits`` with the input key; ``None`` emits nothing; a list or a
        generator emits several; ``ctx.emit(...)`` emits explicitly.

        Args:
            source: The input topic.
            emits: Topics the agent may emit to.
            name: Agent name (default: the function name).
            concurrency: For async agents, records of one partition in flight at once.
            retry: Retry policy (default: 3 quick in-place attempts).
            dead_letter: Dead-letter policy, or ``False`` to stop on a failed
                record instead (default: on, topic ``<app>.<agent>.dlq``).
            tables: Tables the agent reads and writes (from :meth:`table`), and
                source tables it joins (``app.table(..., source=topic)``).
            group_by: Re-key the source first: ``value -> key`` (or a
                :class:`~streamkit.group_by.GroupBy`). The agent then reads
                ``<app>.<agent>.repartition``, where each record is under its
                new key, and ``ctx.key`` is that key (see :mod:`streamkit.group_by`).
            requests: Answer ``ask`` and ``submit`` from :meth:`client`: the
                return value goes back to the caller, and a task's status to
                ``<app>.tasks`` (see :mod:`streamkit.requests`).
            delays: Take records sent with ``delay=``/``eta=``: ``True`` for
                the default tiers, or the tier delays in seconds; through
                ``<app>.<agent>.delay.<D>s`` topics (see :mod:`streamkit.delays`).
            rate_limit: Records the whole group starts per second: ``"100/s"``,
                ``"6000/min"``, ``"5/h"`` or a number; each worker takes the
                share of its owned partitions (docs/rate-limits.md). Retries
                count against it.
            time_limit: Seconds one call of an ``async def`` agent may take;
                past it the call is cancelled and fails with stage
                ``timeout`` (retried by ``retry``, then dead-lettered).
                Refused on sync agents, which cannot be cancelled.
        """

        def register(fn: TFn) -> TFn:
            owner = str(name or getattr(fn, "__name__", ""))
            regroup = None if group_by is None else GroupBy.of(group_by, owner)
            read = source if regroup is None else regroup.topic(self.name, owner, source)
            run: Callable[..., Any] = fn
            targets = list(emits)
            if requests:
                answered = declare_agent(fn, read, emits, name=owner or None)
                run = serving(fn, answered.takes_ctx, answered.name, *self.request_topics)
                targets += list(self.request_topics)
                for topic in self.request_topics:
                    self.topics.setdefault(topic.name, topic)
            declared = declare_agent(
                run,
                read,
                targets,
                name=name,
                concurrency=concurrency,
                retry=retry,
                dead_letter=dead_letter,
                tables=tables,
                rate_limit=rate_limit,
                time_limit=time_limit,
            )
            if requests:
                declared = dataclasses.replace(declared, requests=True)
            tiers = delay_tiers(delays, declared.name)
            if tiers:
                if declared.tables:
                    raise DeclarationError(
                        f"agent {declared.name}: delays and tables do not mix: a delay tier "
                        "is another topic, whose partitions another worker may own"
                    )
                declared = dataclasses.replace(declared, delays=tiers)
            if declared.name in self.agents:
                raise DeclarationError(
                    f"agent {declared.name} is declared twice in app {self.name}"
                )
            self._check_source(declared)
            self._bind_tables(declared)
            if regroup is not None:
                self.topics[read.name] = read
                self.repartitions[read.name] = source
                self.agent(
                    source,
                    emits=[read],
                    name=f"{declared.name}.{REPARTITION}",
                    retry=retry,
                    dead_letter=dead_letter,
                )(regroup.agent_fn(read))
            self.agents[declared.name] = declared
            for topic in (*self.failure_topics(declared), *self.delay_topics(declared)):
                self.topics.setdefault(topic.name, topic)
            return fn

        return register

    def _check_source(self, agent: Agent) -> None:
        source = agent.source
        if source.name not in self.topics:
            self.topics[source.name] = source
        for other in self.agents.values():
            if other.source.name == source.name:
                raise DeclarationError(
                    f"agents {other.name} and {agent.name} both consume {source.name}: "
                    "one consumer group reads a topic once; give one of them its own App"
                )

    def window(
        self,
        source: Topic,
        kind: WindowKind,
        *,
        name: str,
        aggregate: Aggregation,
        grace: float,
        emits: Sequence[Topic],
        emit: str = "final",
        timestamp: Callable[[Any], Any] | None = None,
        late: Topic | LateFn | None = None,
        idle: float | None = DEFAULT_IDLE_S,
        result: ResultFn | None = None,
        state_serde: SerdeSpec = "json",
        retry: RetryPolicy | None = None,
        dead_letter: DeadLetterPolicy | bool | None = None,
        group_by: Callable[[Any], Any] | GroupBy | None = None,
        rate_limit: str | float | None = None,
    ) -> Windowed:
        """Declare a windowed aggregation over a keyed topic; it runs as agent ``name``.

        Example::

            hourly = app.window(
                orders,
                Tumbling(size=3600),
                name="hourly_revenue",
                aggregate=sum_of(lambda order: order["amount"]),
                grace=60,
                emits=[revenue],
            )

        A window ``[start, end)`` closes when the partition's stream time
        reaches ``end + grace``; its result is emitted with the input key
        (see :mod:`streamkit.windows.declaration` for exactly when).

        Args:
            source: The keyed input topic.
            kind: ``Tumbling(size)``, ``Hopping(size, step)``, ``Sliding(size)``
                or ``Session(gap)``, in seconds.
            name: The agent's name; the store is ``<app>.<name>-windows.changelog``.
            aggregate: ``count()``, ``sum_of(fn)``, ``min_of(fn)``, ``max_of(fn)``,
                ``reduce(fn)`` or ``aggregate(initial, add, merge)``.
            grace: Seconds a window still takes out-of-order records after its
                end. Required: there is no default that delays results.
            emits: The topics results go to.
            emit: ``"final"`` (once per window, when it closes) or ``"current"``
                (after each record that changed it).
            timestamp: ``value -> epoch ms or aware datetime``; default: the
                record's timestamp.
            late: A topic for late records, or ``fn(value, ctx)``; default the
                topic ``<app>.<name>.late``.
            idle: Seconds without records after which stream time follows the
                wall clock, so the last window of a quiet partition closes;
                ``None`` turns that off.
            result: ``fn(key, window, value)`` for the emitted value (default
                ``{"start": ms, "end": ms, "value": value}``).
            state_serde: How open windows are stored (``json``).
            retry: Retries of records the window cannot take (a bad timestamp).
            dead_letter: Where such records go (default: the agent's DLQ).
            group_by: Window the source by another key: ``value -> key``
                (or a :class:`~streamkit.group_by.GroupBy`), through
                ``<app>.<name>.repartition``; records keep their timestamps.
            rate_limit: Records the whole group takes per second, as for
                :meth:`agent`.
        """
        regroup = None if group_by is None else GroupBy.of(group_by, name)
        windowed = Windowed(
            self.name,
            name,
            source if regroup is None else regroup.topic(self.name, name, source),
            kind,
            aggregate=aggregate,
            grace=grace,
            emits=emits,
            emit=emit,
            timestamp=timestamp,
            late=late,
            idle=idle,
            result=result,
            state_serde=state_serde,
        )
        store = windowed.store
        if self._table_named(store.name):
            raise DeclarationError(f"window {name} is declared twice in app {self.name}")
        self.tables[store.name] = store
        for topic in windowed.emit_topics:
            self.topics.setdefault(topic.name, topic)

        def run_window(value: Any, ctx: Any) -> None:
            raise RuntimeError(f"window {name} runs inside the streamkit runtime")

        self.agent(
            source,
            emits=list(windowed.emit_topics),
            name=name,
            retry=retry,
            dead_letter=dead_letter,
            tables=[store],
            group_by=regroup,
            rate_limit=rate_limit,
        )(run_window)
        declared = self.agents[name]
        self.agents[name] = dataclasses.replace(declared, window=windowed)
        return windowed

    def timer(
        self, every: float, *, emits: Sequence[Topic | str] = (), name: str | None = None
    ) -> Callable[[TFn], TFn]:
        """Run a function every ``every`` seconds on exactly one worker of the group.

        Ticks are aligned to the clock (``every=30`` fires at :00 and :30).
        A returned value (or list) is emitted to each topic in ``emits``;
        a function taking ``ctx`` may call ``ctx.emit(topic, value, key=...)``.
        """
        return self._register_timer(every=every, cron=None, emits=emits, name=name)

    def crontab(
        self, spec: str, *, emits: Sequence[Topic | str] = (), name: str | None = None
    ) -> Callable[[TFn], TFn]:
        """Run a function on a crontab schedule (UTC), on exactly one worker of the group."""
        return self._register_timer(every=None, cron=spec, emits=emits, name=name)

    def _register_timer(
        self,
        every: float | None,
        cron: str | None,
        emits: Sequence[Topic | str],
        name: str | None,
    ) -> Callable[[TFn], TFn]:
        def register(fn: TFn) -> TFn:
            declared = declare_timer(fn, every=every, cron=cron, emits=emits, name=name)
            if declared.name in self.timers:
                raise DeclarationError(f"timer {declared.name} is declared twice")
            self.timers[declared.name] = declared
            self.topics.setdefault(self.timers_topic.name, self.timers_topic)
            return fn

        return register

    @property
    def request_topics(self) -> tuple[Topic, Topic]:
        """``<app>.replies`` and ``<app>.tasks``, of the agents declared with ``requests=True``."""
        return replies_topic(self.name), tasks_topic(self.name)

    @property
    def timers_topic(self) -> Topic:
        """One partition whose owner in the group runs the timers."""
        return Topic(f"{self.name}.timers", value_serde="bytes", key_serde="bytes", partitions=1)

    def resolve_emits(self, owner: str, emits: Sequence[Topic | str]) -> tuple[Topic, ...]:
        """Resolve emit targets (agent or timer) to declared topics.

        Raises:
            DeclarationError: A target is not declared in this app.
        """
        resolved = []
        for target in emits:
            target_name = target if isinstance(target, str) else target.name
            topic = self.topics.get(target_name)
            if topic is None:
                raise DeclarationError(
                    f"{owner} emits to {target_name!r}, which app {self.name} "
                    f"does not declare; declare it with app.topic({target_name!r}, ...)"
                )
            if not isinstance(target, str) and target != topic:
                raise DeclarationError(f"{owner}: topic {target_name} declared twice")
            resolved.append(topic)
        return tuple(resolved)

    def dead_letter_topic(self, agent: Agent) -> Topic | None:
        """The agent's dead-letter topic, or ``None`` when dead-lettering is off."""
        policy = agent.dead_letter
        if not policy.enabled:
            return None
        # Raw bytes both ways: a dead letter keeps the original key and value
        # untouched, whatever their serde (or however malformed they are).
        return Topic(
            policy.topic or f"{self.name}.{agent.name}.dlq",
            value_serde="bytes",
            key_serde="bytes",
            partitions=policy.partitions or agent.source.partitions,
        )

    def retry_topics(self, agent: Agent) -> tuple[Topic, ...]:
        """The agent's delayed-retry tiers, shortest delay first."""
        return tuple(
            Topic(
                f"{self.name}.{agent.name}.retry.{delay}s",
                value_serde="bytes",
                key_serde="bytes",
                partitions=agent.source.partitions,
            )
            for delay in sorted(agent.retry.retry_topics)
        )

    def delay_topics(self, agent: Agent) -> tuple[Topic, ...]:
        """The agent's delay tiers, shortest first (empty without ``delays=``)."""
        return tuple(
            delay_topic(self.name, agent.name, d, agent.source.partitions) for d in agent.delays
        )

    def failure_topics(self, agent: Agent) -> tuple[Topic, ...]:
        """Dead-letter and retry topics of an agent, to create and to graph."""
        dlq = self.dead_letter_topic(agent)
        return (*self.retry_topics(agent), *((dlq,) if dlq else ()))

    def config(self, **overrides: Any) -> AppConfig:
        """Validate the settings (code, then environment, then defaults)."""
        return AppConfig.load(self.name, {**self.settings, **overrides}, stateful=bool(self.tables))

    def emit_targets(self, agent: Agent) -> tuple[Topic, ...]:
        """Resolve an agent's ``emits`` to declared topics.

        Raises:
            DeclarationError: An emit target is not declared in this app.
        """
        return self.resolve_emits(f"agent {agent.name}", agent.emits)

    def select(self, names: Sequence[str] = ()) -> list[Agent]:
        """The agents to run: all, or those named (``--agent``), checked up front."""
        if not self.agents and not self.timers:
            raise DeclarationError(f"app {self.name} declares no agents and no timers")
        if not names:
            return list(self.agents.values())
        unknown = [n for n in names if n not in self.agents]
        if unknown:
            raise DeclarationError(
                f"unknown agent {unknown[0]!r}; app {self.name} has: {', '.join(self.agents)}"
            )
        # An agent reading a repartition topic runs with the agent feeding
        # it: one without the other stalls or piles records up.
        wanted = set(names)
        wanted |= {f"{n}.{REPARTITION}" for n in names if f"{n}.{REPARTITION}" in self.agents}
        return [a for n, a in self.agents.items() if n in wanted]

    def client(self, **overrides: Any) -> Client:
        """A client for code that is not an agent: ``async with app.client() as c``.

        It sends to the app's topics and agents, asks ``requests=True``
        agents and waits for their answer, and submits tasks whose status and
        result it looks up (see :mod:`streamkit.client.client`).
        """
        from streamkit.client import Client  # a higher layer, like the runtime

        return Client(self, self.config(**overrides))

    def blocking_client(self, **overrides: Any) -> BlockingClient:
        """The blocking twin of :meth:`client`: ``with app.blocking_client() as c``."""
        from streamkit.client import BlockingClient

        return BlockingClient(self.client(**overrides))

    def run(self, agents: Sequence[str] = (), **overrides: Any) -> int:
        """Run the selected agents until SIGTERM/SIGINT; returns the exit code."""
        from streamkit.runtime.run import run_app  # the runtime is a higher layer

        return run_app(self, agents=agents, **overrides)
