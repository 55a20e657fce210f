"""Agent declarations: a function bound to an input topic, inspected once.

``@app.agent(...)`` looks at the function a single time and records what the
runtime needs to know to call it without any reflection per record: is it
``async``, is it a generator, does it take a context. The function itself is
returned unchanged, so it stays directly callable in plain unit tests.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from streamkit.errors import DeclarationError
from streamkit.policies import DeadLetterPolicy, RetryPolicy
from streamkit.state.table import Table
from streamkit.state.topic_table import SourceTable
from streamkit.topics import Topic


class Shape(Enum):
    """How an agent hands back its results, fixed at declaration time."""

    RETURN = "return"  # def / async def returning a value, a list, or None
    GENERATOR = "generator"  # def with yield
    ASYNC_GENERATOR = "async_generator"  # async def with yield


@dataclass(frozen=True, slots=True)
class Agent:
    """A declared agent.

    Attributes:
        name: Unique within the app; names the agent in logs, CLI and metrics.
        fn: The user function.
        source: The topic it consumes.
        emits: Topics it may emit to (objects, or names resolved when the app starts).
        is_async: Whether ``fn`` is a coroutine or async-generator function.
        takes_ctx: Whether ``fn`` takes ``(value, ctx)`` rather than ``(value)``.
        shape: How results come back.
        concurrency: Records of one partition processed at once (async agents only).
        retry: How failed records are retried.
        dead_letter: Where failed records go, and when to stop instead.
        tables: Tables the agent reads and writes (partitioned like ``source``).
        joins: Source tables it reads, partition *p* for the records of
            partition *p* (:mod:`streamkit.state.topic_table`).
        requests: It answers ``ask`` and ``submit`` (:mod:`streamkit.requests`);
            ``fn`` is then the wrapper that does.
        delays: Its delay tiers in seconds, for records sent with ``delay=``
            (:mod:`streamkit.delays`); empty: none.
        window: A windowed aggregation the runtime runs as this agent
            (:class:`~streamkit.windows.declaration.Windowed`), else ``None``.
        rate_limit: Records per second the whole group may start, shared
            among workers by owned partitions (:mod:`streamkit.runtime.rate_limit`);
            ``None``: unlimited.
        time_limit: Seconds one call of an async agent may take before it is
            cancelled and fails with stage ``timeout``; ``None``: no limit.
    """

    name: str
    fn: Callable[..., Any]
    source: Topic
    emits: tuple[Topic | str, ...]
    is_async: bool
    takes_ctx: bool
    shape: Shape
    concurrency: int = 1
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    dead_letter: DeadLetterPolicy = field(default_factory=DeadLetterPolicy)
    tables: tuple[Table, ...] = ()
    window: Any = None
    joins: tuple[SourceTable, ...] = ()
    requests: bool = False
    delays: tuple[int, ...] = ()
    rate_limit: float | None = None
    time_limit: float | None = None


# The units ``rate_limit="N/unit"`` accepts, in seconds.
_RATE_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}


def parse_rate(spec: str | float | None, agent_name: str = "?") -> float | None:
    """Records per second from ``"100/s"``, ``"6000/min"``, ``"5/h"``, a number, or ``None``.

    Parsed once, at declaration, so a typo fails before the app connects and
    the runtime only ever sees a float.

    Raises:
        DeclarationError: Not one of those forms, or not a positive rate.
    """
    if spec is None:
        return None
    problem = (
        f"agent {agent_name}: rate_limit={spec!r} is not a rate; use records per second "
        '(a number) or "N/s", "N/min", "N/h" (for example rate_limit="100/s")'
    )
    if isinstance(spec, bool):
        raise DeclarationError(problem)
    if isinstance(spec, (int, float)):
        count, per = float(spec), 1.0
    elif isinstance(spec, str):
        amount, slash, unit = spec.strip().partition("/")
        per_unit = _RATE_UNITS.get(unit.strip().lower()) if slash else None
        if per_unit is None:
            raise DeclarationError(problem)
        try:
            count, per = float(amount), per_unit
        except ValueError:
            raise DeclarationError(problem) from None
    else:
        raise DeclarationError(problem)
    if not math.isfinite(count) or count <= 0:
        raise DeclarationError(f"{problem}: it must be positive and finite")
    return count / per


def _check_time_limit(agent_name: str, time_limit: float | None, is_async: bool) -> float | None:
    """A positive number of seconds, on an async agent only.

    A sync agent is refused rather than timed after the fact: Python cannot
    stop a running function from outside, so its limit could only be checked
    once the call returned, and by then the slow call (the stuck HTTP
    request, the loop that never ends) has already blocked every other
    partition of the worker. Dead-lettering a record whose work did
    complete, its side effects done, would also misreport what happened.
    """
    if time_limit is None:
        return None
    if (
        isinstance(time_limit, bool)
        or not isinstance(time_limit, (int, float))
        or not math.isfinite(time_limit)
        or time_limit <= 0
    ):
        raise DeclarationError(
            f"agent {agent_name}: time_limit={time_limit!r} must be a positive number of seconds"
        )
    if not is_async:
        raise DeclarationError(
            f"agent {agent_name}: time_limit needs an async def agent; a running sync "
            "function cannot be cancelled, so the limit could only be noticed after the "
            "call already blocked the worker (make it async def, and await the slow work)"
        )
    return float(time_limit)


def declare_agent(
    fn: Callable[..., Any],
    source: Topic,
    emits: Sequence[Topic | str],
    name: str | None = None,
    concurrency: int = 1,
    retry: RetryPolicy | None = None,
    dead_letter: DeadLetterPolicy | bool | None = None,
    tables: Sequence[Table | SourceTable] = (),
    rate_limit: str | float | None = None,
    time_limit: float | None = None,
) -> Agent:
    """Inspect ``fn`` once and build its :class:`Agent`.

    Raises:
        DeclarationError: The function's signature or the arguments do not fit.
    """
    agent_name = name or getattr(fn, "__name__", "")
    if not agent_name or agent_name == "<lambda>":
        raise DeclarationError("an agent needs a name: pass name= for lambdas and callables")
    if not isinstance(source, Topic):
        raise DeclarationError(f"agent {agent_name}: source must be a Topic from app.topic(...)")
    if isinstance(emits, (str, Topic)):
        raise DeclarationError(f"agent {agent_name}: emits must be a list of topics")
    for target in emits:
        if not isinstance(target, (str, Topic)):
            raise DeclarationError(f"agent {agent_name}: emits holds {target!r}, not a topic")

    if inspect.isasyncgenfunction(fn):
        shape, is_async = Shape.ASYNC_GENERATOR, True
    elif inspect.isgeneratorfunction(fn):
        shape, is_async = Shape.GENERATOR, False
    else:
        shape, is_async = Shape.RETURN, inspect.iscoroutinefunction(fn)
    if not isinstance(concurrency, int) or concurrency < 1:
        raise DeclarationError(f"agent {agent_name}: concurrency must be a positive integer")
    if concurrency > 1 and not is_async:
        raise DeclarationError(
            f"agent {agent_name}: concurrency={concurrency} needs an async def agent; "
            "a sync agent runs one record at a time per partition"
        )
    if dead_letter is None or dead_letter is True:
        dead_letter = DeadLetterPolicy()
    elif dead_letter is False:
        dead_letter = DeadLetterPolicy(enabled=False)
    if not isinstance(dead_letter, DeadLetterPolicy):
        raise DeclarationError(
            f"agent {agent_name}: dead_letter must be a DeadLetterPolicy or a bool"
        )
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise DeclarationError(f"agent {agent_name}: retry must be a RetryPolicy")
    _check_tables(agent_name, source, tables, retry)
    rate = parse_rate(rate_limit, agent_name)
    seconds = _check_time_limit(agent_name, time_limit, is_async)
    return Agent(
        name=agent_name,
        fn=fn,
        source=source,
        emits=tuple(emits),
        is_async=is_async,
        takes_ctx=_takes_ctx(fn, agent_name),
        shape=shape,
        concurrency=concurrency,
        retry=retry or RetryPolicy(),
        dead_letter=dead_letter,
        tables=tuple(t for t in tables if isinstance(t, Table)),
        joins=tuple(t for t in tables if isinstance(t, SourceTable)),
        rate_limit=rate,
        time_limit=seconds,
    )


def _check_tables(
    agent_name: str,
    source: Topic,
    tables: Sequence[Table | SourceTable],
    retry: RetryPolicy | None,
) -> None:
    if isinstance(tables, (Table, SourceTable)):
        raise DeclarationError(f"agent {agent_name}: tables must be a list of tables")
    for table in tables:
        if isinstance(table, SourceTable):
            key_serde, partitions = table.source.key_serde, table.source.partitions
            what = f"table {table.name}'s topic {table.source.name}"
        elif isinstance(table, Table):
            key_serde, partitions = table.key_serde, table.partitions
            what = f"table {table.name}"
        else:
            raise DeclarationError(
                f"agent {agent_name}: tables holds {table!r}, not a table from app.table(...)"
            )
        if key_serde != source.key_serde:
            raise DeclarationError(
                f"agent {agent_name}: {what} has key_serde {key_serde!r} and its source "
                f"{source.name} {source.key_serde!r}; they must be the same, so a key's "
                "bytes, and so its partition, are the record key's"
            )
        if partitions and source.partitions and partitions != source.partitions:
            raise DeclarationError(
                f"agent {agent_name}: {what} has {partitions} partitions and its source "
                f"{source.name} {source.partitions}; a table is partitioned like its source"
            )
    if tables and retry is not None and retry.retry_topics:
        raise DeclarationError(
            f"agent {agent_name}: retry tiers (retry_topics) and tables do not mix: a tier "
            "is another topic, whose partitions another worker may own while this one "
            "uses the same keys; use in-place retries (attempts, backoff)"
        )


def _takes_ctx(fn: Callable[..., Any], agent_name: str) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError) as exc:
        raise DeclarationError(f"agent {agent_name}: cannot read its signature: {exc}") from None
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    if len(required) > 2 or not positional:
        raise DeclarationError(
            f"agent {agent_name}: must take (value) or (value, ctx); "
            f"its signature is {inspect.signature(fn)}"
        )
    return len(positional) >= 2
