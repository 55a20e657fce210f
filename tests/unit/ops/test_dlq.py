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
from confluent_kafka import KafkaError, KafkaException

from streamkit import BrokerError, ConfigError
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
