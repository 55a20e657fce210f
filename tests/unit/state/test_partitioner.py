from __future__ import annotations

import pytest

from streamkit.backends.memory_records import default_partition
from streamkit.errors import ConfigError
from streamkit.state.partitioner import crc32_partition, murmur2, partitioner_for


def signed(h: int) -> int:
    return h - (1 << 32) if h >= 1 << 31 else h


def test_murmur2_matches_the_java_clients_values() -> None:
    # Values from Kafka's own UtilsTest.testMurmur2.
    assert signed(murmur2(b"21")) == -973932308
    assert signed(murmur2(b"foobar")) == -790332482
    assert signed(murmur2(b"a-little-bit-long-string")) == -985981536
    assert signed(murmur2(b"a-little-bit-longer-string")) == -1486304829
    assert signed(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8")) == -58897971
    assert signed(murmur2(b"abc")) == 479470107


def test_the_default_is_librdkafkas_consistent_random_as_the_memory_broker_has_it() -> None:
    place = partitioner_for({})
    for i in range(500):
        key = f"key-{i}".encode()
        assert place(key, 7) == crc32_partition(key, 7) == default_partition(key, 7)


def test_a_partitioner_that_does_not_place_keys_by_bytes_is_refused() -> None:
    with pytest.raises(ConfigError, match="partitioner"):
        partitioner_for({"partitioner": "random"})
    assert partitioner_for({"partitioner": "murmur2_random"})(b"21", 10) == (
        (murmur2(b"21") & 0x7FFFFFFF) % 10
    )
