"""Tables read from a topic: a topic's latest value per key, read-only to agents.

Two kinds, alike for the agent that reads them (``table[key]``,
``table.get(key)``, a read-only mapping) and different in what a worker holds:

* A **global table** (``app.global_table(name, source=topic)``) is the whole
  topic on every worker, for small reference data (exchange rates, product
  names, feature flags) that any record may need, whatever its partition.
  Each worker reads it all before it processes anything.
* A **source table** (``app.table(name, source=topic)``) is partitioned: the
  agent that lists it in ``tables=`` sees, for a record of its partition
  *p*, partition *p* of the table's topic. That is a stream-table join on
  the record key, and it scales with the topic, but it needs the two topics
  *co-partitioned*: the same partition count (checked when the worker
  starts) and the same key bytes written with the same partitioner.
  streamkit's producers use librdkafka's default (CRC32 of the key); Java
  clients hash with murmur2, so when Java services write either topic, set
  the app's producer ``partitioner`` to ``murmur2_random``.
  A partition of the table is read to its end when its stream partition is
  assigned, before that partition's first record.

Example::

    customers = app.table("customers", source=app.topic("crm.customers"))

    @app.agent(orders, emits=[enriched], tables=[customers])
    def enrich(order, ctx):
        return {**order, "customer": customers.get(ctx.key)}

Either way the topic is the table: a record sets its key's value, a
tombstone (a ``None`` value) deletes it, and compaction keeps the topic
small. Agents only read; the table changes when its topic does, and the
worker follows the topic, applying updates between records. So a record
sees the table **as of when it is processed**: an update is visible to the
records processed after the worker read it (about
:data:`~streamkit.runtime.topic_tables.FOLLOW_POLL_S` later), never
halfway through one, and there is no event-time alignment between the
stream and the table. The tables live in memory, decoded: keep a global
table to what every worker can hold (a few hundred thousand small values),
and a source table's partitions to what one worker's share can.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from streamkit.errors import StateError
from streamkit.state.table import NO_DEFAULT
from streamkit.topics import Topic

_MISSING: Any = object()


class TopicTable(Mapping[Any, Any]):
    """A read-only table of ``source``'s latest value per key.

    Args:
        name: Unique within the app's tables.
        source: The topic it is read from (keys and values with its serdes).
        default: What a missing key reads as with ``table[key]`` (a callable
            is called per miss); without one, ``KeyError``.
    """

    # A mapping, so code written against a dict (a pure function taking the
    # rates) takes the table as it is.
    kind = "topic"

    def __init__(self, name: str, source: Topic, default: Any = NO_DEFAULT) -> None:
        self.name = name
        self.source = source
        self._default = default
        # Set once per partition task: that worker's copy of the table (a
        # global table), or of the task's partition of it (a source table).
        self.current: ContextVar[dict[Any, Any] | None] = ContextVar(
            f"streamkit.{self.kind}.{name}", default=None
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, source={self.source.name!r})"

    def _here(self) -> dict[Any, Any]:
        view = self.current.get()
        if view is None:
            raise StateError(self._outside())
        return view

    def _outside(self) -> str:
        return (
            f"{self.kind} table {self.name} is read outside an agent (or before its worker "
            "loaded it): read it from an agent's function"
        )

    def get(self, key: Any, default: Any = None) -> Any:
        """The latest value of ``key``, or ``default``."""
        return self._here().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        found = self._here().get(key, _MISSING)
        if found is not _MISSING:
            return found
        if self._default is NO_DEFAULT:
            raise KeyError(key)
        return self._default() if callable(self._default) else self._default

    def __contains__(self, key: Any) -> bool:
        return key in self._here()

    def __len__(self) -> int:
        return len(self._here())

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._here()))


class GlobalTable(TopicTable):
    """The whole of ``source`` on every worker, readable by any agent."""

    kind = "global"


class SourceTable(TopicTable):
    """``source`` partitioned like the stream of the agents that list it in ``tables=``.

    A record of partition *p* reads partition *p* of the table: a join on
    the record key, for topics co-partitioned with the agent's source.
    """

    kind = "source"

    def _outside(self) -> str:
        return (
            f"table {self.name} is read outside the agents that list it (or before its "
            f"partition was loaded): list it in @app.agent(..., tables=[{self.name}])"
        )
