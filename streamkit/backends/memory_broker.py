"""An in-memory Kafka broker: partitioned logs and consumer groups.

What it models, because the runtime's guarantees depend on it:

* **Logs.** Topics with a fixed number of partitions; each partition an
  append-only list with offsets from 0, record timestamps, keys and headers.
  A keyed record lands on the partition librdkafka's default partitioner
  (``consistent_random``) picks: CRC32 of the key modulo the partition
  count. Records without a key (or with an empty one) go round robin, where
  librdkafka picks at random: same spread, reproducible tests.
* **Consumer groups.** Committed offsets per partition; members that join
  and leave; a cooperative-sticky assignment (balanced, moving only the
  partitions that must move). A partition changes owner in two steps, as in
  Kafka's cooperative protocol: the old owner revokes it (and commits), and
  only then the new owner is assigned it, starting at the committed offset.
* **Failures.** A crashed member leaves at once without revoking or
  committing; an expired member (session timeout) loses its partitions,
  hears about it in ``on_lost``, and its commits are refused until it rejoins.

What it does not model is listed in ``docs/testing.md`` (replication,
retention, transactions, broker outages, quotas, wire-level batching).

Every method is thread-safe: one lock guards all state. Clients wait on
:attr:`data` (new records, assignment changes) and test drivers on
:attr:`progress` (commits, membership, clients' polls); both share the lock.
"""

from __future__ import annotations

import itertools
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import confluent_kafka
from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError

from streamkit.clock import Clock, SystemClock
from streamkit.types import Headers, TopicPartition


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

    Immutable once appended, so every consumer is handed the same object.
    """

    __slots__ = ("_error", "_headers", "_key", "_offset", "_partition", "_topic", "_ts", "_value")

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
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._headers = key, value, headers
        self._ts, self._error = timestamp, error

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

    def __len__(self) -> int:
        return len(self._value or b"")

    def __repr__(self) -> str:
        return f"MemoryMessage({self._topic}[{self._partition}]@{self._offset}, key={self._key!r})"


class UnknownTopicError(KeyError):
    """The topic does not exist on the in-memory broker."""


@dataclass(eq=False)
class Member:
    """A consumer's state in its group; owned by the broker, changed under its lock.

    Attributes:
        id: Unique on the broker.
        group: The consumer group.
        topics: The subscription.
        reset: ``earliest`` or ``latest``: where a partition without a commit starts.
        owned: Partitions this member holds, with the next offset to fetch.
        paused: Owned partitions that consume() skips.
        in_hand: Records the last consume() returned; zero again once the
            caller comes back, so a driver knows a batch was handed on.
        lost: Partitions taken away by an expiry, for the next ``on_lost``.
        state: ``active``, ``expired`` (must rejoin), ``left`` or ``crashed``.
    """

    id: str
    group: str
    topics: tuple[str, ...]
    reset: str
    owned: dict[TopicPartition, int] = field(default_factory=dict)
    paused: set[TopicPartition] = field(default_factory=set)
    in_hand: int = 0
    lost: list[TopicPartition] = field(default_factory=list)
    state: str = "active"
    turn: int = 0


@dataclass(eq=False)
class _Group:
    members: dict[str, Member] = field(default_factory=dict)  # join order
    target: dict[TopicPartition, str] = field(default_factory=dict)  # the assignment to reach
    owner: dict[TopicPartition, str] = field(default_factory=dict)  # who holds it now
    committed: dict[TopicPartition, int] = field(default_factory=dict)


class MemoryBroker:
    """The shared state behind in-memory consumers and producers.

    Args:
        clock: Source of record timestamps (a ``ManualClock`` makes them reproducible).
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self.data = threading.Condition(self._lock)
        self.progress = threading.Condition(self._lock)
        self.progress_seq = 0
        self._logs: dict[str, list[list[MemoryMessage]]] = {}
        self._round_robin: dict[str, itertools.cycle[int]] = {}
        self._groups: dict[str, _Group] = {}
        self._ids = itertools.count(1)

    # -- topics and logs -------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1) -> bool:
        """Create ``name`` unless it exists; whether it was created."""
        if partitions < 1:
            raise ValueError(f"topic {name}: partitions must be at least 1, got {partitions}")
        with self._lock:
            if name in self._logs:
                return False
            self._logs[name] = [[] for _ in range(partitions)]
            self._round_robin[name] = itertools.cycle(range(partitions))
            for group in self._groups.values():
                self._rebalance(group)  # subscribers of a new topic get its partitions
            return True

    def topics(self) -> dict[str, int]:
        """Every topic and its partition count."""
        with self._lock:
            return {name: len(log) for name, log in self._logs.items()}

    def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> MemoryMessage:
        """Append one record and wake its consumers.

        Raises:
            UnknownTopicError: ``topic`` does not exist.
            IndexError: ``partition`` is out of range.
        """
        with self._lock:
            log = self._logs.get(topic)
            if log is None:
                raise UnknownTopicError(topic)
            if partition is None or partition < 0:
                partition = (
                    default_partition(key, len(log)) if key else next(self._round_robin[topic])
                )
            elif partition >= len(log):
                raise IndexError(f"{topic} has {len(log)} partitions; there is no {partition}")
            records = log[partition]
            ts = timestamp or int(self.clock.time() * 1000)
            msg = MemoryMessage(topic, partition, len(records), key, value, headers or None, ts)
            records.append(msg)
            self.data.notify_all()
            return msg

    def messages(self, topic: str) -> list[MemoryMessage]:
        """Every record of ``topic``, partition by partition, in offset order."""
        with self._lock:
            return [m for log in self._log(topic) for m in log]

    def end_offsets(self, topic: str) -> dict[int, int]:
        """The next offset of each partition (its high watermark)."""
        with self._lock:
            return {p: len(log) for p, log in enumerate(self._log(topic))}

    def _log(self, topic: str) -> list[list[MemoryMessage]]:
        log = self._logs.get(topic)
        if log is None:
            raise UnknownTopicError(topic)
        return log

    # -- groups: membership ------------------------------------------------------

    def join(self, group: str, topics: Iterable[str], reset: str = "earliest") -> Member:
        """Add a member to ``group``; the group rebalances."""
        with self._lock:
            member = Member(f"{group}-{next(self._ids)}", group, tuple(topics), reset)
            self._join(member)
            return member

    def _join(self, member: Member) -> None:
        grp = self._groups.setdefault(member.group, _Group())
        member.state = "active"
        grp.members[member.id] = member
        self._rebalance(grp)

    def leave(self, member: Member, crashed: bool = False) -> None:
        """Remove a member: gracefully (after it revoked) or as a crash (nothing revoked)."""
        with self._lock:
            grp = self._groups[member.group]
            grp.members.pop(member.id, None)
            self._release(grp, member, list(member.owned))
            member.state = "crashed" if crashed else "left"
            self._rebalance(grp)

    def expire(self, member: Member) -> None:
        """The member's session timed out: its partitions go to others now.

        The member learns it in ``on_lost`` at its next consume and rejoins;
        until then its commits are refused, as Kafka refuses a fenced member's.
        """
        with self._lock:
            grp = self._groups[member.group]
            if grp.members.pop(member.id, None) is None:
                return
            member.lost.extend(member.owned)
            self._release(grp, member, list(member.owned))
            member.state = "expired"
            self._rebalance(grp)

    def move(self, group: str, tps: Iterable[TopicPartition], member: Member) -> None:
        """Reassign partitions to ``member``, as an explicit rebalance would."""
        with self._lock:
            grp = self._groups[group]
            for tp in tps:
                if tp.topic not in member.topics or member.id not in grp.members:
                    raise ValueError(f"member {member.id} cannot own {tp}")
                grp.target[tp] = member.id
            self._changed()

    def members(self, group: str) -> list[Member]:
        """Active members in join order."""
        with self._lock:
            grp = self._groups.get(group)
            return list(grp.members.values()) if grp else []

    def stable(self, group: str) -> bool:
        """Whether every member holds exactly its target assignment (lock held).

        False while a rebalance is under way: a partition waits to be revoked
        by its old owner or to be assigned to its new one.
        """
        grp = self._groups.get(group)
        if grp is None:
            return True
        return all(not m.lost for m in grp.members.values()) and grp.owner == grp.target

    def caught_up(self, group: str) -> list[str]:
        """What the group's members have not fetched yet; empty when all is handed over.

        Call with the lock held (``with broker.progress:``), so a driver can
        check it and the runtime's own state as one snapshot.
        """
        grp = self._groups.get(group)
        if grp is None:
            return []
        out = []
        if not self.stable(group):
            out.append(f"group {group}: rebalance in progress")
        for member in grp.members.values():
            if member.in_hand:
                out.append(f"{member.id}: {member.in_hand} records being handed over")
            for tp, position in member.owned.items():
                end = len(self._logs[tp.topic][tp.partition])
                if position < end:
                    out.append(f"{tp}: {end - position} records not fetched by {member.id}")
        return out

    # -- groups: assignment ------------------------------------------------------

    def _release(self, grp: _Group, member: Member, tps: list[TopicPartition]) -> None:
        for tp in tps:
            member.owned.pop(tp, None)
            member.paused.discard(tp)
            if grp.owner.get(tp) == member.id:
                del grp.owner[tp]

    def _rebalance(self, grp: _Group) -> None:
        """Recompute the target: keep owners where balanced, spread the rest evenly."""
        members = grp.members
        wanted = sorted(
            TopicPartition(topic, p)
            for topic in {t for m in members.values() for t in m.topics}
            if topic in self._logs
            for p in range(len(self._logs[topic]))
        )
        target = {
            tp: m
            for tp, m in grp.target.items()
            if m in members and tp.topic in members[m].topics and tp in wanted
        }
        load = Counter({m: 0 for m in members})
        load.update(target.values())
        for tp in wanted:
            if tp not in target:
                eligible = [m for m in members if tp.topic in members[m].topics]
                if eligible:
                    target[tp] = min(eligible, key=lambda m: load[m])
                    load[target[tp]] += 1
        moved = True
        while moved:  # each move lowers the spread, so this ends
            moved = False
            for tp in sorted(target, reverse=True):
                owner = target[tp]
                eligible = [m for m in members if tp.topic in members[m].topics]
                lightest = min(eligible, key=lambda m: load[m])
                if load[owner] - load[lightest] >= 2:
                    target[tp] = lightest
                    load[owner] -= 1
                    load[lightest] += 1
                    moved = True
                    break
        grp.target = target
        self._changed()

    def next_step(
        self, member: Member
    ) -> tuple[list[TopicPartition], list[TopicPartition], list[TopicPartition]]:
        """What ``member`` must do now: ``(lost, revoke, assign)`` (lock held by the caller).

        Partitions to assign are claimed here, before the callback runs, so
        two members never own one partition; partitions to revoke stay owned
        until :meth:`revoked` says the callback (and its commit) finished.
        """
        lost, member.lost = member.lost, []
        grp = self._groups.get(member.group)
        if grp is None or member.state != "active":
            return lost, [], []
        revoke = [tp for tp in member.owned if grp.target.get(tp) != member.id]
        assign = sorted(
            tp for tp, m in grp.target.items() if m == member.id and tp not in grp.owner
        )
        for tp in assign:
            grp.owner[tp] = member.id
            member.owned[tp] = self._start_offset(grp, tp, member.reset)
        return lost, revoke, assign

    def revoked(self, member: Member, tps: list[TopicPartition]) -> None:
        """The member finished revoking ``tps``: they are free for their next owner."""
        with self._lock:
            grp = self._groups.get(member.group)
            if grp is not None:
                self._release(grp, member, tps)
            self._changed()

    def _start_offset(self, grp: _Group, tp: TopicPartition, reset: str) -> int:
        committed = grp.committed.get(tp)
        if committed is not None:
            return committed
        return 0 if reset == "earliest" else len(self._logs[tp.topic][tp.partition])

    def _changed(self) -> None:
        self.data.notify_all()
        self.note_progress()

    # -- groups: fetching and offsets --------------------------------------------

    def fetch(self, member: Member, limit: int) -> list[MemoryMessage]:
        """Up to ``limit`` records from the member's unpaused partitions (lock held).

        Partitions take turns as the first one served, so a busy partition
        cannot starve the others.
        """
        tps = [tp for tp in member.owned if tp not in member.paused]
        out: list[MemoryMessage] = []
        if not tps:
            return out
        member.turn += 1
        start = member.turn % len(tps)
        for tp in tps[start:] + tps[:start]:
            position = member.owned[tp]
            records = self._logs[tp.topic][tp.partition]
            taken = records[position : position + limit - len(out)]
            if taken:
                out.extend(taken)
                member.owned[tp] = position + len(taken)
                if len(out) >= limit:
                    break
        return out

    def commit(self, member: Member, offsets: list[tuple[TopicPartition, int]]) -> None:
        """Store committed offsets for the member's group.

        Raises:
            MemberError: The member is not in the group (left, crashed, or
                expired and not yet rejoined), as Kafka fences a stale member.
            UnknownTopicError: A partition does not exist.
        """
        with self._lock:
            grp = self._groups.get(member.group)
            if grp is None or member.id not in grp.members:
                raise MemberError(member.id, member.state)
            for tp, offset in offsets:
                if tp.partition >= len(self._log(tp.topic)) or offset < 0:
                    raise UnknownTopicError(f"{tp}@{offset}")
            for tp, offset in offsets:
                grp.committed[tp] = offset
            self.note_progress()

    def committed(self, group: str, topic: str | None = None) -> dict[TopicPartition, int]:
        """The group's committed offsets (all topics, or one)."""
        with self._lock:
            grp = self._groups.get(group)
            found = grp.committed if grp else {}
            return {tp: o for tp, o in sorted(found.items()) if topic in (None, tp.topic)}

    def rejoin_if_expired(self, member: Member) -> None:
        """An expired member that polls again joins as a new generation (lock held)."""
        if member.state == "expired" and not member.lost:
            self._join(member)

    def note_progress(self) -> None:
        """Wake test drivers waiting for progress (lock held)."""
        self.progress_seq += 1
        self.progress.notify_all()

    def poke(self) -> None:
        """Wake test drivers from outside (a client polled, a worker stopped)."""
        with self._lock:
            self.note_progress()


class MemberError(Exception):
    """A commit from a member the group no longer knows (fenced, left or crashed)."""

    def __init__(self, member: str, state: str) -> None:
        self.member = member
        self.state = state
        super().__init__(f"member {member} is {state}, not in its group")
