"""``app.window(...)``: a windowed aggregation, declared like an agent.

A window is an agent the runtime writes: it reads a keyed source topic,
keeps each key's open windows in a window store, and emits each window's
result to the declared topics. Being an agent, it gets everything agents
get: consumer groups and rebalancing, the commit and checkpoint order,
exactly once, dead letters for records it cannot read, replay refusal (it
has state), metrics. Its store is a table (:class:`WindowStore`), so it is
changelog-backed and restored like one.

When a window closes, exactly: a window closes at the first moment the
partition's **stream time** reaches its end plus ``grace`` (sessions: the
last record plus ``gap`` plus ``grace``). Stream time is the newest event
time of the partition's records; after ``idle`` seconds with no record it
moves on with the wall clock from there. A record whose windows have all
closed is **late**: it is counted (``streamkit_window_late_records_total``)
and goes to ``late`` (a topic, by default ``<app>.<name>.late``, or a
function), never silently away.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from streamkit.errors import DeclarationError
from streamkit.state.table import Table
from streamkit.topics import SerdeSpec, Topic
from streamkit.windows.aggregations import Aggregation
from streamkit.windows.kinds import Hopping, Session, Sliding, Window, WindowKind

EMIT_MODES = ("final", "current")
# When idle advance starts by default: long enough that a partition between
# two bursts of a busy stream is not "idle", short enough that the last
# window of a quiet one closes within a minute of its end plus grace.
DEFAULT_IDLE_S = 30.0

ResultFn = Callable[[Any, Window, Any], Any]
LateFn = Callable[[Any, Any], Any]


class WindowStore(Table):
    """The table of a window's open windows, ``<app>.<name>-windows``, one value per key."""

    def __init__(self, app_name: str, name: str, **settings: Any) -> None:
        super().__init__(app_name, name, **settings)
        self.windowed = True


class Windowed:
    """A declared windowed aggregation (built by :meth:`streamkit.App.window`).

    Attributes:
        name: The agent's name.
        source: The keyed input topic.
        kind: :class:`~streamkit.windows.kinds.Tumbling`, ``Hopping``,
            ``Sliding`` or ``Session``.
        aggregation: What each window computes.
        grace_ms: How long after its end a window still takes records.
        emit: ``"final"`` (once, when the window closes) or ``"current"``
            (the window's value after each record that changed it).
        outputs: Where results go, keyed by the input key.
        late: The late records' topic, if they go to one.
        on_late: The late records' function, if they go to one.
        idle: Seconds without a record before stream time follows the wall
            clock (``None``: never, windows close only on records).
        store: The window store.
    """

    def __init__(
        self,
        app_name: str,
        name: str,
        source: Topic,
        kind: WindowKind,
        *,
        aggregate: Aggregation,
        grace: float,
        emits: Sequence[Topic],
        emit: str = "final",
        timestamp: Callable[[Any], Any] | None = None,
        late: Topic | LateFn | None = None,
        idle: float | None = DEFAULT_IDLE_S,
        result: ResultFn | None = None,
        state_serde: SerdeSpec = "json",
    ) -> None:
        where = f"window {name}"
        if not isinstance(kind, (Hopping, Sliding, Session)):
            raise DeclarationError(
                f"{where}: the kind must be Tumbling, Hopping, Sliding or Session, not {kind!r}"
            )
        if not isinstance(aggregate, Aggregation):
            raise DeclarationError(
                f"{where}: aggregate= takes count(), sum_of(...), min_of(...), max_of(...), "
                f"reduce(...) or aggregate(...) from streamkit.windows, not {aggregate!r}"
            )
        if isinstance(kind, (Sliding, Session)) and aggregate.merge is None:
            raise DeclarationError(
                f"{where}: {type(kind).__name__.lower()} windows combine partial results, so "
                "aggregate(...) needs merge="
            )
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0:
            raise DeclarationError(f"{where}: grace must be 0 or more seconds, not {grace!r}")
        if emit not in EMIT_MODES:
            raise DeclarationError(f"{where}: emit must be 'final' or 'current', not {emit!r}")
        if idle is not None and (
            isinstance(idle, bool) or not isinstance(idle, (int, float)) or idle <= 0
        ):
            raise DeclarationError(f"{where}: idle must be a positive number of seconds or None")
        if not emits:
            raise DeclarationError(f"{where}: emits= names at least one topic for the results")
        self.name = name
        self.source = source
        self.kind = kind
        self.aggregation = aggregate
        self.grace_ms = round(grace * 1000)
        self.emit = emit
        self.timestamp = timestamp
        self.idle = None if idle is None else float(idle)
        self.result = result
        self.outputs = tuple(emits)
        self.output_names = frozenset(t.name for t in emits)
        self.on_late: LateFn | None = None
        self.late: Topic | None = None
        if isinstance(late, Topic):
            self.late = late
        elif late is None:
            # Never silently: without a choice, late records get a topic.
            self.late = Topic(
                f"{app_name}.{name}.late",
                key_serde=source.key_serde,
                value_serde=source.value_serde,
                partitions=source.partitions,
            )
        elif callable(late):
            self.on_late = late
        else:
            raise DeclarationError(f"{where}: late= takes a topic or a function, not {late!r}")
        self.store = WindowStore(
            app_name,
            f"{name}-windows",
            key_serde=source.key_serde,
            value_serde=state_serde,
        )

    def __repr__(self) -> str:
        return f"Windowed({self.name!r}, {self.kind!r}, {self.aggregation.name})"

    @property
    def emit_topics(self) -> tuple[Topic, ...]:
        """Every topic the window's agent produces to: the outputs, and the late topic."""
        return (*self.outputs, *((self.late,) if self.late is not None else ()))
