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
* **Transactions.** A ``transactional.id`` has an epoch; a newer
  ``init_transactions`` (or :meth:`MemoryBroker.fence`) aborts the open
  transaction of the older epoch and refuses that epoch from then on. A
  transaction's records take offsets when appended but stay invisible to
  ``read_committed`` members until it commits: their fetch stops at the
  first record of an open transaction (the last stable offset) and skips
  aborted records. Offsets a transaction stages for a group are checked
  against the member that sent them (KIP-447 zombie fencing) and applied
  only when it commits; a ``read_committed`` member is not assigned a
  partition while an open transaction holds offsets for it, as Kafka's
  consumer waits for stable offsets.

What it does not model is listed in ``docs/testing.md`` (replication,
retention, broker outages, quotas, wire-level batching). For transactions:
no commit or abort markers (offsets stay contiguous, where Kafka gives each
marker an offset), and no ``transaction.timeout.ms`` (a transaction stays
open until it is committed, aborted or fenced, or its producer crashes).

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
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_STORED,
    TIMESTAMP_CREATE_TIME,
    KafkaError,
)

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


OPEN, COMMITTED, ABORTED = "open", "committed", "aborted"


@dataclass(eq=False)
class Transaction:
    """One transaction of a transactional producer; changed under the broker's lock.

    Attributes:
        transactional_id: The producer's ``transactional.id``.
        epoch: The producer epoch that began it; a newer epoch aborts it.
        state: ``open``, ``committed`` or ``aborted``.
        first: The offset of its first record in each partition it wrote
            to: while it is open, the lowest of these bounds what
            ``read_committed`` members may fetch there.
        offsets: Offsets staged per consumer group, applied when it commits.
    """

    transactional_id: str
    epoch: int
    state: str = OPEN
    first: dict[TopicPartition, int] = field(default_factory=dict)
    offsets: dict[str, dict[TopicPartition, int]] = field(default_factory=dict)


class ProducerFencedError(Exception):
    """A call from a producer epoch that a newer ``init_transactions`` replaced."""

    def __init__(self, transactional_id: str, epoch: int) -> None:
        self.transactional_id = transactional_id
        self.epoch = epoch
        super().__init__(f"transactional.id {transactional_id}: epoch {epoch} is fenced")


class TransactionStateError(Exception):
    """A transactional call the transaction's state does not allow (it already ended)."""


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
        isolation: ``read_committed`` (librdkafka's default) or ``read_uncommitted``.
        generation: Counts the member's joins: a rejoin after an expiry makes
            :class:`GroupMetadata` taken before it stale.
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
    isolation: str = "read_committed"
    generation: int = 0


@dataclass(frozen=True)
class GroupMetadata:
    """What ``consumer_group_metadata()`` returns: opaque to the application.

    Attributes:
        group: The consumer group the offsets are for.
        member: The member that handed it out (``None`` before it joined:
            Kafka then skips the member check, and so does this broker).
        generation: ``member.generation`` when it was handed out.
    """

    group: str
    member: Member | None
    generation: int


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
        self._epochs: dict[str, int] = {}  # transactional.id -> current epoch
        self._open: dict[str, Transaction] = {}  # transactional.id -> its open transaction
        # Partitions that ever held a transactional record: only their fetches
        # look at each record; every other log is served by slicing, as before.
        self._transactional: set[TopicPartition] = set()

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
        transaction: Transaction | None = None,
    ) -> MemoryMessage:
        """Append one record (as part of ``transaction`` if given) and wake its consumers.

        Raises:
            ProducerFencedError: ``transaction``'s epoch was fenced.
            TransactionStateError: ``transaction`` already ended.
            UnknownTopicError: ``topic`` does not exist.
            IndexError: ``partition`` is out of range.
        """
        with self._lock:
            if transaction is not None:
                self._check_open(transaction)
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
            offset = len(records)
            msg = MemoryMessage(
                topic, partition, offset, key, value, headers or None, ts, None, transaction
            )
            records.append(msg)
            if transaction is not None:
                tp = TopicPartition(topic, partition)
                transaction.first.setdefault(tp, offset)
                self._transactional.add(tp)
            self.data.notify_all()
            return msg

    def messages(self, topic: str, committed_only: bool = False) -> list[MemoryMessage]:
        """The records of ``topic``, partition by partition, in offset order.

        Args:
            topic: The topic.
            committed_only: Only what a ``read_committed`` reader sees now:
                each partition up to its first record of an open transaction
                (later records wait behind it, even non-transactional ones),
                without aborted records. By default every record, open and
                aborted ones included, as a ``read_uncommitted`` reader sees.
        """
        with self._lock:
            if not committed_only:
                return [m for log in self._log(topic) for m in log]
            out: list[MemoryMessage] = []
            for p, records in enumerate(self._log(topic)):
                tp = TopicPartition(topic, p)
                out.extend(self._visible(tp, records[: self._stable_offset(tp)]))
            return out

    def end_offsets(self, topic: str) -> dict[int, int]:
        """The next offset of each partition (its high watermark)."""
        with self._lock:
            return {p: len(log) for p, log in enumerate(self._log(topic))}

    def _log(self, topic: str) -> list[list[MemoryMessage]]:
        log = self._logs.get(topic)
        if log is None:
            raise UnknownTopicError(topic)
        return log

    def _stable_offset(self, tp: TopicPartition) -> int:
        """The last stable offset: the first record of an open transaction, else the end."""
        firsts = [t.first[tp] for t in self._open.values() if tp in t.first]
        return min(firsts) if firsts else len(self._logs[tp.topic][tp.partition])

    def _visible(self, tp: TopicPartition, records: list[MemoryMessage]) -> list[MemoryMessage]:
        """``records`` (all below the stable offset) without the aborted ones."""
        if tp not in self._transactional:
            return records
        return [m for m in records if m._txn is None or m._txn.state != ABORTED]

    # -- transactions --------------------------------------------------------------

    def init_transactions(self, transactional_id: str) -> int:
        """Register a producer for ``transactional_id``; returns its new epoch.

        The previous epoch's open transaction is aborted and that epoch is
        fenced: each of its later calls raises :class:`ProducerFencedError`.
        """
        with self._lock:
            self._abort(self._open.get(transactional_id))
            epoch = self._epochs.get(transactional_id, -1) + 1
            self._epochs[transactional_id] = epoch
            return epoch

    def fence(self, transactional_id: str) -> None:
        """As if another producer with ``transactional_id`` called ``init_transactions``."""
        self.init_transactions(transactional_id)

    def begin_transaction(self, transactional_id: str, epoch: int) -> Transaction:
        """Open a transaction for the producer at ``epoch``.

        Raises:
            ProducerFencedError: ``epoch`` is not the id's current one.
            TransactionStateError: The id already has an open transaction.
        """
        with self._lock:
            self._check_epoch(transactional_id, epoch)
            if transactional_id in self._open:
                raise TransactionStateError(f"{transactional_id}: a transaction is open")
            txn = self._open[transactional_id] = Transaction(transactional_id, epoch)
            return txn

    def stage_offsets(
        self,
        transaction: Transaction,
        metadata: GroupMetadata,
        offsets: list[tuple[TopicPartition, int]],
    ) -> None:
        """Stage offsets for ``metadata.group``; they are committed with ``transaction``.

        The member must still be the one that handed out ``metadata`` and own
        every partition: otherwise it is a zombie whose records others are
        processing now (KIP-447), and its offsets would overwrite theirs.

        Raises:
            ProducerFencedError: The transaction's epoch was fenced.
            TransactionStateError: The transaction already ended.
            MemberError: The member left, crashed, expired, rejoined since, or
                no longer owns one of the partitions.
            UnknownTopicError: A partition does not exist.
        """
        with self._lock:
            self._check_open(transaction)
            member = metadata.member
            if member is not None:
                grp = self._groups.get(metadata.group)
                if grp is None or grp.members.get(member.id) is not member:
                    raise MemberError(member.id, member.state)
                if member.generation != metadata.generation:
                    raise MemberError(
                        member.id,
                        member.state,
                        f"member {member.id} rejoined (generation {member.generation}) "
                        f"since generation {metadata.generation}",
                    )
                for tp, _ in offsets:
                    if tp not in member.owned:
                        raise MemberError(
                            member.id, member.state, f"member {member.id} does not own {tp}"
                        )
            for tp, offset in offsets:
                if not 0 <= tp.partition < len(self._logs.get(tp.topic, ())):
                    raise UnknownTopicError(f"{tp}@{offset}")
            transaction.offsets.setdefault(metadata.group, {}).update(offsets)

    def end_transaction(self, transaction: Transaction, commit: bool) -> None:
        """Commit (records visible, staged offsets applied, atomically) or abort.

        Raises:
            ProducerFencedError: The transaction's epoch was fenced (a fence
                aborted the transaction already).
            TransactionStateError: The transaction already ended.
        """
        with self._lock:
            self._check_open(transaction)
            if not commit:
                self._abort(transaction)
                return
            for group, offsets in transaction.offsets.items():
                self._groups.setdefault(group, _Group()).committed.update(offsets)
            transaction.state = COMMITTED
            del self._open[transaction.transactional_id]
            self._changed()

    def abandon(self, transaction: Transaction) -> None:
        """Abort ``transaction`` if it is still open: its producer died."""
        with self._lock:
            if self._open.get(transaction.transactional_id) is transaction:
                self._abort(transaction)

    def _abort(self, transaction: Transaction | None) -> None:
        if transaction is None:
            return
        transaction.state = ABORTED
        del self._open[transaction.transactional_id]
        self._changed()  # read_committed members may fetch past it now

    def _check_epoch(self, transactional_id: str, epoch: int) -> None:
        if self._epochs.get(transactional_id) != epoch:
            raise ProducerFencedError(transactional_id, epoch)

    def _check_open(self, transaction: Transaction) -> None:
        self._check_epoch(transaction.transactional_id, transaction.epoch)
        if transaction.state != OPEN:
            raise TransactionStateError(f"the transaction is {transaction.state}")

    # -- groups: membership ------------------------------------------------------

    def join(
        self,
        group: str,
        topics: Iterable[str],
        reset: str = "earliest",
        isolation: str = "read_committed",
    ) -> Member:
        """Add a member to ``group``; the group rebalances."""
        with self._lock:
            member = Member(f"{group}-{next(self._ids)}", group, tuple(topics), reset)
            member.isolation = isolation
            self._join(member)
            return member

    def _join(self, member: Member) -> None:
        grp = self._groups.setdefault(member.group, _Group())
        member.state = "active"
        member.generation += 1
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
        for tp, target in sorted(grp.target.items()):
            member = grp.members.get(target)
            if tp in grp.owner or member is None or member.isolation != "read_committed":
                continue
            for t in self._open.values():
                if tp in t.offsets.get(group, ()):
                    out.append(
                        f"{tp}: {target} waits for the open transaction of "
                        f"{t.transactional_id}, which holds offsets for it"
                    )
        for member in grp.members.values():
            if member.in_hand:
                out.append(f"{member.id}: {member.in_hand} records being handed over")
            for tp, position in member.owned.items():
                end = len(self._logs[tp.topic][tp.partition])
                if position >= end:
                    continue
                line = f"{tp}: {end - position} records not fetched by {member.id}"
                stable = self._stable_offset(tp)
                if member.isolation == "read_committed" and position >= stable:
                    line += f" (an open transaction holds them back from offset {stable})"
                out.append(line)
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
            tp
            for tp, m in grp.target.items()
            if m == member.id and tp not in grp.owner and not self._unstable(member, tp)
        )
        for tp in assign:
            grp.owner[tp] = member.id
            member.owned[tp] = self._start_offset(member, tp)
        return lost, revoke, assign

    def revoked(self, member: Member, tps: list[TopicPartition]) -> None:
        """The member finished revoking ``tps``: they are free for their next owner."""
        with self._lock:
            grp = self._groups.get(member.group)
            if grp is not None:
                self._release(grp, member, tps)
            self._changed()

    def _unstable(self, member: Member, tp: TopicPartition) -> bool:
        """Whether an open transaction holds offsets for the member's group on ``tp``.

        A ``read_committed`` consumer asks for stable offsets (KIP-447): it
        waits for that transaction to end, so it starts where the previous
        owner's last transaction left off, not before it.
        """
        if member.isolation != "read_committed":
            return False
        return any(tp in t.offsets.get(member.group, ()) for t in self._open.values())

    def _start_offset(self, member: Member, tp: TopicPartition) -> int:
        committed = self._groups[member.group].committed.get(tp)
        if committed is not None:
            return committed
        return 0 if member.reset == "earliest" else self._end_for(member, tp)

    def _end_for(self, member: Member, tp: TopicPartition) -> int:
        """Where ``latest`` starts: a ``read_committed`` reader's end is the last stable offset."""
        if member.isolation == "read_committed":
            return self._stable_offset(tp)
        return len(self._logs[tp.topic][tp.partition])

    def _changed(self) -> None:
        self.data.notify_all()
        self.note_progress()

    # -- groups: fetching and offsets --------------------------------------------

    def fetch(self, member: Member, limit: int) -> list[MemoryMessage]:
        """Up to ``limit`` records from the member's unpaused partitions (lock held).

        Partitions take turns as the first one served, so a busy partition
        cannot starve the others. A ``read_committed`` member stops at the
        last stable offset and steps over aborted records: they advance its
        position without being returned.
        """
        tps = [tp for tp in member.owned if tp not in member.paused]
        out: list[MemoryMessage] = []
        if not tps:
            return out
        member.turn += 1
        start = member.turn % len(tps)
        committed_only = member.isolation == "read_committed"
        skipped = False
        for tp in tps[start:] + tps[:start]:
            position = member.owned[tp]
            records = self._logs[tp.topic][tp.partition]
            stop = self._stable_offset(tp) if committed_only else len(records)
            while position < stop and len(out) < limit:
                taken = records[position : min(stop, position + limit - len(out))]
                position += len(taken)
                visible = self._visible(tp, taken) if committed_only else taken
                skipped = skipped or len(visible) < len(taken)
                out.extend(visible)
            member.owned[tp] = position
            if len(out) >= limit:
                break
        if skipped and not out:
            self.note_progress()  # a position moved though nothing is handed on
        return out

    def seek(self, member: Member, tp: TopicPartition, offset: int) -> None:
        """Move the member's fetch position on an owned partition (lock held).

        Logical offsets resolve as librdkafka resolves them; an offset past
        the end is out of range, and the member's ``reset`` applies.

        Raises:
            KeyError: The member does not own ``tp``.
            ValueError: ``offset`` is negative and not a logical offset.
        """
        if tp not in member.owned:
            raise KeyError(tp)
        end = len(self._logs[tp.topic][tp.partition])
        if offset == OFFSET_BEGINNING:
            offset = 0
        elif offset == OFFSET_END:
            offset = self._end_for(member, tp)
        elif offset == OFFSET_STORED:
            offset = self._start_offset(member, tp)
        elif offset < 0:
            raise ValueError(f"cannot seek {tp} to offset {offset}")
        elif offset > end:
            offset = 0 if member.reset == "earliest" else self._end_for(member, tp)
        member.owned[tp] = offset
        self._changed()

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

    def __init__(self, member: str, state: str, reason: str | None = None) -> None:
        self.member = member
        self.state = state
        super().__init__(reason or f"member {member} is {state}, not in its group")
