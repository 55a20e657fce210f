"""Dead-letter topics for on-call people: what failed, and sending it back.

``summarize`` reads a dead-letter topic up to the end offsets seen at start
(so it finishes while the topic grows) and counts failures by exception,
agent and hour. ``redrive`` sends dead letters back to the topic they came
from (``__streams.errors.topic``), with the original key, value and headers
and a ``streamkit.redrive.count`` header one higher, so a record that keeps
failing is not looped for ever. Redrive progress is committed in its own
consumer group, so an interrupted redrive resumes where it stopped; how a
filtered redrive keeps the dead letters it left out is in ``redrive``.

Both connect with the app config's clients (``AppConfig.librdkafka``), so the
``STREAMKIT_KAFKA_*`` pass-through (TLS, SASL) applies as it does for ``run``.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamkit.backends.kafka import create_consumer, create_producer
from streamkit.config import AppConfig
from streamkit.errors import BrokerError, ConfigError, StreamkitError
from streamkit.ops._admin import committed_offsets, error_text
from streamkit.runtime.failures import (
    ERROR_HEADERS,
    H_AGENT,
    H_EXCEPTION,
    H_MESSAGE,
    H_OFFSET,
    H_PARTITION,
    H_REDRIVES,
    H_STAGE,
    H_TOPIC,
)
from streamkit.runtime.transaction import TransactionAborted, Transactions


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """One dead letter as read back."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def header(self, name: str, default: str = "") -> str:
        """The last value of header ``name``, decoded."""
        found = default
        for key, value in self.headers:
            if key == name:
                found = value.decode("utf-8", "replace")
        return found

    @property
    def exception(self) -> str:
        """Exception type name, without its module (``RuntimeError``)."""
        return self.header(H_EXCEPTION, "?").rsplit(".", 1)[-1]

    @property
    def redrives(self) -> int:
        """How many times this record was redriven already."""
        return int(self.header(H_REDRIVES, "0") or 0)

    def summary(self, values: bool = True) -> dict[str, Any]:
        """The record as JSON-friendly data (for ``--json`` and samples).

        Args:
            values: Include the key, the value and the record's own headers.
                Without them (``dlq show --no-values``, for topics that carry
                personal data) only streamkit's error headers are left: what
                failed, where, and how.
        """
        data: dict[str, Any] = {
            "partition": self.partition,
            "offset": self.offset,
            "time": _iso(self.timestamp_ms),
        }
        if values:
            data["key"] = (self.key or b"").decode("utf-8", "replace")
            data["value"] = (self.value or b"")[:200].decode("utf-8", "replace")
        data["headers"] = {
            k: v.decode("utf-8", "replace")[:200]
            for k, v in self.headers
            if values or k in ERROR_HEADERS or k == H_REDRIVES
        }
        return data


@dataclass
class DeadLetterSummary:
    """Counts of a dead-letter topic, grouped the way on-call people ask."""

    topic: str
    total: int = 0
    by_exception: Counter[str] = field(default_factory=Counter)
    by_agent: Counter[str] = field(default_factory=Counter)
    by_hour: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    samples: list[DeadLetterRecord] = field(default_factory=list)

    def add(self, record: DeadLetterRecord, samples: int) -> None:
        """Count one dead letter."""
        self.total += 1
        self.by_exception[record.exception] += 1
        self.by_agent[record.header(H_AGENT, "?")] += 1
        self.by_hour[_iso(record.timestamp_ms)[:13] + ":00"] += 1
        self.by_source[record.header(H_TOPIC, "?")] += 1
        if len(self.samples) < samples:
            self.samples.append(record)

    def as_json(self, values: bool = True) -> dict[str, Any]:
        """Stable keys for scripts; ``values=False`` leaves out samples' data (see ``summary``)."""
        return {
            "topic": self.topic,
            "total": self.total,
            "by_exception": dict(self.by_exception.most_common()),
            "by_agent": dict(self.by_agent.most_common()),
            "by_hour": dict(sorted(self.by_hour.items())),
            "by_source_topic": dict(self.by_source.most_common()),
            "samples": [
                {
                    **s.summary(values),
                    "exception": s.header(H_EXCEPTION),
                    "message": s.header(H_MESSAGE),
                    "stage": s.header(H_STAGE),
                    "source": f"{s.header(H_TOPIC)}[{s.header(H_PARTITION)}]@{s.header(H_OFFSET)}",
                }
                for s in self.samples
            ],
        }


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def open_reader(config: AppConfig, group: str | None = None) -> Consumer:
    """A consumer for reading a dead-letter topic; the caller closes it.

    It is the app config's consumer, pass-through properties included. With
    ``group``, reading resumes at that group's committed offsets (a
    resumable redrive) and the caller commits progress on it.
    """
    reader = replace(
        config,
        group_id=group or f"streamkit-dlq-reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        # Run in a worker's pod, the environment names that worker's static
        # membership and metrics port; they are not the reader's.
        group_instance_id=None,
        http_port=None,
    )
    return create_consumer(reader)


def read_dead_letters(
    consumer: Consumer,
    topic: str,
    resume: bool = False,
    stop: Callable[[], bool] = lambda: False,
    timeout: float = 30.0,
    ledgers: dict[int, _Ledger] | None = None,
    stop_at: Mapping[int, int] | None = None,
    end_offsets: dict[int, int] | None = None,
) -> Iterator[DeadLetterRecord]:
    """Yield the topic's records up to the end offsets seen at start.

    With ``resume``, reading starts at the consumer group's committed offsets,
    and ``ledgers`` (if given) is filled with each partition's redrive ledger
    read from the commit metadata. ``stop_at`` ends each partition at that
    offset instead, where it is lower (a partition it does not name is not
    read); ``end_offsets`` (if given) is filled with the end of each
    partition as read.

    Raises:
        StreamkitError: The topic does not exist.
        BrokerError: The broker did not answer within ``timeout`` seconds, or
            refused a fetch.
    """
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            raise StreamkitError(f"dead-letter topic {topic} does not exist")
        parts = sorted(meta.partitions)
        marks = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            for p in parts
        }
        starts = {p: low for p, (low, _) in marks.items()}
        if resume:
            tps = [TopicPartition(topic, p) for p in parts]
            for tp in committed_offsets(consumer, tps, timeout):
                if tp.offset >= 0:
                    starts[tp.partition] = tp.offset
                    if ledgers is not None:
                        ledgers[tp.partition] = _Ledger.parse(tp.metadata)
    except KafkaException as exc:
        raise BrokerError(f"cannot read {topic}: {error_text(exc)}") from None
    ends = {p: high for p, (_, high) in marks.items()}
    if stop_at is not None:
        ends = {p: min(high, stop_at.get(p, starts[p])) for p, high in ends.items()}
    if end_offsets is not None:
        end_offsets.update(ends)
    remaining = {p for p in parts if starts[p] < ends[p]}
    consumer.assign([TopicPartition(topic, p, starts[p]) for p in parts])
    while remaining and not stop():
        msgs = consumer.consume(500, timeout=1.0)
        if not msgs:
            # A topic written in transactions ends in a commit marker, which
            # is an offset no record comes from: the position passes it.
            for tp in consumer.position([TopicPartition(topic, p) for p in remaining]):
                if tp.offset >= ends[tp.partition]:
                    remaining.discard(tp.partition)
        for msg in msgs:
            err = msg.error()
            if err is not None:
                raise BrokerError(f"cannot read {topic}: {err.str()}")
            p, offset = msg.partition(), msg.offset()
            if p is None or offset is None or p not in remaining:
                continue
            if stop():
                return  # the consumer's position is not committed: nothing is lost
            if offset < ends[p]:
                yield DeadLetterRecord(
                    p, offset, msg.timestamp()[1], msg.key(), msg.value(), msg.headers() or []
                )
            if offset + 1 >= ends[p]:
                remaining.discard(p)


def summarize(
    config: AppConfig, topic: str, samples: int = 3, timeout: float = 30.0
) -> DeadLetterSummary:
    """Count a dead-letter topic's records by exception, agent, hour and source."""
    summary = DeadLetterSummary(topic)
    consumer = open_reader(config)
    try:
        for record in read_dead_letters(consumer, topic, timeout=timeout):
            summary.add(record, samples)
    finally:
        consumer.close()
    return summary


@dataclass
class RedriveResult:
    """What a redrive did; ``sent`` records went back to their source topics."""

    matched: int = 0
    sent: int = 0
    skipped_filter: int = 0
    skipped_loop: int = 0
    already_sent: int = 0  # by an earlier, filtered redrive
    by_target: Counter[str] = field(default_factory=Counter)
    # Per partition, the offset read to (exclusive): a dry run's, passed as
    # ``stop_at``, makes the real run send what the dry run counted.
    ends: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RedriveFilter:
    """Which dead letters to send back."""

    exception: str | None = None  # type name, with or without module
    since_ms: int | None = None
    until_ms: int | None = None
    max_redrives: int = 3

    def matches(self, record: DeadLetterRecord) -> bool:
        """Whether ``record`` is selected by exception and time window."""
        if self.exception and self.exception not in {
            record.exception,
            record.header(H_EXCEPTION),
        }:
            return False
        if self.since_ms is not None and record.timestamp_ms < self.since_ms:
            return False
        return not (self.until_ms is not None and record.timestamp_ms >= self.until_ms)

    @property
    def narrow(self) -> bool:
        """Whether the filter leaves records out by exception or time."""
        return bool(self.exception) or self.since_ms is not None or self.until_ms is not None

    def sends(self, record: DeadLetterRecord) -> bool:
        """Whether this filter sends ``record``: matched, under the limit, with a source."""
        return (
            self.matches(record)
            and record.redrives < self.max_redrives
            and bool(record.header(H_TOPIC))
        )

    def _key(self) -> list[Any]:
        return [self.exception, self.since_ms, self.until_ms, self.max_redrives]


# Records sent between two commits of the redrive's cursor. At least once, an
# interrupted redrive sends up to this many again on the next run (each with
# the same redrive count as its first copy). Each commit is a flush and a
# synchronous commit (exactly once, a transaction); at the default 100/s this
# is one every 5 s.
CHECKPOINT_EVERY = 500

# Kafka's default ``offset.metadata.max.bytes``; a commit with more is refused.
_METADATA_MAX_BYTES = 4096


@dataclass
class _Ledger:
    """The redrive ledger of one partition, kept in its commit metadata.

    Each entry ``(filter, to)`` says: every record from the committed offset
    up to ``to`` that ``filter`` sends has been sent.
    """

    entries: list[tuple[RedriveFilter, int]] = field(default_factory=list)

    @classmethod
    def parse(cls, metadata: str | None) -> _Ledger:
        if not metadata:
            return cls()
        try:
            data = json.loads(metadata)
            entries = [
                (RedriveFilter(exc, since, until, int(limit)), int(to))
                for exc, since, until, limit, to in data["sent"]
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise StreamkitError(
                f"redrive: unreadable redrive ledger {metadata!r}: {exc}"
            ) from None
        return cls(entries)

    def sent(self, record: DeadLetterRecord) -> bool:
        return any(record.offset < to and f.sends(record) for f, to in self.entries)

    def advanced(self, cursor: int, selection: RedriveFilter, read_to: int) -> _Ledger:
        """The ledger once ``selection`` has read to ``read_to`` and the cursor is at ``cursor``."""
        entries = [(f, to) for f, to in self.entries if f != selection]
        mine = max([read_to] + [to for f, to in self.entries if f == selection])
        entries.append((selection, mine))
        return _Ledger([(f, to) for f, to in entries if to > cursor])

    def dump(self) -> str:
        if not self.entries:
            return ""
        return json.dumps({"sent": [[*f._key(), to] for f, to in self.entries]})


def redrive(
    config: AppConfig,
    topic: str,
    selection: RedriveFilter,
    rate: float | None = None,
    dry_run: bool = False,
    progress: Callable[[int], None] = lambda n: None,
    stop: Callable[[], bool] = lambda: False,
    timeout: float = 30.0,
    stop_at: Mapping[int, int] | None = None,
) -> RedriveResult:
    """Send selected dead letters back to their original topics.

    Progress is committed in the group ``streamkit-redrive.<topic>`` after
    each acknowledged batch of :data:`CHECKPOINT_EVERY` records sent: run
    the same command again to resume. At least once, the records sent since
    the last commit are sent again by that run. ``rate``
    (records per second) must be above 0; ``None`` sends as fast as the
    broker takes them.

    The committed offset of a partition never passes a record the filter
    left out, so a narrow ``exception``/``since``/``until`` (or a typo in
    one) hides no dead letter from later redrives. A record is *done*, and
    the cursor may pass it, when it was sent, is at the redrive limit, or
    has no source topic; the cursor is the first record that is not done.
    So that records sent after that point are not sent twice, the commit
    metadata also holds a small ledger: for each filter that ran, the offset
    it read to. A record below that offset which that filter sends was sent
    and is counted in ``already_sent``. Entries go once the cursor passes
    them; an unfiltered redrive passes every record, so it empties the
    ledger. The ledger has room for a few dozen filters (Kafka's 4 KiB
    commit metadata); a new filter that would not fit is refused before
    anything is sent.

    A dry run reads from the same cursor and ledger, and commits nothing,
    so ``sum(by_target.values())`` is what the real run would send. Its
    ``ends`` passed as ``stop_at`` hold the real run to the records the dry
    run read, however many dead letters arrived since: a confirmed preview
    is what gets sent.

    Exactly once (``config.processing_guarantee``), each batch of records
    sent back and the cursor that passes them commit in one transaction:
    an interrupted redrive leaves no record sent twice, even between two
    commits. The transactional id is ``streamkit-redrive.<topic>``, so a
    second redrive of the same topic fences the first instead of racing it.

    Raises:
        ConfigError: ``rate`` is not above 0.
        BrokerError: The broker did not answer within ``timeout`` seconds.
        StreamkitError: The topic does not exist, records were not
            delivered, or the ledger has no room for another filter.
    """
    if rate is not None and not (rate > 0 and math.isfinite(rate)):
        raise ConfigError("rate=", f"must be records per second above 0; got {rate!r}")
    result = RedriveResult()
    group = f"streamkit-redrive.{topic}"
    transactions: Transactions | None = None
    if config.exactly_once and not dry_run:
        producer = create_producer(config, **{"transactional.id": group})
    else:
        producer = create_producer(config)
    failures: list[Any] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    interval = 1.0 / rate if rate else 0.0
    next_send = time.monotonic()
    ledgers: dict[int, _Ledger] = {}
    # Per partition: the first record this run left out, and the offset read to.
    first_left: dict[int, int] = {}
    read_to: dict[int, int] = {}
    checked = False
    consumer = open_reader(config, group)
    if config.exactly_once and not dry_run:
        transactions = Transactions(producer, consumer.consumer_group_metadata, group)
        transactions.init(config.transaction_timeout_ms)

    def checkpoint() -> None:
        if not read_to or dry_run:
            return
        if producer.flush(60) != 0 or failures:
            raise StreamkitError(f"redrive: the broker rejected records: {failures[:3]}")
        offsets = []
        for p, end in read_to.items():
            cursor = first_left.get(p, end)
            ledger = ledgers.get(p, _Ledger()).advanced(cursor, selection, end)
            offsets.append(TopicPartition(topic, p, cursor, metadata=ledger.dump()))
        if transactions is None:
            consumer.commit(offsets=offsets, asynchronous=False)
        else:
            try:
                transactions.commit(offsets, time.monotonic() + timeout)
            except TransactionAborted as exc:
                raise StreamkitError(
                    f"redrive: transaction aborted ({exc.reason}); none of its records are "
                    "visible and the cursor did not move: run the same command again"
                ) from None
            transactions.begin()
        read_to.clear()

    try:
        for record in read_dead_letters(
            consumer,
            topic,
            resume=True,
            stop=stop,
            timeout=timeout,
            ledgers=ledgers,
            stop_at=stop_at,
            end_offsets=result.ends,
        ):
            p = record.partition
            if not checked:  # the ledgers are read with the first record
                checked = True
                if selection.narrow and not dry_run:
                    _check_room(ledgers, selection, topic)
            progress(1)
            read_to[p] = record.offset + 1
            ledger = ledgers.get(p)
            if ledger is not None and ledger.sent(record):
                result.already_sent += 1
                continue
            if not selection.matches(record):
                result.skipped_filter += 1
                first_left.setdefault(p, record.offset)
                continue
            result.matched += 1
            if record.redrives >= selection.max_redrives:
                result.skipped_loop += 1
                continue
            target = record.header(H_TOPIC)
            if not target:
                result.skipped_filter += 1
                continue
            result.by_target[target] += 1
            if dry_run:
                continue
            if interval:
                now = time.monotonic()
                if next_send > now:
                    time.sleep(next_send - now)
                next_send = max(next_send, now) + interval
            headers: list[tuple[str, str | bytes]] = [
                (k, v) for k, v in record.headers if k not in ERROR_HEADERS and k != H_REDRIVES
            ]
            headers.append((H_REDRIVES, str(record.redrives + 1).encode()))
            while True:
                try:
                    producer.produce(
                        target,
                        value=record.value,
                        key=record.key,
                        headers=headers,
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
            result.sent += 1
            if result.sent % CHECKPOINT_EVERY == 0:
                checkpoint()
        checkpoint()
    finally:
        consumer.close()
    if producer.flush(60) != 0 or failures:
        raise StreamkitError(f"redrive: the broker rejected records: {failures[:3]}")
    return result


def _check_room(ledgers: dict[int, _Ledger], selection: RedriveFilter, topic: str) -> None:
    """Refuse a new filter whose ledger entry would not fit in the commit metadata."""
    for ledger in ledgers.values():
        grown = ledger.advanced(-1, selection, 2**63 - 1)
        if len(grown.dump().encode()) > _METADATA_MAX_BYTES:
            raise StreamkitError(
                f"redrive: {topic} has dead letters left out by {len(ledger.entries)} earlier "
                "filtered redrives, and no room to track another filter; run one of those "
                "filters again or an unfiltered redrive first"
            )
