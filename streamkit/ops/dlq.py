"""Dead-letter topics for on-call people: what failed, and sending it back.

``summarize`` reads a dead-letter topic up to the end offsets seen at start
(so it finishes while the topic grows) and counts failures by exception,
agent and hour. ``redrive`` sends dead letters back to the topic they came
from (``__streams.errors.topic``), with the original key, value and headers
and a ``streamkit.redrive.count`` header one higher, so a record that keeps
failing is not looped for ever. Redrive progress is committed in its own
consumer group, so an interrupted redrive resumes where it stopped.

Both connect with the app config's clients (``AppConfig.librdkafka``), so the
``STREAMKIT_KAFKA_*`` pass-through (TLS, SASL) applies as it does for ``run``.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
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

    def summary(self) -> dict[str, Any]:
        """The record as JSON-friendly data (for ``--json`` and samples)."""
        return {
            "partition": self.partition,
            "offset": self.offset,
            "time": _iso(self.timestamp_ms),
            "key": (self.key or b"").decode("utf-8", "replace"),
            "value": (self.value or b"")[:200].decode("utf-8", "replace"),
            "headers": {k: v.decode("utf-8", "replace")[:200] for k, v in self.headers},
        }


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

    def as_json(self) -> dict[str, Any]:
        """Stable keys for scripts."""
        return {
            "topic": self.topic,
            "total": self.total,
            "by_exception": dict(self.by_exception.most_common()),
            "by_agent": dict(self.by_agent.most_common()),
            "by_hour": dict(sorted(self.by_hour.items())),
            "by_source_topic": dict(self.by_source.most_common()),
            "samples": [
                {
                    **s.summary(),
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
) -> Iterator[DeadLetterRecord]:
    """Yield the topic's records up to the end offsets seen at start.

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
    except KafkaException as exc:
        raise BrokerError(f"cannot read {topic}: {error_text(exc)}") from None
    ends = {p: high for p, (_, high) in marks.items()}
    remaining = {p for p in parts if starts[p] < ends[p]}
    consumer.assign([TopicPartition(topic, p, starts[p]) for p in parts])
    while remaining and not stop():
        for msg in consumer.consume(500, timeout=1.0):
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
    by_target: Counter[str] = field(default_factory=Counter)


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


def redrive(
    config: AppConfig,
    topic: str,
    selection: RedriveFilter,
    rate: float | None = None,
    dry_run: bool = False,
    progress: Callable[[int], None] = lambda n: None,
    stop: Callable[[], bool] = lambda: False,
    timeout: float = 30.0,
) -> RedriveResult:
    """Send selected dead letters back to their original topics.

    Progress is committed in the group ``streamkit-redrive.<topic>`` after
    each acknowledged batch: run the same command again to resume. A dry run
    commits nothing. ``rate`` (records per second) must be above 0; ``None``
    sends as fast as the broker takes them.

    Raises:
        ConfigError: ``rate`` is not above 0.
        BrokerError: The broker did not answer within ``timeout`` seconds.
        StreamkitError: The topic does not exist, or records were not delivered.
    """
    if rate is not None and not (rate > 0 and math.isfinite(rate)):
        raise ConfigError("rate=", f"must be records per second above 0; got {rate!r}")
    result = RedriveResult()
    group = None if dry_run else f"streamkit-redrive.{topic}"
    producer = create_producer(config)
    failures: list[Any] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    interval = 1.0 / rate if rate else 0.0
    next_send = time.monotonic()
    pending: dict[int, int] = {}
    consumer = open_reader(config, group)

    def checkpoint() -> None:
        if not pending or dry_run:
            return
        if producer.flush(60) != 0 or failures:
            raise StreamkitError(f"redrive: the broker rejected records: {failures[:3]}")
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in pending.items()], asynchronous=False
        )
        pending.clear()

    try:
        for record in read_dead_letters(
            consumer, topic, resume=not dry_run, stop=stop, timeout=timeout
        ):
            progress(1)
            pending[record.partition] = record.offset + 1
            if not selection.matches(record):
                result.skipped_filter += 1
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
            if result.sent % 500 == 0:
                checkpoint()
        checkpoint()
    finally:
        consumer.close()
    if producer.flush(60) != 0 or failures:
        raise StreamkitError(f"redrive: the broker rejected records: {failures[:3]}")
    return result
