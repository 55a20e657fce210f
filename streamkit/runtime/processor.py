"""Agents compiled into plain per-record callables.

Everything that can be decided before the first record is decided here, once
per agent: which serdes decode and encode, whether a context is built, how
results are emitted. What remains per record is a handful of direct calls:
decode, call the agent, encode, ``producer.produce``.

Each emitted record is tied to its input record's :class:`Ticket`; the
delivery callback decrements the ticket, so an input offset becomes
committable only once the broker acknowledged everything it produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from confluent_kafka import KafkaException

from streamkit.agent import Agent, Shape
from streamkit.config import AppConfig
from streamkit.context import KEEP_KEY, Context, StatusFn
from streamkit.errors import (
    AgentError,
    DeclarationError,
    SerdeError,
    SerializationError,
    StateError,
)
from streamkit.runtime.codecs import Codec, Codecs
from streamkit.runtime.failures import produce_failure
from streamkit.runtime.offsets import Ticket
from streamkit.topics import Topic
from streamkit.types import Headers
from streamkit.windows.runner import WindowRun

if TYPE_CHECKING:
    from streamkit.app import App

ProduceFn = Callable[..., None]

# How long one producer.poll waits for room when librdkafka's queue is full.
# Partition tasks stop starting records well before that (ProducerGate), so
# this wait only serves a single record that fans out past the gate's headroom.
_QUEUE_FULL_WAIT_S = 0.05


@dataclass(frozen=True, slots=True)
class _Target:
    name: str
    encode_value: Callable[[Any], bytes]
    encode_key: Callable[[Any], bytes]


class Send(Protocol):
    """``send(topic, value, key, headers, ticket, timestamp=0)``: one encoded record for a ticket.

    ``timestamp`` is the record's in epoch ms; 0 lets the producer stamp it
    (a re-keyed record keeps its source's, so event time survives the move).
    """

    def __call__(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None,
        ticket: Ticket,
        timestamp: int = 0,
    ) -> None:
        """Produce the record (or hold it, exactly once) for ``ticket``."""


def make_sender(producer: Any, settling: bool = False) -> Send:
    """The :class:`Send` that produces each record at once (the other one holds it, exactly once).

    The record counts towards the ticket until the broker acknowledges it. A
    full librdkafka queue makes it wait for delivery reports rather than drop.

    Args:
        producer: The shared producer.
        settling: The records settle a failure (dead letters, retry-tier
            moves): their delivery callback is :meth:`Ticket.settle_ack`,
            so a refusal is final instead of being retried as an emit.
    """
    produce, poll = producer.produce, producer.poll

    def send(
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None,
        ticket: Ticket,
        timestamp: int = 0,
    ) -> None:
        ticket.pending += 1
        # Positional arguments, and the ticket itself as the callback:
        # keyword parsing and a bound method per record cost more than the
        # rest of produce() (bench/README.md, "The hot path").
        callback = ticket.settle_ack if settling else ticket  # a bool test: about 20 ns
        while True:
            try:
                # (confluent-kafka's sixth positional is on_delivery again,
                # an alias of the fifth, hence headers by keyword.)
                if timestamp:
                    produce(topic, value, key, -1, callback, timestamp=timestamp, headers=headers)
                elif headers is None:
                    produce(topic, value, key, -1, callback)
                else:
                    produce(topic, value, key, -1, callback, headers=headers)
                return
            except BufferError:
                # librdkafka's local queue is full: serve delivery reports to
                # make room. This is the producer-side backpressure.
                poll(_QUEUE_FULL_WAIT_S)
            except BaseException:
                ticket.pending -= 1
                raise

    return send


class ProducerGate:
    """Holds partition tasks back while librdkafka's queue is over half full, or a checkpoint runs.

    A full queue makes ``produce()`` raise ``BufferError``, and waiting for
    room inside ``produce()`` would block the event loop: no signal handling,
    no revokes, no ``/livez`` heartbeat for as long as a broker outage lasts.
    Tasks instead stop *starting* records at half the queue's capacity and
    ``await`` until there is room, so the loop stays free; the other half is
    headroom for records already started (their fan-out).

    Exactly once, a checkpoint also closes the gate (:meth:`hold`): no record
    starts while the transaction commits, because nothing may be produced
    between its flush and its commit.

    Args:
        producer: The shared producer (``len()`` is its queue length).
        capacity: librdkafka's ``queue.buffering.max.messages``.
    """

    def __init__(self, producer: Any, capacity: int) -> None:
        self._length = producer.__len__
        self._poll = producer.poll
        self.high = max(capacity // 2, 1)
        self.held = False
        self._released = asyncio.Event()

    def use(self, producer: Any) -> None:
        """Measure this producer's queue from now on (a new one, after a fence)."""
        self._length = producer.__len__
        self._poll = producer.poll

    async def until_released(self) -> None:
        """Return once no checkpoint holds the gate."""
        while self.held:
            await self._released.wait()

    def open(self) -> bool:
        """Whether a record may start now."""
        return not self.held and bool(self._length() < self.high)

    def hold(self) -> None:
        """Start no record until :meth:`release` (a checkpoint's commit)."""
        self.held = True
        self._released.clear()

    def release(self) -> None:
        """Let records start again."""
        self.held = False
        self._released.set()

    async def wait(self, stopped: Callable[[], bool]) -> None:
        """Serve delivery reports until there is room again, or ``stopped()``."""
        while not stopped():
            if self.held:
                # Woken by release() at once: a checkpoint every 100 ms must
                # not add a polling interval to each.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._released.wait(), 0.05)
                continue
            if self._length() < self.high:
                return
            self._poll(0)
            await asyncio.sleep(0.01)


class Emitter:
    """Sends records to an agent's declared targets, accounting them to tickets."""

    def __init__(
        self,
        producer: Any,
        targets: dict[str, _Target],
        send: Send | None = None,
        side: frozenset[str] = frozenset(),
    ) -> None:
        # Public for the flattened one-target path, which sends through the
        # same sender rather than building a second one. Exactly once, the
        # sender holds the records until the agent returns (exactly_once.py).
        self.send_encoded = send or make_sender(producer)
        self._targets = targets
        self.defaults = tuple(t for name, t in targets.items() if name not in side)
        # Records sent per target topic: a plain counter that metrics read.
        self.emitted = dict.fromkeys((t.name for t in targets.values()), 0)

    def send(
        self,
        target: _Target,
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None,
        ticket: Ticket,
        timestamp: int = 0,
    ) -> None:
        """Produce one encoded record to a declared target."""
        self.send_encoded(target.name, value, key, headers, ticket, timestamp)
        self.emitted[target.name] += 1

    def emit_default(self, value: Any, key: bytes | None, ticket: Ticket) -> None:
        """A returned value: once to each declared target, keeping the input key bytes."""
        if value is None:
            return
        for target in self.defaults:
            self.send(target, target.encode_value(value), key, None, ticket)

    def emit_explicit(
        self,
        topic: str | Topic,
        value: Any,
        key: Any,
        headers: Headers | None,
        ctx: Context,
        timestamp: int = 0,
    ) -> None:
        """``ctx.emit``: to one declared target, key re-encoded unless kept."""
        name = topic if isinstance(topic, str) else topic.name
        target = self._targets.get(name)
        if target is None:
            raise DeclarationError(
                f"ctx.emit to {name!r}, which is not in this agent's emits "
                f"({', '.join(self._targets) or 'none'})"
            )
        try:
            if key is KEEP_KEY:
                raw_key = ctx.raw_key
            else:
                raw_key = None if key is None else target.encode_key(key)
            raw_value = None if value is None else target.encode_value(value)
        except SerializationError as exc:
            # The serde cannot know which topic it encodes for; the failure
            # names the record's source, so this names the target.
            raise SerializationError(f"topic {target.name}: {exc}") from exc
        self.send(target, raw_value, raw_key, headers, ctx.ticket, timestamp)


SyncProcess = Callable[[Any, Ticket], None]
AsyncProcess = Callable[[Any, Ticket], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class Processor:
    """One agent, ready to run: exactly one of ``sync``/``run_async`` is set."""

    agent: Agent
    sync: SyncProcess | None
    run_async: AsyncProcess | None
    emitter: Emitter | None = None
    # A windowed agent: its window, which the partition worker also asks
    # what to do while no record comes (streamkit.windows.runner).
    windows: WindowRun | None = None


def compile_agent(
    agent: Agent,
    source: Codec,
    targets: dict[str, Codec],
    producer: Any,
    rename: dict[str, str] | None = None,
    send: Send | None = None,
    status: StatusFn | None = None,
    side: frozenset[str] = frozenset(),
) -> Processor:
    """Build the per-record callable of one agent.

    Args:
        agent: The declaration.
        source: Serdes of the agent's input topic.
        targets: Serdes of each declared emit target, by topic name.
        producer: The shared producer (anything with ``produce`` and ``poll``).
        rename: Emit targets sent elsewhere (a replay's ``--redirect``); the
            agent still names the declared topic, encoded with its serdes.
        send: How emits are sent (default: produced at once, :func:`make_sender`).
        status: A ``requests=True`` agent's hook for statuses sent at once.
        side: Targets only emitted explicitly (replies, task statuses), not
            with each returned value.
    """
    rename = rename or {}
    emitter = Emitter(
        producer,
        {
            name: _Target(rename.get(name, name), codec.value.serialize, codec.key.serialize)
            for name, codec in targets.items()
        },
        send,
        side,
    )
    decode = source.value.deserialize
    decode_key = source.key.deserialize
    fn = agent.fn
    windows = None
    if agent.window is not None:
        windows = WindowRun(agent.window, emitter, decode_key)
        fn = windows.process
    emit_default = emitter.emit_default
    emit_explicit = emitter.emit_explicit
    takes_ctx = agent.takes_ctx

    def call_args(msg: Any, ticket: Ticket) -> tuple[Any, ...]:
        raw = msg.value()
        try:
            value = None if raw is None else decode(raw)
        except SerdeError as exc:
            raise _record_error(msg, f"cannot decode value: {exc}", exc, "deserialize") from exc
        if takes_ctx:
            return (value, Context(msg, ticket, decode_key, emit_explicit, status))
        return (value,)

    def emit_result(result: Any, msg: Any, ticket: Ticket) -> None:
        if result is None:
            return
        key = msg.key()
        kind = type(result)
        if kind is list or kind is types.GeneratorType:
            for item in result:
                emit_default(item, key, ticket)
        else:
            emit_default(result, key, ticket)

    if agent.shape is Shape.RETURN and not takes_ctx and len(emitter.defaults) == 1:
        return _single_target(agent, decode, emitter)

    if not agent.is_async:

        def process_sync(msg: Any, ticket: Ticket) -> None:
            args = call_args(msg, ticket)
            try:
                emit_result(fn(*args), msg, ticket)
            except Exception as exc:
                raise _classify(msg, agent.name, exc) from exc
            ticket.finished = True

        return Processor(agent, process_sync, None, emitter, windows)

    if agent.shape is Shape.ASYNC_GENERATOR:

        async def call(msg: Any, ticket: Ticket, args: tuple[Any, ...]) -> None:
            key = msg.key()
            async for item in fn(*args):
                emit_default(item, key, ticket)

    else:

        async def call(msg: Any, ticket: Ticket, args: tuple[Any, ...]) -> None:
            emit_result(await fn(*args), msg, ticket)

    async def process_async(msg: Any, ticket: Ticket) -> None:
        args = call_args(msg, ticket)
        try:
            await call(msg, ticket, args)
        except Exception as exc:
            raise _classify(msg, agent.name, exc) from exc
        ticket.finished = True

    return Processor(agent, None, timed(agent, process_async), emitter)


def _single_target(agent: Agent, decode: Callable[[bytes], Any], emitter: Emitter) -> Processor:
    """The common shape, flattened: an agent of one value with one target.

    Same behaviour as the general path in two frames instead of five: the
    general path's argument tuple and nested emit calls were a fifth of the
    per-record cost at 100k records/s (bench/README.md, "The hot path").
    """
    fn = agent.fn
    target = emitter.defaults[0]
    name, encode = target.name, target.encode_value
    send = emitter.send_encoded
    counts = emitter.emitted
    emit_default = emitter.emit_default

    def value_of(msg: Any) -> Any:
        raw = msg.value()
        try:
            return None if raw is None else decode(raw)
        except SerdeError as exc:
            raise _record_error(msg, f"cannot decode value: {exc}", exc, "deserialize") from exc

    def deliver(result: Any, msg: Any, ticket: Ticket) -> None:
        kind = type(result)
        if kind is list or kind is types.GeneratorType:
            key = msg.key()
            for item in result:
                emit_default(item, key, ticket)
        else:
            send(name, encode(result), msg.key(), None, ticket)
            counts[name] += 1

    if not agent.is_async:

        def process_one(msg: Any, ticket: Ticket) -> None:
            value = value_of(msg)
            try:
                result = fn(value)
                if result is not None:
                    deliver(result, msg, ticket)
            except Exception as exc:
                raise _classify(msg, agent.name, exc) from exc
            ticket.finished = True

        return Processor(agent, process_one, None, emitter)

    async def process_one_async(msg: Any, ticket: Ticket) -> None:
        value = value_of(msg)
        try:
            result = await fn(value)
            if result is not None:
                deliver(result, msg, ticket)
        except Exception as exc:
            raise _classify(msg, agent.name, exc) from exc
        ticket.finished = True

    return Processor(agent, None, timed(agent, process_one_async), emitter)


def timed(agent: Agent, run: AsyncProcess) -> AsyncProcess:
    """``run`` under the agent's ``time_limit``: cancelled past it, failing with stage ``timeout``.

    Decided here, once: an agent without a time limit gets ``run`` itself.
    The limit is on real time (the loop's clock), like the other guards
    against hangs (streamkit.clock). A record that runs over fails like any
    other, so it follows the agent's retry policy (a slow downstream is
    usually a passing state, and ``retry_on`` already says what is worth
    retrying; ``TimeoutError`` is the cause) and is dead-lettered with stage
    ``timeout`` if its last attempt ran over too. Records the call emitted
    before it was cancelled were sent, as with any failure after an emit.
    """
    seconds = agent.time_limit
    if seconds is None:
        return run
    name = agent.name

    async def within_limit(msg: Any, ticket: Ticket) -> None:
        try:
            async with asyncio.timeout(seconds):
                await run(msg, ticket)
        except TimeoutError as exc:
            # Only the limit's own: the agent's TimeoutErrors come out of
            # run() already classified as AgentError. The cause gets a
            # message: asyncio's has none, and the dead letter shows it.
            problem = f"agent {name} ran over its time_limit of {seconds:g} s"
            cause = TimeoutError(problem)
            cause.__cause__ = exc
            raise _record_error(msg, problem, cause, "timeout") from cause

    return within_limit


def _record_error(
    msg: Any, problem: str, cause: BaseException, stage: str = "process"
) -> AgentError:
    error = AgentError(msg.topic(), msg.partition(), msg.offset(), problem, stage)
    error.__cause__ = cause
    return error


def _classify(msg: Any, agent_name: str, exc: Exception) -> Exception:
    """Name the stage a failure happened in; it decides retries and goes in dead letters.

    A :class:`DeclarationError` (``ctx.emit`` to a topic the agent does not
    declare) or a :class:`StateError` (a table key of another partition) is
    the code's fault, not the record's: it is returned as it is, so it stops
    the worker instead of dead-lettering every record.
    """
    if isinstance(exc, (AgentError, DeclarationError, StateError)):
        return exc
    if isinstance(exc, SerdeError):
        return _record_error(msg, f"cannot encode output: {exc}", exc, "serialize")
    if isinstance(exc, KafkaException):
        # produce() refused it locally (too large, unknown topic...): the
        # same classification as a failed delivery report.
        return produce_failure(msg, exc.args[0] if exc.args else exc, "cannot produce output")
    return _record_error(msg, f"agent {agent_name} raised {exc!r}", exc)


def build_processors(
    app: App,
    agents: Sequence[Agent],
    config: AppConfig,
    producer: Any,
    redirect: dict[str, str] | None = None,
    wrap: Callable[[Processor], Processor] | None = None,
    send: Send | None = None,
    status: Callable[[str], StatusFn] | None = None,
) -> dict[str, Processor]:
    """Resolve every serde and compile every agent, before anything connects.

    Args:
        app: The app.
        agents: The agents to compile.
        config: Serde settings.
        producer: The shared producer.
        redirect: Emit targets renamed (a replay's ``--redirect``).
        wrap: Applied to each compiled processor (exactly once: emits held
            until the agent returns, see :mod:`streamkit.runtime.exactly_once`).
        send: The emit sender that goes with ``wrap``.
        status: The status hook of each ``requests=True`` agent, by agent name.

    Returns:
        Processors by source topic name.
    """
    codec = Codecs(config)
    processors = {}
    for agent in agents:
        targets = {t.name: codec(t) for t in app.emit_targets(agent)}
        side = frozenset(t.name for t in app.request_topics) if agent.requests else frozenset()
        processor = compile_agent(
            agent,
            codec(agent.source),
            targets,
            producer,
            rename=redirect or {},
            send=send,
            status=status(agent.name) if status is not None and agent.requests else None,
            side=side,
        )
        processors[agent.source.name] = wrap(processor) if wrap is not None else processor
    return processors
