"""``streamkit tables get``: one key's value, read from the table's changelog.

It works with no worker up: the key's partition is where the producer's
partitioner puts its bytes (:mod:`streamkit.state.partitioner`), and its value
is the last record for it in that partition of the compacted changelog, read
as a restore reads it. At least once, records whose ``streamkit-src`` header
is at or past the group's committed source offset are skipped, exactly as a
restore skips them (their inputs are processed again); exactly once, the
changelog is read ``read_committed``. The read is of the whole partition, so
it costs what restoring that partition costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamkit.app import App
from streamkit.backends.kafka_reader import KafkaChangelogReader
from streamkit.config import AppConfig
from streamkit.errors import DeclarationError
from streamkit.runtime.codecs import Codecs
from streamkit.state.changelog import EXPIRES_HEADER, SOURCE_HEADER, unpack_offset
from streamkit.state.partitioner import partitioner_for


@dataclass(frozen=True, slots=True)
class TableValue:
    """What the changelog says of one key.

    Attributes:
        table: The table.
        key: The key as given.
        partition: The key's partition.
        found: Whether the key has a value (not deleted, never written, or skipped).
        value: The decoded value (``None`` when not found).
        offset: The changelog offset of the record that gave it.
        expires_ms: TTL tables: the event time it expires at.
        skipped: Records of the key skipped because their inputs were not committed.
    """

    table: str
    key: str
    partition: int
    found: bool
    value: Any = None
    offset: int | None = None
    expires_ms: int | None = None
    skipped: int = 0

    def to_json(self) -> dict[str, Any]:
        """For ``--json``."""
        return {
            "table": self.table,
            "key": self.key,
            "partition": self.partition,
            "found": self.found,
            "value": self.value,
            "offset": self.offset,
            "expires_ms": self.expires_ms,
            "skipped_uncommitted": self.skipped,
        }


def table_get(app: App, config: AppConfig, table: str, key: str) -> TableValue:
    """Read ``key`` of ``table`` from its changelog.

    Raises:
        DeclarationError: The app has no such table, or its changelog does not exist.
    """
    found = app.tables.get(table)
    if found is None:
        raise DeclarationError(
            f"app {app.name} has no table {table!r}; it has: {', '.join(sorted(app.tables)) or '-'}"
        )
    codec = Codecs(config)(found.changelog(None))
    kb: bytes = codec.key.serialize(found.key_from_text(key))
    reader = KafkaChangelogReader(config)
    try:
        partitions = reader.partitions(found.changelog_name)
        if partitions is None:
            raise DeclarationError(f"changelog topic {found.changelog_name} does not exist")
        partition = partitioner_for(config.librdkafka("producer"))(kb, partitions)
        agent = app.table_agent(found)
        threshold = None
        if agent is not None and not config.exactly_once:
            threshold = reader.committed(agent.source.name, partition)
            if threshold is None and config.auto_offset_reset == "earliest":
                threshold = 0
        low, high = reader.bounds(found.changelog_name, partition)
        value: bytes | None = None
        offset = expires = None
        skipped = 0
        for records in reader.read(found.changelog_name, partition, low, high):
            for at, record_key, record_value, headers in records:
                if record_key != kb:
                    continue
                src = exp = None
                for name, raw in headers or ():
                    if name == SOURCE_HEADER:
                        src = unpack_offset(raw)
                    elif name == EXPIRES_HEADER:
                        exp = unpack_offset(raw)
                if threshold is not None and src is not None and src >= threshold:
                    skipped += 1
                    continue
                value, offset, expires = record_value, at, exp
    finally:
        reader.close()
    decoded = None if value is None else codec.value.deserialize(value)
    return TableValue(table, key, partition, value is not None, decoded, offset, expires, skipped)
