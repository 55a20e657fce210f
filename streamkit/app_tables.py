"""``App``'s table declarations: changelog tables, source tables, global tables.

A mixin of :class:`~streamkit.app.App`, kept apart because tables are one
concept (per-key state, and the agent each belongs to) that ``App``
declares next to topics, agents and timers. It holds no state of its own:
the registries it fills are ``App``'s, set in ``App.__init__``, and it
never imports ``app``, so the dependency runs one way.
"""

from __future__ import annotations

from typing import Any, TypedDict, Unpack, overload

from streamkit.agent import Agent
from streamkit.errors import DeclarationError
from streamkit.state.table import NO_DEFAULT, Table
from streamkit.state.topic_table import GlobalTable, SourceTable
from streamkit.topics import SerdeSpec, Topic


class ChangelogOptions(TypedDict, total=False):
    """How a table backed by its own changelog stores keys and values.

    The keywords ``app.table(name, ...)`` takes besides ``default``, typed
    once here for both its overload and its body; the defaults are
    :class:`~streamkit.state.table.Table`'s.
    """

    key_serde: SerdeSpec
    value_serde: SerdeSpec
    ttl: float | None
    partitions: int | None


# Table's defaults, in the order a refusal lists them: with ``source=`` the
# serdes and partitions are the topic's, so any other value is an error
# rather than silently ignored.
_CHANGELOG_DEFAULTS: ChangelogOptions = {
    "key_serde": "str",
    "value_serde": "json",
    "ttl": None,
    "partitions": None,
}


class TableDeclarations:
    """``table``, ``global_table`` and the binding of tables to agents, for :class:`App`."""

    # Set by App.__init__: the registries this mixin reads and fills.
    name: str
    topics: dict[str, Topic]
    agents: dict[str, Agent]
    tables: dict[str, Table]
    global_tables: dict[str, GlobalTable]
    source_tables: dict[str, SourceTable]

    @overload
    def table(
        self, name: str, *, default: Any = NO_DEFAULT, **changelog: Unpack[ChangelogOptions]
    ) -> Table: ...

    @overload
    def table(self, name: str, *, source: Topic, default: Any = NO_DEFAULT) -> SourceTable: ...

    def table(
        self,
        name: str,
        *,
        source: Topic | None = None,
        default: Any = NO_DEFAULT,
        **changelog: Unpack[ChangelogOptions],
    ) -> Table | SourceTable:
        """Declare a table: per-key state for the agents that list it in ``tables=``.

        Reads and writes go to the partition of the record being processed;
        the table survives crashes and rebalances through its compacted
        changelog topic ``<app>.<name>.changelog`` (see :class:`~streamkit.state.table.Table`).

        With ``source=topic`` the table is that topic instead: read-only to
        agents, it holds the topic's latest value per key, partition *p* for
        the records of partition *p*, so reading it by the record key joins
        the stream with it. The topics must be co-partitioned, which the
        worker checks when it starts (see :mod:`streamkit.state.topic_table`).

        Args:
            name: Unique within the app.
            key_serde: Must be the agent's source key serde.
            value_serde: How values are encoded (``json`` by default).
            default: What a missing key reads as; a callable is called per miss.
            ttl: Seconds of event time after its last write when a key expires.
            partitions: The changelog's partition count (default: the source's).
            source: A topic to materialize (its serdes are the table's).
        """
        if self._table_named(name):
            raise DeclarationError(f"table {name} is declared twice in app {self.name}")
        if source is None:
            table = Table(self.name, name, default=default, **changelog)
            self.tables[name] = table
            return table
        return self._source_table(name, source, default, changelog)

    def _source_table(
        self, name: str, source: Topic, default: Any, changelog: ChangelogOptions
    ) -> SourceTable:
        if not isinstance(source, Topic):
            raise DeclarationError(f"table {name}: source must be a Topic from app.topic()")
        unknown = sorted(changelog.keys() - _CHANGELOG_DEFAULTS.keys())
        if unknown:
            # What Python says of a keyword the signature does not have.
            raise TypeError(f"table() got an unexpected keyword argument {unknown[0]!r}")
        given = [f for f, d in _CHANGELOG_DEFAULTS.items() if changelog.get(f, d) != d]
        if given:
            raise DeclarationError(
                f"table {name}: {', '.join(given)} come from its source topic "
                f"{source.name}; declare them on app.topic()"
            )
        self.topics.setdefault(source.name, source)
        joined = SourceTable(name, source, default)
        self.source_tables[name] = joined
        return joined

    def _table_named(self, name: str) -> bool:
        return name in self.tables or name in self.global_tables or name in self.source_tables

    def global_table(self, name: str, *, source: Topic, default: Any = NO_DEFAULT) -> GlobalTable:
        """Declare a global table: ``source``'s latest value per key, on every worker.

        Any agent reads it (``table[key]``, ``table.get(key)``); it changes
        when its topic does. Every worker loads it whole before processing
        anything, then follows the topic, so records see it as of when they
        are processed (see :mod:`streamkit.state.topic_table`).

        Args:
            name: Unique among the app's tables.
            source: The topic holding the reference data (compacted, ideally).
            default: What a missing key reads as with ``table[key]``.
        """
        if self._table_named(name):
            raise DeclarationError(f"table {name} is declared twice in app {self.name}")
        if not isinstance(source, Topic):
            raise DeclarationError(f"global table {name}: source must be a Topic from app.topic()")
        self.topics.setdefault(source.name, source)
        found = GlobalTable(name, source, default)
        self.global_tables[name] = found
        return found

    def _bind_tables(self, agent: Agent) -> None:
        for table in agent.tables:
            if self.tables.get(table.name) is not table:
                raise DeclarationError(
                    f"agent {agent.name}: table {table.name} is not declared by app {self.name}"
                )
            for other in self.agents.values():
                if table in other.tables:
                    raise DeclarationError(
                        f"table {table.name} is used by agents {other.name} and {agent.name}: "
                        "a table's partitions follow one source topic"
                    )
        for joined in agent.joins:
            if self.source_tables.get(joined.name) is not joined:
                raise DeclarationError(
                    f"agent {agent.name}: table {joined.name} is not declared by app {self.name}"
                )
        for table in agent.tables:
            changelog = table.changelog(agent.source.partitions)
            self.topics[changelog.name] = changelog

    def table_agent(self, table: Table) -> Agent | None:
        """The agent that uses ``table``, if one does."""
        return next((a for a in self.agents.values() if table in a.tables), None)
