"""The changelog reader of the Kafka backend: a consumer with no group membership.

Restores assign one changelog partition at a time and read it to its end. The
reader shares the worker's ``group.id`` only to ask for the group's committed
offsets (at least once, a restore skips updates whose inputs were not
committed); it never subscribes, so it never joins the group, and it drops
the membership settings (a ``group.instance.id`` would clash with the
worker's own consumer).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streamkit.config import AppConfig

_MEMBERSHIP = (
    "group.instance.id",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "group.protocol",
    "max.poll.interval.ms",
)
# A restore reads as fast as the broker serves: large fetches, and up to
# 10,000 records per consume() call (about 2 ms of Python per call at 5 µs a record).
_BATCH = 10_000
_POLL_S = 0.5
_TIMEOUT_S = 30.0


class KafkaChangelogReader:
    """Reads changelog partitions for :class:`~streamkit.state.restore.Restorer`."""

    def __init__(self, config: AppConfig) -> None:
        conf: dict[str, Any] = config.librdkafka("consumer")
        for key in _MEMBERSHIP:
            conf.pop(key, None)
        conf.update(
            {
                "client.id": f"{config.client_id}-restore",
                # 16 MiB in flight and queued: enough to keep a restore fed
                # (a 10,000-record batch of small values is ~1 MiB), and the
                # worker's memory is not the size of the changelog's fetches.
                "fetch.max.bytes": 16 * 1024 * 1024,
                "max.partition.fetch.bytes": 4 * 1024 * 1024,
                "queued.max.messages.kbytes": 16384,
                # At a partition's end the broker holds a fetch this long for
                # new data (500 ms by default): a restore that reached its end
                # must not wait for records it does not want.
                "fetch.wait.max.ms": 20,
            }
        )
        self._consumer = Consumer(conf)

    def bounds(self, topic: str, partition: int) -> tuple[int, int]:
        """The first offset and the end (the stable end under ``read_committed``)."""
        low, high = self._consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=_TIMEOUT_S, cached=False
        )
        return int(low), int(high)

    def committed(self, topic: str, partition: int) -> int | None:
        """The group's committed offset of a source partition (``None``: none)."""
        found = self._consumer.committed([TopicPartition(topic, partition)], timeout=_TIMEOUT_S)
        offset = found[0].offset if found else -1
        return int(offset) if offset >= 0 else None

    def partitions(self, topic: str) -> int | None:
        """The topic's partition count (``None``: it does not exist)."""
        found = self._consumer.list_topics(topic, timeout=_TIMEOUT_S).topics.get(topic)
        if found is None or found.error is not None:
            return None
        return len(found.partitions)

    def read(
        self, topic: str, partition: int, start: int, end: int
    ) -> Iterator[list[tuple[int, bytes | None, bytes | None, Any]]]:
        """Batches from ``start`` until the position reaches ``end`` (markers included)."""
        consumer = self._consumer
        tp = TopicPartition(topic, partition, start)
        consumer.assign([tp])
        try:
            position = start
            while position < end:
                # Never ask for more than is left: consume() returns once it
                # has num_messages, so the last batch of a partition does not
                # sit out the whole timeout (it did: 0.5 s per partition, most
                # of a warm restart). Transaction markers take offsets too,
                # so what is left may be fewer records than offsets.
                left = end - position
                msgs = consumer.consume(
                    num_messages=min(_BATCH, left), timeout=_POLL_S if left > _BATCH else 0.05
                )
                out: list[tuple[int, bytes | None, bytes | None, Any]] = []
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            continue
                        raise KafkaException(err)
                    out.append((int(msg.offset() or 0), msg.key(), msg.value(), msg.headers()))
                if out:
                    position = out[-1][0] + 1
                    yield out
                if position < end:
                    # Transaction markers take offsets no record comes from:
                    # the consumer's position passes them, the records do not.
                    (now,) = consumer.position([TopicPartition(topic, partition)])
                    if now.offset >= 0:
                        position = max(position, now.offset)
        finally:
            consumer.unassign()

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()
