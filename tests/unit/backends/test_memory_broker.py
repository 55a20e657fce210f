"""The in-memory broker's logs, partitioner and group bookkeeping, without clients."""

from __future__ import annotations

import zlib
from collections import Counter

import confluent_kafka
import pytest

from streamkit.backends.memory_broker import (
    Member,
    MemberError,
    MemoryBroker,
    UnknownTopicError,
    default_partition,
)
from streamkit.clock import ManualClock
from streamkit.types import TopicPartition

KEYS = [f"user-{i}".encode() for i in range(500)] + [b"\x00", b"\xff" * 40, "ключ".encode()]


def tps(topic: str, *partitions: int) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in partitions]


@pytest.mark.parametrize("partitions", [1, 2, 3, 4, 7, 12, 100])
def test_keyed_records_land_where_librdkafkas_default_partitioner_puts_them(
    partitions: int,
) -> None:
    broker = MemoryBroker()
    broker.create_topic("t", partitions)
    real = getattr(confluent_kafka, "consistent", None)
    for key in KEYS:
        placed = broker.append("t", key, b"v").partition()
        assert placed == default_partition(key, partitions) == zlib.crc32(key) % partitions
        if real is not None:  # librdkafka's own function (confluent-kafka >= 2.13)
            assert placed == real(key, partitions), key


def test_records_without_a_key_spread_evenly_over_partitions() -> None:
    broker = MemoryBroker()
    broker.create_topic("t", 4)
    placed = Counter(broker.append("t", key, b"v").partition() for key in [None, b""] * 20)
    assert placed == {0: 10, 1: 10, 2: 10, 3: 10}


def test_offsets_count_up_per_partition_with_timestamps_from_the_clock() -> None:
    clock = ManualClock(epoch=1000.0)
    broker = MemoryBroker(clock)
    broker.create_topic("t", 2)
    first = broker.append("t", None, b"a", partition=1)
    clock.advance(0.25)
    second = broker.append("t", None, b"b", partition=1, headers=[("h", b"1")])
    given = broker.append("t", None, b"c", partition=0, timestamp=42)
    assert [(m.partition(), m.offset()) for m in (first, second, given)] == [(1, 0), (1, 1), (0, 0)]
    assert [m.timestamp()[1] for m in (first, second, given)] == [1_000_000, 1_000_250, 42]
    assert (first.headers(), second.headers()) == (None, [("h", b"1")])
    assert [m.value() for m in broker.messages("t")] == [b"c", b"a", b"b"]
    assert broker.end_offsets("t") == {0: 1, 1: 2}


def test_unknown_topics_and_partitions_are_refused() -> None:
    broker = MemoryBroker()
    broker.create_topic("t", 2)
    with pytest.raises(UnknownTopicError):
        broker.append("nope", None, b"v")
    with pytest.raises(IndexError, match="t has 2 partitions"):
        broker.append("t", None, b"v", partition=2)
    assert broker.create_topic("t", 5) is False
    assert broker.topics() == {"t": 2}


def settle(broker: MemoryBroker, *members: Member) -> list[list[TopicPartition]]:
    """Let every member take its pending steps, as consume() does between callbacks."""
    for _ in range(3):  # a revoke frees partitions another member then takes
        for member in members:
            with broker.data:
                _, revoke, _ = broker.next_step(member)
            if revoke:
                broker.revoked(member, revoke)
    return [sorted(m.owned) for m in members]


def test_one_member_gets_every_partition_of_its_topics() -> None:
    broker = MemoryBroker()
    broker.create_topic("a", 2)
    broker.create_topic("b", 1)
    broker.create_topic("other", 3)
    member = broker.join("g", ["a", "b"])
    assert settle(broker, member) == [tps("a", 0, 1) + tps("b", 0)]


def test_members_share_partitions_evenly_and_a_join_moves_only_what_it_must() -> None:
    broker = MemoryBroker()
    broker.create_topic("t", 6)
    first = broker.join("g", ["t"])
    second = broker.join("g", ["t"])
    before = settle(broker, first, second)
    assert [len(p) for p in before] == [3, 3]
    assert sorted(before[0] + before[1]) == tps("t", 0, 1, 2, 3, 4, 5)
    third = broker.join("g", ["t"])
    after = settle(broker, first, second, third)
    assert [len(p) for p in after] == [2, 2, 2]
    # Sticky: the old members keep two of their own three partitions each.
    assert set(after[0]) <= set(before[0])
    assert set(after[1]) <= set(before[1])
    with broker.data:
        assert broker.stable("g")


def test_a_moving_partition_is_not_assigned_before_its_owner_revoked_it() -> None:
    broker = MemoryBroker()
    broker.create_topic("t", 2)
    first = broker.join("g", ["t"])
    settle(broker, first)
    second = broker.join("g", ["t"])
    with broker.data:
        _, _, assign = broker.next_step(second)
        assert assign == []  # both partitions still owned by the first member
        _, revoke, _ = broker.next_step(first)
        assert not broker.stable("g")
    assert len(revoke) == 1
    broker.revoked(first, revoke)
    with broker.data:
        _, _, assign = broker.next_step(second)
        assert assign == revoke
        assert broker.stable("g")


def test_an_assigned_partition_starts_at_the_committed_offset_or_the_reset_point() -> None:
    broker = MemoryBroker()
    broker.create_topic("t", 3)
    for p in range(3):
        for _ in range(5):
            broker.append("t", None, b"v", partition=p)
    setter = broker.join("g", ["t"])
    settle(broker, setter)
    broker.commit(setter, [(TopicPartition("t", 0), 2)])
    broker.leave(setter)
    early = broker.join("g", ["t"], reset="earliest")
    settle(broker, early)
    assert early.owned == {
        TopicPartition("t", 0): 2,
        TopicPartition("t", 1): 0,
        TopicPartition("t", 2): 0,
    }
    late = broker.join("other", ["t"], reset="latest")
    settle(broker, late)
    assert set(late.owned.values()) == {5}


def test_a_crashed_member_commits_nothing_and_its_partitions_move_at_once() -> None:
    broker = MemoryBroker()
    broker.create_topic("t", 2)
    first = broker.join("g", ["t"])
    second = broker.join("g", ["t"])
    settle(broker, first, second)
    broker.leave(first, crashed=True)
    with pytest.raises(MemberError, match="crashed"):
        broker.commit(first, [(TopicPartition("t", 0), 1)])
    assert settle(broker, second) == [tps("t", 0, 1)]
    assert broker.committed("g") == {}


def test_an_expired_member_hears_it_is_lost_and_cannot_commit_until_it_rejoins() -> None:
    broker = MemoryBroker()
    broker.create_topic("t", 1)
    zombie = broker.join("g", ["t"])
    settle(broker, zombie)
    broker.expire(zombie)
    other = broker.join("g", ["t"])
    assert settle(broker, other) == [tps("t", 0)]
    with pytest.raises(MemberError, match="expired"):
        broker.commit(zombie, [(TopicPartition("t", 0), 1)])
    with broker.data:
        lost, revoke, assign = broker.next_step(zombie)
        assert (lost, revoke, assign) == (tps("t", 0), [], [])
        broker.rejoin_if_expired(zombie)
    broker.commit(zombie, [(TopicPartition("t", 0), 1)])  # a member again: accepted
    assert broker.committed("g") == {TopicPartition("t", 0): 1}


def test_fetch_takes_turns_between_partitions_and_skips_paused_ones() -> None:
    broker = MemoryBroker()
    broker.create_topic("t", 2)
    for p in (0, 1):
        for i in range(4):
            broker.append("t", None, f"{p}-{i}".encode(), partition=p)
    member = broker.join("g", ["t"])
    settle(broker, member)
    with broker.data:
        first = [m.value() or b"" for m in broker.fetch(member, 2)]
        second = [m.value() or b"" for m in broker.fetch(member, 2)]
        member.paused.add(TopicPartition("t", 0))
        rest = [m.value() or b"" for m in broker.fetch(member, 10)]
        assert broker.caught_up("g") == [f"t[0]: 2 records not fetched by {member.id}"]
    assert {first[0][:1], second[0][:1]} == {b"0", b"1"}  # each partition got a first turn
    assert all(v.startswith(b"1") for v in rest)


def test_committed_offsets_are_per_group_and_per_topic() -> None:
    broker = MemoryBroker()
    broker.create_topic("a", 1)
    broker.create_topic("b", 1)
    member = broker.join("g", ["a", "b"])
    broker.commit(member, [(TopicPartition("a", 0), 3), (TopicPartition("b", 0), 1)])
    assert broker.committed("g", "a") == {TopicPartition("a", 0): 3}
    assert broker.committed("other") == {}
    with pytest.raises(UnknownTopicError):
        broker.commit(member, [(TopicPartition("a", 9), 1)])
