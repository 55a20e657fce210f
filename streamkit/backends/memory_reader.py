"""The changelog reader of the memory backend: straight from the broker's logs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from streamkit.backends.memory_broker import MemoryBroker
from streamkit.types import TopicPartition


class MemoryChangelogReader:
    """Reads changelog partitions of a :class:`MemoryBroker` as a restore does.

    Args:
        broker: The broker.
        group: The group whose committed offsets :meth:`committed` reports.
        read_committed: Only records of committed transactions (exactly once).
    """

    def __init__(self, broker: MemoryBroker, group: str, read_committed: bool) -> None:
        self._broker = broker
        self._group = group
        self._committed_only = read_committed

    def _records(self, topic: str, partition: int) -> list[Any]:
        return [
            m
            for m in self._broker.messages(topic, committed_only=self._committed_only)
            if m.partition() == partition
        ]

    def bounds(self, topic: str, partition: int) -> tuple[int, int]:
        """``(0, end)``: the memory broker keeps every record."""
        records = self._records(topic, partition)
        if self._committed_only:
            return 0, records[-1].offset() + 1 if records else 0
        return 0, self._broker.end_offsets(topic)[partition]

    def committed(self, topic: str, partition: int) -> int | None:
        """The group's committed offset of a source partition."""
        return self._broker.committed(self._group, topic).get(TopicPartition(topic, partition))

    def partitions(self, topic: str) -> int | None:
        """The topic's partition count (``None``: it does not exist)."""
        return self._broker.topics().get(topic)

    def read(
        self, topic: str, partition: int, start: int, end: int
    ) -> Iterator[list[tuple[int, bytes | None, bytes | None, Any]]]:
        """One batch: the records from ``start`` to ``end``."""
        yield [
            (m.offset(), m.key(), m.value(), m.headers())
            for m in self._records(topic, partition)
            if start <= m.offset() < end
        ]

    def close(self) -> None:
        """Nothing to release."""
