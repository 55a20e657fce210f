"""Consumer lag: how far a group is behind, per partition, and who owns each one.

Two halves. :func:`build_report` is pure arithmetic over offsets already
fetched, so every rule below is unit-tested without a broker.
:func:`fetch_lag_report` asks the cluster with a handful of batched
requests (topic metadata, group description, log start and end offsets)
and reads committed offsets through a consumer, whatever the number of
partitions, so ``--watch`` stays cheap.

How lag is counted: lag is the number of records the group will still read
from a partition, ``end - position``, where ``end`` is the high watermark
and ``position`` is where the group resumes:

* its committed offset, when one exists and lies within ``[start, end]``;
* otherwise where ``auto.offset.reset`` sends it: the log start offset for
  ``earliest`` (streamkit's default, so a new group's lag is every record
  still retained, ``end - start``), or ``end`` for ``latest`` (lag 0).

A committed offset outside the log (retention deleted the records, or the
topic was recreated) is treated the same way, because that is what the
consumer does with it. This differs from ``kafka-consumer-groups.sh``, which
prints ``end - committed`` even when the group can never read those records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from streamkit.errors import BrokerError
from streamkit.ops._admin import error_text, request, result

Reset = Literal["earliest", "latest"]
TP = tuple[str, int]

# librdkafka accepts several spellings of auto.offset.reset.
_RESET_ALIASES: dict[str, Reset] = {
    "earliest": "earliest",
    "smallest": "earliest",
    "beginning": "earliest",
    "latest": "latest",
    "largest": "latest",
    "end": "latest",
}


def reset_policy(value: object) -> Reset:
    """Normalise an ``auto.offset.reset`` value to ``earliest`` or ``latest``.

    ``error`` (fail instead of resetting) has no resume position; counting it
    as ``earliest`` shows the most an operator might have to process.
    """
    return _RESET_ALIASES.get(str(value).strip().lower(), "earliest")


@dataclass(frozen=True, slots=True)
class Owner:
    """The group member a partition is assigned to.

    Attributes:
        client_id: The member's ``client.id`` (streamkit's default names app, host and pid).
        host: The address the broker saw the member connect from.
        member_id: The coordinator's id for the member.
    """

    client_id: str
    host: str
    member_id: str

    def __str__(self) -> str:
        return f"{self.client_id}@{self.host}" if self.host else self.client_id

    def to_json(self) -> dict[str, str]:
        """Stable JSON shape: ``client_id``, ``host``, ``member_id``."""
        return {"client_id": self.client_id, "host": self.host, "member_id": self.member_id}


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition's offsets and lag.

    Attributes:
        topic: Topic name.
        partition: Partition number.
        committed: The group's committed offset, ``None`` if it has none.
        start: The log start offset (the oldest record still retained).
        end: The high watermark (the offset the next record will get).
        lag: Records the group will still read (see the module docstring).
        owner: The member it is assigned to, ``None`` if no live member has it.
    """

    topic: str
    partition: int
    committed: int | None
    start: int
    end: int
    lag: int
    owner: Owner | None

    def to_json(self) -> dict[str, Any]:
        """Stable JSON shape; ``committed`` and ``owner`` are ``null`` when absent."""
        return {
            "topic": self.topic,
            "partition": self.partition,
            "committed": self.committed,
            "start": self.start,
            "end": self.end,
            "lag": self.lag,
            "owner": None if self.owner is None else self.owner.to_json(),
        }


@dataclass(frozen=True, slots=True)
class LagReport:
    """A consumer group's lag over a set of topics.

    Attributes:
        group: The consumer group id.
        state: The group state as the coordinator reports it (``stable``,
            ``empty``...), ``None`` when the group is unknown to it.
        members: Live members of the group.
        reset: The ``auto.offset.reset`` assumed for partitions without a commit.
        partitions: One row per partition, sorted by topic and partition.
        missing_topics: Asked-for topics that do not exist on the cluster.
    """

    group: str
    state: str | None
    members: int
    reset: Reset
    partitions: tuple[PartitionLag, ...]
    missing_topics: tuple[str, ...] = ()

    @property
    def total_lag(self) -> int:
        """Lag summed over every partition."""
        return sum(p.lag for p in self.partitions)

    def topic_lag(self) -> dict[str, int]:
        """Lag summed per topic, in topic order."""
        totals: dict[str, int] = {}
        for row in self.partitions:
            totals[row.topic] = totals.get(row.topic, 0) + row.lag
        return totals

    def to_json(self) -> dict[str, Any]:
        """The report for scripts; the keys are part of the CLI's contract.

        ``{"group", "state", "members", "reset", "partitions": [...],
        "totals": {"lag", "topics": {topic: lag}}, "missing_topics": [...]}``
        """
        return {
            "group": self.group,
            "state": self.state,
            "members": self.members,
            "reset": self.reset,
            "partitions": [p.to_json() for p in self.partitions],
            "totals": {"lag": self.total_lag, "topics": self.topic_lag()},
            "missing_topics": list(self.missing_topics),
        }


def partition_lag(committed: int | None, start: int, end: int, reset: Reset = "earliest") -> int:
    """Records left to read in one partition (see the module docstring for the rules)."""
    if committed is not None and start <= committed <= end:
        position = committed
    else:
        position = start if reset == "earliest" else end
    return max(0, end - position)


def build_report(
    group: str,
    partition_counts: Mapping[str, int],
    committed: Mapping[TP, int],
    watermarks: Mapping[TP, tuple[int, int]],
    *,
    owners: Mapping[TP, Owner] | None = None,
    state: str | None = None,
    members: int = 0,
    reset: Reset = "earliest",
    missing_topics: Iterable[str] = (),
) -> LagReport:
    """Assemble a :class:`LagReport` from offsets already fetched; no I/O.

    Args:
        group: The consumer group id.
        partition_counts: Partitions per topic to report on.
        committed: Committed offsets; a partition absent here has no commit.
        watermarks: ``(start, end)`` per partition; absent means an empty log.
        owners: The member each assigned partition belongs to.
        state: The group state.
        members: Live member count.
        reset: The reset policy for partitions without a usable commit.
        missing_topics: Topics asked for that the cluster does not have.
    """
    owners = owners or {}
    rows = []
    for topic in sorted(partition_counts):
        for partition in range(partition_counts[topic]):
            tp = (topic, partition)
            start, end = watermarks.get(tp, (0, 0))
            offset = committed.get(tp)
            rows.append(
                PartitionLag(
                    topic=topic,
                    partition=partition,
                    committed=offset,
                    start=start,
                    end=end,
                    lag=partition_lag(offset, start, end, reset),
                    owner=owners.get(tp),
                )
            )
    return LagReport(
        group=group,
        state=state,
        members=members,
        reset=reset,
        partitions=tuple(rows),
        missing_topics=tuple(sorted(set(missing_topics))),
    )


# --- Fetching from the cluster -------------------------------------------------


def fetch_lag_report(
    admin: AdminClient,
    consumer: Consumer,
    group: str,
    topics: Sequence[str] | None = None,
    *,
    reset: Reset = "earliest",
    timeout: float = 30.0,
) -> LagReport:
    """Ask the cluster for ``group``'s offsets and build its :class:`LagReport`.

    Args:
        admin: An admin client (``streamkit.backends.kafka.create_admin``).
        consumer: A consumer whose ``group.id`` is ``group``; it reads the
            committed offsets and never subscribes, so it does not join the group.
        group: The consumer group id.
        topics: Topics to report on; ``None`` means every topic the group has
            committed offsets for (every partition of each, committed or not).
        reset: The group's ``auto.offset.reset``.
        timeout: Seconds each request may take.

    Raises:
        BrokerError: A request failed or timed out.
    """
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerError(f"cannot read topic metadata: {error_text(exc)}") from None
    # Before _committed_topics: this also waits out a coordinator that is
    # still loading, which that request must never meet (see there).
    state, members, owners = _group(admin, group, timeout)
    wanted = sorted(set(topics)) if topics is not None else _committed_topics(admin, group, timeout)
    counts = {
        t: len(metadata.topics[t].partitions)
        for t in wanted
        if t in metadata.topics and metadata.topics[t].error is None
    }
    tps = [TopicPartition(t, p) for t, n in sorted(counts.items()) for p in range(n)]
    return build_report(
        group,
        counts,
        _committed(consumer, tps, timeout),
        _watermarks(admin, tps, timeout),
        owners=owners,
        state=state,
        members=members,
        reset=reset,
        missing_topics=[t for t in wanted if t not in counts],
    )


def _committed_topics(admin: AdminClient, group: str, timeout: float) -> list[str]:
    """Every topic ``group`` has a committed offset for.

    Only the admin API can list a group's offsets without naming partitions,
    but librdkafka (up to at least 2.16) crashes the process when that request
    meets a coordinator that is loading or has moved: it hands the error to
    the client's consumer-group object, which an admin client does not have
    (confluentinc/librdkafka#5040). So this runs only after
    :func:`_group` succeeded against the same coordinator, and the offsets
    themselves are read with a consumer, whose retry path is sound.
    """
    asked = [ConsumerGroupTopicPartitions(group)]
    answer = request(
        lambda: admin.list_consumer_group_offsets(asked, request_timeout=timeout)[group],
        f"list committed offsets of group {group}",
        timeout,
    )
    return sorted({tp.topic for tp in answer.topic_partitions or [] if tp.offset >= 0})


def _committed(consumer: Consumer, tps: list[TopicPartition], timeout: float) -> dict[TP, int]:
    """The group's committed offsets; partitions without one are left out."""
    if not tps:
        return {}
    try:
        answer = consumer.committed(tps, timeout=timeout)
    except KafkaException as exc:
        raise BrokerError(f"cannot read committed offsets: {error_text(exc)}") from None
    offsets: dict[TP, int] = {}
    for tp in answer:
        if tp.error is not None:
            raise BrokerError(
                f"cannot read committed offset of {tp.topic}[{tp.partition}]: {tp.error.str()}"
            )
        # OFFSET_INVALID (-1001) means no commit.
        if tp.offset >= 0:
            offsets[(tp.topic, tp.partition)] = tp.offset
    return offsets


def _watermarks(
    admin: AdminClient, tps: list[TopicPartition], timeout: float
) -> dict[TP, tuple[int, int]]:
    """Log start and high watermark of each partition, in two batched requests."""
    if not tps:
        return {}
    found: dict[str, dict[TP, int]] = {}
    for name, spec in (("start", OffsetSpec.earliest()), ("end", OffsetSpec.latest())):
        # Read-uncommitted answers the high watermark, the end offset the Kafka
        # tools show, rather than the last stable offset of a transaction.
        futures: dict[Any, Future[Any]] = admin.list_offsets(
            {TopicPartition(tp.topic, tp.partition): spec for tp in tps},
            isolation_level=IsolationLevel.READ_UNCOMMITTED,
            request_timeout=timeout,
        )
        found[name] = {
            (tp.topic, tp.partition): result(
                future, f"read {name} offset of {tp.topic}[{tp.partition}]", timeout
            ).offset
            for tp, future in futures.items()
        }
    return {tp: (found["start"][tp], found["end"][tp]) for tp in found["end"]}


def _group(
    admin: AdminClient, group: str, timeout: float
) -> tuple[str | None, int, dict[TP, Owner]]:
    """The group's state, member count and partition owners."""
    description = request(
        lambda: admin.describe_consumer_groups([group], request_timeout=timeout)[group],
        f"describe group {group}",
        timeout,
        # Brokers answer "dead" for an unknown classic group; KIP-848 groups say "not found".
        absent=frozenset({KafkaError.GROUP_ID_NOT_FOUND}),
    )
    if description is None:
        return None, 0, {}
    owners: dict[TP, Owner] = {}
    for member in description.members:
        owner = Owner(
            client_id=member.client_id,
            host=(member.host or "").lstrip("/"),
            member_id=member.member_id,
        )
        assignment = member.assignment.topic_partitions if member.assignment else []
        for tp in assignment:
            owners[(tp.topic, tp.partition)] = owner
    state = str(getattr(description.state, "name", "UNKNOWN")).lower()
    return (None if state == "unknown" else state), len(description.members), owners
