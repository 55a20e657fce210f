"""The records the test harness hands back: decoded, and dead letters read for you.

:class:`Record` is what :meth:`TestApp.records` returns; a dead letter is a
:class:`DeadLetterRecord`, the same record with its provenance headers
decoded, so a test asserts on ``.attempts`` rather than on header bytes.
Re-exported by :mod:`streamkit.testing`, where users import them from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from streamkit.app import App
from streamkit.config import AppConfig
from streamkit.runtime.failures import (
    H_ATTEMPTS,
    H_EXCEPTION,
    H_FIRST_FAILURE,
    H_MESSAGE,
    H_OFFSET,
    H_PARTITION,
    H_STAGE,
    H_TOPIC,
)
from streamkit.serde import SchemaStore, resolve_serde
from streamkit.serde.base import Serde
from streamkit.types import Headers

__all__ = ["DeadLetterOrigin", "DeadLetterRecord", "Record"]


@dataclass(frozen=True, slots=True)
class Record:
    """A record as stored on the in-memory broker, key and value decoded with the topic's serdes.

    Attributes:
        topic: The topic.
        partition: Its partition.
        offset: Its offset in the partition.
        key: The decoded key (``None`` if absent).
        value: The decoded value (``None`` for a tombstone).
        headers: ``[(name, bytes)]``, empty when there are none.
        timestamp: Milliseconds since the epoch (from the harness clock unless given).
    """

    topic: str
    partition: int
    offset: int
    key: Any
    value: Any
    headers: Headers
    timestamp: int


class DeadLetterOrigin(NamedTuple):
    """Where a dead letter's record was first read (before any retry tier)."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class DeadLetterRecord(Record):
    """A dead letter: a :class:`Record` whose provenance headers are also decoded.

    Key, value and ``headers`` stay as stored (the original bytes, the raw
    ``[(name, bytes)]``), so code written against :class:`Record` still works.

    Example::

        [dead] = t.dead_letters("process_order")
        assert (dead.exception, dead.attempts) == ("builtins.ValueError", 3)
        assert dead.origin == ("orders.raw", 0, 17)
    """

    @classmethod
    def of(cls, record: Record) -> DeadLetterRecord:
        """The dead-letter view of a record read from a dead-letter topic."""
        return cls(
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            record.headers,
            record.timestamp,
        )

    def _header(self, name: str) -> str:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "replace")
        raise KeyError(f"dead letter {self.topic}[{self.partition}]@{self.offset} has no {name}")

    @property
    def exception(self) -> str:
        """The failure's exception type, ``module.QualName`` (``builtins.ValueError``)."""
        return self._header(H_EXCEPTION)

    @property
    def message(self) -> str:
        """The exception's message (a ``DeadLetter`` signal's reason)."""
        return self._header(H_MESSAGE)

    @property
    def attempts(self) -> int:
        """Tries the record got: in-place attempts plus one per retry tier."""
        return int(self._header(H_ATTEMPTS))

    @property
    def stage(self) -> str:
        """Where it failed: ``deserialize``, ``process`` (the agent), ``serialize``, ``produce``."""
        return self._header(H_STAGE)

    @property
    def first_failure(self) -> datetime:
        """When the record first failed, a UTC ``datetime`` (milliseconds precision)."""
        ms = int(self._header(H_FIRST_FAILURE))
        return datetime.fromtimestamp(ms / 1000, UTC)

    @property
    def origin(self) -> DeadLetterOrigin:
        """The original topic, partition and offset of the record."""
        return DeadLetterOrigin(
            self._header(H_TOPIC), int(self._header(H_PARTITION)), int(self._header(H_OFFSET))
        )


def topic_codecs(app: App, config: AppConfig) -> dict[str, tuple[Serde, Serde]]:
    """Resolve every declared topic's serdes the way the worker does (same subjects, one store)."""
    store: SchemaStore | None = None
    out: dict[str, tuple[Serde, Serde]] = {}
    for topic in app.topics.values():
        specs = (topic.key_serde, topic.value_serde)
        if store is None and any(isinstance(s, str) and s.startswith("avro") for s in specs):
            store = SchemaStore(config.schemas_dir)
        key, value = (
            resolve_serde(
                spec,
                schemas=store,
                registry=config.schema_registry_url,
                subject=f"{topic.name}-{part}",
                registry_user_info=config.schema_registry_user_info,
            )
            for part, spec in (("key", topic.key_serde), ("value", topic.value_serde))
        )
        out[topic.name] = (key, value)
    return out
