"""The in-memory broker's records: the stored message and the partition it lands on.

Kept apart from :mod:`streamkit.backends.memory_broker`, which holds the
broker's state: a :class:`MemoryMessage` is what every log stores and every
client hands on, and :func:`default_partition` is where a keyed record goes,
as librdkafka's default partitioner (``consistent_random``) puts it. Neither
has state of its own.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import confluent_kafka
from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError

from streamkit.backends.memory_transactions import Transaction
from streamkit.types import Headers


def _crc32_partition(key: bytes, partition_count: int) -> int:
    return zlib.crc32(key) % partition_count


# librdkafka's own function where confluent-kafka exposes it (2.13+), so the
# numbers are the real partitioner's by construction; the same arithmetic
# otherwise (a unit test holds the two equal).
_librdkafka_partition: Callable[[bytes, int], int] = getattr(
    confluent_kafka, "consistent", _crc32_partition
)


def default_partition(key: bytes, partition_count: int) -> int:
    """The partition librdkafka's default partitioner gives a non-empty key."""
    return _librdkafka_partition(key, partition_count)


class MemoryMessage:
    """One stored record; duck-types the ``confluent_kafka.Message`` getters.

    Immutable once appended, so every consumer is handed the same object;
    whether a reader may see it is its transaction's state, not its own.
    """

    __slots__ = (
        "_error",
        "_headers",
        "_key",
        "_offset",
        "_partition",
        "_topic",
        "_ts",
        "_txn",
        "_value",
    )

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
        timestamp: int,
        error: KafkaError | None = None,
        transaction: Transaction | None = None,
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._headers = key, value, headers
        self._ts, self._error, self._txn = timestamp, error, transaction

    def topic(self) -> str:
        """The topic."""
        return self._topic

    def partition(self) -> int:
        """The partition."""
        return self._partition

    def offset(self) -> int:
        """The offset in its partition (-1 when the produce failed)."""
        return self._offset

    def key(self) -> bytes | None:
        """The key bytes, or ``None``."""
        return self._key

    def value(self) -> bytes | None:
        """The value bytes, or ``None`` (a tombstone)."""
        return self._value

    def headers(self) -> Headers | None:
        """Headers as ``[(name, bytes)]``; ``None`` when there are none, as in confluent-kafka."""
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        """``(TIMESTAMP_CREATE_TIME, milliseconds since the epoch)``."""
        return (TIMESTAMP_CREATE_TIME, self._ts)

    def error(self) -> KafkaError | None:
        """The produce error in a failed delivery report, else ``None``."""
        return self._error

    def transaction(self) -> Transaction | None:
        """The transaction that appended it; ``None`` for a non-transactional record."""
        return self._txn

    def __len__(self) -> int:
        return len(self._value or b"")

    def __repr__(self) -> str:
        return f"MemoryMessage({self._topic}[{self._partition}]@{self._offset}, key={self._key!r})"


class UnknownTopicError(KeyError):
    """The topic does not exist on the in-memory broker."""
