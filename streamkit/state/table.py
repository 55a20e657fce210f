"""Tables: per-key state declared on the app, read and written from agents.

A :class:`Table` is a declaration, like a topic: ``app.table(...)`` returns
one, an agent lists it in ``tables=[...]``, and the runtime gives each of the
agent's source partitions its own slice of the table (a
:class:`~streamkit.state.partition.TablePartition`: a local store, and the
writes not yet persisted in it). Reads and writes go to the slice of the
partition whose record is being processed; a context variable set once per
partition task says which, so the per-record path does no lookup by name.

Example::

    seen = app.table("orders.seen", default=None)

    @app.agent(raw, emits=[enriched], tables=[seen])
    def dedupe(order, ctx):
        if seen.get(ctx.key) is not None:
            return None
        seen[ctx.key] = {"at": ctx.timestamp}
        return order

Every table is backed by a compacted changelog topic,
``<app>.<table>.changelog``, with as many partitions as the source: the
checkpoint writes the latest value of each changed key there before the
input offsets commit, and a worker that takes a partition over restores the
slice from it (:mod:`streamkit.state.restore`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from streamkit.errors import DeclarationError, StateError
from streamkit.topics import SerdeSpec, Topic

if TYPE_CHECKING:
    from streamkit.state.partition import TablePartition

_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")
_NO_DEFAULT: Any = object()
# The "no default given" marker of table declarations.
NO_DEFAULT: Any = _NO_DEFAULT


class Table:
    """A per-key table, partitioned like its agent's source topic.

    Args:
        app_name: The app's name: the changelog is ``<app>.<name>.changelog``.
        name: Unique within the app; letters, digits, ``_`` and ``-``.
        key_serde: How keys are encoded; must be the source topic's key serde,
            so a key's bytes (and so its partition) are the record key's.
        value_serde: How values are encoded in the store and the changelog.
        default: What :meth:`get` and ``table[key]`` give for a missing key;
            a callable (``int``, ``dict``) is called for each miss, so a
            mutable default is never shared between keys. Without one,
            ``table[key]`` raises ``KeyError``.
        ttl: Seconds of event time after its last write when a key expires
            (``None``: never). Expired keys read as missing and are deleted
            from the changelog.
        partitions: Partition count of the changelog (default: the source's).
    """

    def __init__(
        self,
        app_name: str,
        name: str,
        *,
        key_serde: SerdeSpec = "str",
        value_serde: SerdeSpec = "json",
        default: Any = _NO_DEFAULT,
        ttl: float | None = None,
        partitions: int | None = None,
    ) -> None:
        if not _NAME.fullmatch(name):
            raise DeclarationError(
                f"invalid table name {name!r}: use 1-100 of letters, digits, '_', '-'"
            )
        if ttl is not None and (not isinstance(ttl, (int, float)) or ttl <= 0):
            raise DeclarationError(f"table {name}: ttl must be a positive number of seconds")
        self.name = name
        self.app_name = app_name
        self.key_serde = key_serde
        self.value_serde = value_serde
        self.has_default = default is not _NO_DEFAULT
        self.default: Any = None if default is _NO_DEFAULT else default
        self.default_factory: Callable[[], Any] | None = default if callable(default) else None
        self.ttl_ms: int | None = None if ttl is None else int(ttl * 1000)
        self.partitions = partitions
        # A window store (streamkit.windows): its values are a window's open windows.
        self.windowed = False
        # Set in each partition task that may use this table (the runtime
        # does it once per task): the slice of the partition being processed.
        self.current: ContextVar[TablePartition | None] = ContextVar(
            f"streamkit.table.{name}", default=None
        )

    def __repr__(self) -> str:
        return f"Table({self.name!r}, changelog={self.changelog_name!r})"

    @property
    def changelog_name(self) -> str:
        """``<app>.<table>.changelog``."""
        return f"{self.app_name}.{self.name}.changelog"

    def changelog(self, partitions: int | None) -> Topic:
        """The changelog topic: compacted, with the table's serdes and the source's partitions."""
        return Topic(
            self.changelog_name,
            key_serde=self.key_serde,
            value_serde=self.value_serde,
            partitions=self.partitions or partitions,
            # compact, never delete: the changelog *is* the table. The
            # tombstones of deleted and expired keys go after a day.
            config={"cleanup.policy": "compact", "delete.retention.ms": "86400000"},
        )

    def _here(self) -> TablePartition:
        part = self.current.get()
        if part is None:
            raise StateError(
                f"table {self.name} is used outside the agents that declare it: "
                f"list it in @app.agent(..., tables=[{self.name}])"
            )
        return part

    def key_from_text(self, text: str) -> Any:
        """A key typed by a person (a URL, the CLI) as the key serde takes it.

        ``str`` keys are the text, ``bytes`` keys its UTF-8; any other serde
        gets the text parsed as JSON when it parses (``42``, ``{"id": 1}``).
        """
        if self.key_serde == "str":
            return text
        if self.key_serde == "bytes":
            return text.encode()
        try:
            return json.loads(text)
        except ValueError:
            return text

    def missing(self, key: Any) -> Any:
        """The value of a missing key: the default, or ``KeyError``."""
        if self.default_factory is not None:
            return self.default_factory()
        if self.has_default:
            return self.default
        raise KeyError(key)

    # -- the mapping, over the current record's partition --------------------

    def get(self, key: Any, default: Any = _NO_DEFAULT) -> Any:
        """The value of ``key``, or ``default`` (else the table's default, else ``None``)."""
        found = self._here().get(key)
        if found is not _NO_VALUE:
            return found
        if default is not _NO_DEFAULT:
            return default
        return self.missing(key) if (self.has_default) else None

    def __getitem__(self, key: Any) -> Any:
        part = self.current.get()  # _here() spelled out: the hot path's most common call
        found = (part or self._here()).get(key)
        return self.missing(key) if found is _NO_VALUE else found

    def __setitem__(self, key: Any, value: Any) -> None:
        part = self.current.get()
        (part or self._here()).set(key, value)

    def __delitem__(self, key: Any) -> None:
        self._here().delete(key)

    def __contains__(self, key: Any) -> bool:
        return self._here().get(key) is not _NO_VALUE

    def __len__(self) -> int:
        """Keys in the current partition: a scan of its store (O(n))."""
        return sum(1 for _ in self._here().items())

    def __iter__(self) -> Iterator[Any]:
        """Keys of the current partition (a scan of its store)."""
        return (k for k, _ in self._here().items())

    def items(self) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` of the current partition (a scan of its store)."""
        return self._here().items()


# What TablePartition.get returns for a missing (or expired, or deleted) key.
_NO_VALUE: Any = _NO_DEFAULT
NO_VALUE: Any = _NO_VALUE
