"""Which partition a key lives in: the producer's partitioner, in Python.

Tables are local to a partition, so two places must agree with the producer
on where a key goes: the check that an agent reads and writes keys of its own
partition only, and ``streamkit tables get``, which reads the one changelog
partition that can hold a key when no worker is up. Both use the partitioner
the app's producer is configured with (librdkafka's ``partitioner``), decided
once at start.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from streamkit.errors import ConfigError

Partitioner = Callable[[bytes, int], int]


def crc32_partition(key: bytes, partitions: int) -> int:
    """Librdkafka's ``consistent`` and ``consistent_random`` (its default): CRC32 mod n."""
    return zlib.crc32(key) % partitions


def murmur2(data: bytes) -> int:
    """The 32-bit murmur2 hash of Kafka's Java client (``Utils.murmur2``), seed 0x9747b28c."""
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length % 4
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def murmur2_partition(key: bytes, partitions: int) -> int:
    """Librdkafka's ``murmur2`` and ``murmur2_random``: the Java client's default."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


_PARTITIONERS: dict[str, Partitioner] = {
    "consistent": crc32_partition,
    "consistent_random": crc32_partition,
    "murmur2": murmur2_partition,
    "murmur2_random": murmur2_partition,
}


def partitioner_for(producer_config: dict[str, object]) -> Partitioner:
    """The partitioner a producer with this librdkafka configuration uses for keyed records.

    Raises:
        ConfigError: A partitioner that does not place a key by its bytes
            (``random``, ``fnv1a``...): tables cannot find their keys.
    """
    name = str(producer_config.get("partitioner", "consistent_random"))
    found = _PARTITIONERS.get(name)
    if found is None:
        raise ConfigError(
            "kafka=partitioner",
            f"{name!r} is not supported with tables; use one of {', '.join(sorted(_PARTITIONERS))}",
        )
    return found
