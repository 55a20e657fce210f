"""Global tables: a topic's latest value per key, held whole by every worker, read by any agent.

For small reference data (exchange rates, product names, feature flags)
that every record may need, whatever its partition: each worker reads the
whole topic before it processes anything, then follows it, applying
updates between records. So a record sees the table as of when it is
processed: an update is visible to the records processed after the worker
read it (about ``GLOBAL_POLL_S`` later), never halfway through one.

Example::

    rates = app.global_table("rates", source=app.topic("fx.rates", partitions=1))

    @app.agent(orders, emits=[priced])
    def price(order):
        return {**order, "eur": order["amount"] * rates[order["currency"]]["eur"]}

The topic is the table: a record sets its key's value, a tombstone (a
``None`` value) deletes it, and a compacted topic keeps it small. Agents
only read; the table is changed by producing to its topic. It lives in
memory, decoded, on every worker: keep it to what fits (a few hundred
thousand small values).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from streamkit.errors import StateError
from streamkit.state.table import NO_DEFAULT
from streamkit.topics import Topic

_MISSING: Any = object()


class GlobalTable(Mapping[Any, Any]):
    """A read-only table of ``source``'s latest value per key, on every worker.

    Args:
        name: Unique within the app's tables.
        source: The topic it is read from (keys and values with its serdes).
        default: What a missing key reads as with ``table[key]`` (a callable
            is called per miss); without one, ``KeyError``.
    """

    # A mapping, so code written against a dict (a pure function taking the
    # rates) takes the table as it is.

    def __init__(self, name: str, source: Topic, default: Any = NO_DEFAULT) -> None:
        self.name = name
        self.source = source
        self._default = default
        # Set in every partition task of the worker (once per task): that
        # worker's copy of the table.
        self.current: ContextVar[dict[Any, Any] | None] = ContextVar(
            f"streamkit.global.{name}", default=None
        )

    def __repr__(self) -> str:
        return f"GlobalTable({self.name!r}, source={self.source.name!r})"

    def _here(self) -> dict[Any, Any]:
        view = self.current.get()
        if view is None:
            raise StateError(
                f"global table {self.name} is read outside an agent (or before its worker "
                "loaded it): read it from an agent's function"
            )
        return view

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
