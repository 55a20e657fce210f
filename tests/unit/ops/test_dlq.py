"""The dead-letter tools build their Kafka clients from the app config.

The clients are captured at construction (``streamkit.backends.kafka``
builds every client), so these tests see exactly the librdkafka properties
``dlq show`` and ``dlq redrive`` connect with; no broker is needed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamkit import BrokerError, ConfigError, StreamkitError
from streamkit.backends import kafka
from streamkit.config import AppConfig
from streamkit.ops.dlq import RedriveFilter, redrive, summarize

TOPIC = "shop.enrich.dlq"

# What a pod of the chart's SASL_SSL setup has in its environment.
ENV = {
    "STREAMKIT_BROKERS": "broker-1.kafka:9093",
    "STREAMKIT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "STREAMKIT_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "STREAMKIT_KAFKA_SASL_USERNAME": "oncall",
    "STREAMKIT_KAFKA_SASL_PASSWORD": "hunter2",
    "STREAMKIT_KAFKA_CLIENT_ID": "dlq-tool",
    "STREAMKIT_CONSUMER_FETCH_WAIT_MAX_MS": "50",
    "STREAMKIT_PRODUCER_COMPRESSION_TYPE": "zstd",
}
SECURITY = {
    "bootstrap.servers": "broker-1.kafka:9093",
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "oncall",
    "sasl.password": "hunter2",
    "client.id": "dlq-tool",
}


class FakeClient:
    """Stands in for librdkafka's Consumer and Producer: an empty one-partition topic."""

    def __init__(self, conf: dict[str, Any], built: list[dict[str, Any]], fail: bool) -> None:
        built.append(conf)
        self.fail = fail

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        if self.fail:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker transport failure"))
        return SimpleNamespace(topics={topic: SimpleNamespace(error=None, partitions={0: None})})

    def get_watermark_offsets(self, tp: Any, timeout: float = -1) -> tuple[int, int]:
        return (0, 0)

    def committed(self, tps: list[Any], timeout: float = -1) -> list[Any]:
        return tps

    def assign(self, tps: list[Any]) -> None:
        pass

    def close(self) -> None:
        pass

    def flush(self, timeout: float = -1) -> int:
        return 0


class Captured:
    def __init__(self) -> None:
        self.consumers: list[dict[str, Any]] = []
        self.producers: list[dict[str, Any]] = []
        self.fail_metadata = False


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[Captured]:
    seen = Captured()
    monkeypatch.setattr(
        kafka, "Consumer", lambda conf: FakeClient(conf, seen.consumers, seen.fail_metadata)
    )
    monkeypatch.setattr(kafka, "Producer", lambda conf: FakeClient(conf, seen.producers, False))
    yield seen


@pytest.fixture
def config() -> AppConfig:
    return AppConfig.load("streamkit", env=ENV)


def test_show_reads_with_the_pass_through_properties(captured: Captured, config: AppConfig) -> None:
    assert summarize(config, TOPIC).total == 0
    [reader] = captured.consumers
    assert SECURITY.items() <= reader.items()
    assert reader["fetch.wait.max.ms"] == "50"  # STREAMKIT_CONSUMER_* reaches the consumer
    assert "compression.type" not in reader  # ...and STREAMKIT_PRODUCER_* does not
    assert reader["enable.auto.commit"] is False
    assert reader["group.id"].startswith("streamkit-dlq-reader-")
    assert captured.producers == []


def test_redrive_reads_and_sends_with_the_pass_through_properties(
    captured: Captured, config: AppConfig
) -> None:
    assert redrive(config, TOPIC, RedriveFilter()).sent == 0
    [reader] = captured.consumers
    [sender] = captured.producers
    assert SECURITY.items() <= reader.items()
    assert reader["group.id"] == f"streamkit-redrive.{TOPIC}"
    assert SECURITY.items() <= sender.items()
    assert sender["compression.type"] == "zstd"
    assert "fetch.wait.max.ms" not in sender
    assert (sender["acks"], sender["enable.idempotence"]) == ("all", True)


def test_the_reader_is_no_static_member_and_serves_no_metrics(captured: Captured) -> None:
    # A pod's environment names the pod as a static member and turns on
    # /metrics; a one-off reader in that pod is neither.
    pod = {**ENV, "STREAMKIT_GROUP_INSTANCE_ID": "orders-0", "STREAMKIT_HTTP_PORT": "8080"}
    summarize(AppConfig.load("streamkit", env=pod), TOPIC)
    [reader] = captured.consumers
    assert "group.instance.id" not in reader
    assert "statistics.interval.ms" not in reader


def test_an_unanswered_metadata_request_is_a_broker_error(
    captured: Captured, config: AppConfig
) -> None:
    captured.fail_metadata = True
    with pytest.raises(
        BrokerError, match=re.escape(f"cannot read {TOPIC}: Broker transport failure")
    ):
        summarize(config, TOPIC)


@pytest.mark.parametrize("rate", [0.0, -5.0])
def test_redrive_refuses_a_rate_that_is_not_positive(
    captured: Captured, config: AppConfig, rate: float
) -> None:
    with pytest.raises(ConfigError, match="rate="):
        redrive(config, TOPIC, RedriveFilter(), rate=rate)
    assert captured.consumers == captured.producers == []


# A stateful stand-in for one broker: a dead-letter topic's partitions, the
# redrive group's committed offsets (with their metadata) and what was sent.


class FakeMessage:
    def __init__(self, partition: int, offset: int, headers: list[tuple[str, bytes]]) -> None:
        self._partition, self._offset, self._headers = partition, offset, headers

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000 + self._offset)

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"%d@%d" % (self._partition, self._offset)

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers


class FakeBroker:
    def __init__(self) -> None:
        self.log: dict[int, list[FakeMessage]] = {0: [], 1: []}
        self.committed: dict[int, tuple[int, str | None]] = {}
        self.sent: list[bytes] = []

    def dead_letter(self, partition: int, exception: str) -> None:
        headers = [
            ("__streams.errors.topic", b"shop.in"),
            ("__streams.errors.exception", exception.encode()),
        ]
        log = self.log[partition]
        log.append(FakeMessage(partition, len(log), headers))

    def sent_of(self, value: bytes) -> int:
        return self.sent.count(value)


class FakeConsumer:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.queue: list[FakeMessage] = []

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        parts = dict.fromkeys(self.broker.log)
        return SimpleNamespace(topics={topic: SimpleNamespace(error=None, partitions=parts)})

    def get_watermark_offsets(self, tp: Any, timeout: float = -1) -> tuple[int, int]:
        return (0, len(self.broker.log[tp.partition]))

    def committed(self, tps: list[Any], timeout: float = -1) -> list[Any]:
        out = []
        for tp in tps:
            offset, metadata = self.broker.committed.get(tp.partition, (-1001, None))
            out.append(TopicPartition(tp.topic, tp.partition, offset, metadata=metadata or ""))
        return out

    def assign(self, tps: list[Any]) -> None:
        self.queue = [m for tp in tps for m in self.broker.log[tp.partition][tp.offset :]]

    def consume(self, n: int, timeout: float = -1) -> list[FakeMessage]:
        batch, self.queue = self.queue[:n], self.queue[n:]
        return batch

    def commit(self, offsets: list[Any], asynchronous: bool = True) -> None:
        assert not asynchronous
        for tp in offsets:
            self.broker.committed[tp.partition] = (tp.offset, tp.metadata)

    def close(self) -> None:
        pass


class FakeProducer:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker

    def produce(self, topic: str, value: bytes, on_delivery: Any = None, **_: Any) -> None:
        self.broker.sent.append(value)

    def poll(self, timeout: float = -1) -> int:
        return 0

    def flush(self, timeout: float = -1) -> int:
        return 0


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> FakeBroker:
    fake = FakeBroker()
    monkeypatch.setattr(kafka, "Consumer", lambda conf: FakeConsumer(fake))
    monkeypatch.setattr(kafka, "Producer", lambda conf: FakeProducer(fake))
    return fake


def interleaved(broker: FakeBroker, n: int = 6) -> tuple[set[bytes], set[bytes]]:
    """``n`` dead letters per partition, TimeoutError and KeyError taking turns."""
    timeouts: set[bytes] = set()
    keys: set[bytes] = set()
    for p in (0, 1):
        for i in range(n):
            kind = "TimeoutError" if i % 2 == 0 else "builtins.KeyError"
            broker.dead_letter(p, kind)
            (timeouts if i % 2 == 0 else keys).add(b"%d@%d" % (p, i))
    return timeouts, keys


def would_send(config: AppConfig, selection: RedriveFilter) -> int:
    return sum(redrive(config, TOPIC, selection, dry_run=True).by_target.values())


def test_a_filtered_redrive_leaves_every_other_dead_letter_to_the_next(
    broker: FakeBroker, config: AppConfig
) -> None:
    timeouts, keys = interleaved(broker)
    first = redrive(config, TOPIC, RedriveFilter(exception="TimeoutError"))
    assert (first.sent, first.skipped_filter) == (6, 6)
    assert set(broker.sent) == timeouts
    rest = redrive(config, TOPIC, RedriveFilter())
    assert rest.sent == 6
    assert sorted(broker.sent) == sorted(timeouts | keys), "each dead letter sent once"
    assert redrive(config, TOPIC, RedriveFilter()).sent == 0


def test_a_typo_in_the_filter_hides_no_dead_letter(broker: FakeBroker, config: AppConfig) -> None:
    interleaved(broker)
    assert redrive(config, TOPIC, RedriveFilter(exception="TimoutError")).sent == 0
    assert redrive(config, TOPIC, RedriveFilter(since_ms=2**42)).sent == 0
    assert redrive(config, TOPIC, RedriveFilter()).sent == 12


def test_two_narrow_filters_then_an_unfiltered_redrive_send_each_once(
    broker: FakeBroker, config: AppConfig
) -> None:
    timeouts, keys = interleaved(broker)
    broker.dead_letter(0, "ValueError")
    assert redrive(config, TOPIC, RedriveFilter(exception="KeyError")).sent == 6
    assert redrive(config, TOPIC, RedriveFilter(exception="TimeoutError")).sent == 6
    assert redrive(config, TOPIC, RedriveFilter(exception="KeyError")).sent == 0
    assert redrive(config, TOPIC, RedriveFilter()).sent == 1
    assert sorted(broker.sent) == sorted(timeouts | keys | {b"0@6"})


def test_an_interrupted_filtered_redrive_resumes_without_sending_twice(
    broker: FakeBroker, config: AppConfig
) -> None:
    timeouts, keys = interleaved(broker, n=10)
    seen = 0

    def count(k: int) -> None:
        nonlocal seen
        seen += k

    selection = RedriveFilter(exception="KeyError")
    first = redrive(config, TOPIC, selection, progress=count, stop=lambda: seen >= 7)
    rest = redrive(config, TOPIC, selection)
    assert 0 < first.sent < 10 and first.sent + rest.sent == 10
    assert redrive(config, TOPIC, RedriveFilter()).sent == 10
    assert sorted(broker.sent) == sorted(timeouts | keys)


@pytest.mark.parametrize(
    "selection",
    [RedriveFilter(), RedriveFilter(exception="KeyError"), RedriveFilter(exception="Nope")],
)
def test_a_dry_run_counts_what_the_real_run_sends(
    broker: FakeBroker, config: AppConfig, selection: RedriveFilter
) -> None:
    interleaved(broker)
    assert redrive(config, TOPIC, RedriveFilter(exception="TimeoutError")).sent == 6
    before = dict(broker.committed)
    predicted = would_send(config, selection)
    assert would_send(config, selection) == predicted
    assert broker.committed == before, "a dry run commits nothing"
    assert redrive(config, TOPIC, selection).sent == predicted
    assert would_send(config, selection) == 0


def test_a_filter_the_ledger_has_no_room_for_is_refused_before_sending(
    broker: FakeBroker, config: AppConfig
) -> None:
    broker.dead_letter(0, "KeyError")  # left out by every filter below: the cursor stays
    kinds = [f"package.module.VeryLongExceptionName{i:03d}" for i in range(100)]
    for kind in kinds:
        broker.dead_letter(0, kind)
    with pytest.raises(StreamkitError, match="no room to track another filter"):
        for kind in kinds:
            redrive(config, TOPIC, RedriveFilter(exception=kind))
    tracked = len(broker.sent)
    assert 40 < tracked < 100
    assert len(broker.committed[0][1] or "") <= 4096
    assert redrive(config, TOPIC, RedriveFilter()).sent == 1 + 100 - tracked
    assert sorted(broker.sent) == sorted(b"0@%d" % i for i in range(101)), "each sent once"
    assert broker.committed[0] == (101, "")
