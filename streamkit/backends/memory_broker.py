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
* **Transactions.** Epochs, fencing, the last stable offset and aborted
  records, as :mod:`~streamkit.backends.memory_transactions` describes (with
  what it leaves out). This module does the group's share, as Kafka's group
  coordinator does: it checks offsets a transaction stages against the
  member that sent them (KIP-447 zombie fencing), applies them when the
  transaction commits, and does not assign a ``read_committed`` member a
  partition while an open transaction holds offsets for it.

The pieces without state live next to it: the stored record and the
partitioner in :mod:`~streamkit.backends.memory_records`, the group records
and the assignor in :mod:`~streamkit.backends.memory_groups`. Their names are
importable from here too.

What it does not model is listed in ``docs/testing.md`` (replication,
retention, broker outages, quotas, wire-level batching).

Every method is thread-safe: one lock guards all state. Clients wait on
:attr:`data` (new records, assignment changes) and test drivers on
:attr:`progress` (commits, membership, clients' polls); both share the lock.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, OFFSET_STORED

from streamkit.backends.memory_groups import (
    GroupMetadata,
    Member,
    MemberError,
    sticky_assignment,
)
from streamkit.backends.memory_records import MemoryMessage, UnknownTopicError, default_partition
from streamkit.backends.memory_transactions import (
    ABORTED,
    COMMITTED,
    OPEN,
    ProducerFencedError,
    Transaction,
    TransactionCoordinator,
    TransactionStateError,
)
from streamkit.clock import Clock, SystemClock
from streamkit.types import Headers, TopicPartition

# Defined here until they got modules of their own; still importable from here.
__all__ = [
    "ABORTED",
    "COMMITTED",
    "OPEN",
    "GroupMetadata",
    "Member",
    "MemberError",
    "MemoryBroker",
    "MemoryMessage",
    "ProducerFencedError",
    "Transaction",
    "TransactionStateError",
    "UnknownTopicError",
    "default_partition",
]


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
        self._txns = TransactionCoordinator(self._changed)

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
                self._txns.check_open(transaction)
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
            ts = timestamp if timestamp is not None else int(self.clock.time() * 1000)
            offset = len(records)
            msg = MemoryMessage(
                topic, partition, offset, key, value, headers or None, ts, None, transaction
            )
            records.append(msg)
            if transaction is not None:
                self._txns.appended(transaction, TopicPartition(topic, partition), offset)
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
        return self._txns.stable_offset(tp, len(self._logs[tp.topic][tp.partition]))

    def _visible(self, tp: TopicPartition, records: list[MemoryMessage]) -> list[MemoryMessage]:
        """``records`` (all below the stable offset) without the aborted ones."""
        if not self._txns.touched(tp):
            return records
        return [m for m in records if m._txn is None or m._txn.state != ABORTED]

    # -- transactions: the coordinator's state, the group's checks ------------------

    def init_transactions(self, transactional_id: str) -> int:
        """Register a producer for ``transactional_id``; returns its new epoch.

        The previous epoch's open transaction is aborted and that epoch is
        fenced: each of its later calls raises :class:`ProducerFencedError`.
        """
        with self._lock:
            return self._txns.init_transactions(transactional_id)

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
            return self._txns.begin(transactional_id, epoch)

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
            self._txns.check_open(transaction)
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
            self._txns.check_open(transaction)
            if commit:
                for group, offsets in transaction.offsets.items():
                    self._groups.setdefault(group, _Group()).committed.update(offsets)
            self._txns.end(transaction, COMMITTED if commit else ABORTED)

    def abandon(self, transaction: Transaction) -> None:
        """Abort ``transaction`` if it is still open: its producer died."""
        with self._lock:
            self._txns.abandon(transaction)

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
            for t in self._txns.holding(group, tp):
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
        grp.target = sticky_assignment(members, grp.target, wanted)
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
        return bool(self._txns.holding(member.group, tp))

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
