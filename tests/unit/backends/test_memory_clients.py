"""MemoryConsumer and MemoryProducer: the confluent-kafka behaviour the runtime relies on."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamkit.backends.memory import MemoryBackend, MemoryConsumer, MemoryProducer
from streamkit.backends.memory_broker import MemoryBroker, MemoryMessage
from streamkit.config import AppConfig


def broker_with(topic: str = "t", partitions: int = 2) -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topic(topic, partitions)
    return broker


class Events:
    """Records rebalance and commit callbacks, and the thread each ran on."""

    def __init__(self) -> None:
        self.log: list[tuple[str, list[tuple[str, int]]]] = []
        self.threads: set[int] = set()
        self.commit_errors: list[KafkaError | None] = []

    def callbacks(self) -> dict[str, Any]:
        def record(kind: str) -> Any:
            def callback(_consumer: Any, parts: list[KafkaTopicPartition]) -> None:
                self.threads.add(threading.get_ident())
                self.log.append((kind, [(p.topic, p.partition) for p in parts]))

            return callback

        return {
            "on_assign": record("assign"),
            "on_revoke": record("revoke"),
            "on_lost": record("lost"),
        }

    def on_commit(self, err: KafkaError | None, _parts: list[KafkaTopicPartition]) -> None:
        self.commit_errors.append(err)


def subscribed(broker: MemoryBroker, events: Events, group: str = "g") -> MemoryConsumer:
    consumer = MemoryConsumer(broker, group, on_commit=events.on_commit)
    consumer.subscribe(["t"], **events.callbacks())
    return consumer


def test_rebalance_callbacks_fire_inside_consume_on_the_consuming_thread() -> None:
    broker, events = broker_with(), Events()
    consumer = subscribed(broker, events)
    assert events.log == []  # joining assigns nothing until the consumer polls
    assert consumer.consume(10, timeout=0) == []
    assert events.log == [("assign", [("t", 0), ("t", 1)])]
    assert events.threads == {threading.get_ident()}
    assert consumer.memberid() == broker.members("g")[0].id
    assert [(p.topic, p.partition) for p in consumer.assignment()] == [("t", 0), ("t", 1)]


def test_consume_returns_records_at_once_and_no_more_than_asked() -> None:
    broker = broker_with(partitions=1)
    consumer = subscribed(broker, Events())
    for i in range(5):
        broker.append("t", None, str(i).encode())
    started = time.monotonic()
    first = consumer.consume(3, timeout=30)
    second = consumer.consume(3, timeout=30)
    assert time.monotonic() - started < 5  # never waited for the 30 s timeout
    assert [m.value() for m in first + second] == [b"0", b"1", b"2", b"3", b"4"]


def test_a_waiting_consume_wakes_for_a_new_record_and_for_wake_consume() -> None:
    broker = broker_with(partitions=1)
    consumer = subscribed(broker, Events())
    consumer.consume(1, timeout=0)  # take the assignment
    results: list[list[MemoryMessage]] = []
    waiter = threading.Thread(target=lambda: results.append(consumer.consume(1, timeout=30)))
    waiter.start()
    broker.append("t", None, b"hello")
    waiter.join(10)
    assert [m.value() for m in results[0]] == [b"hello"]
    waiter = threading.Thread(target=lambda: results.append(consumer.consume(1, timeout=30)))
    waiter.start()
    consumer.wake_consume()
    waiter.join(10)
    assert not waiter.is_alive() and results[1] == []


def test_commits_go_to_the_group_and_their_results_to_on_commit_at_the_next_consume() -> None:
    broker, events = broker_with(), Events()
    consumer = subscribed(broker, events)
    consumer.consume(1, timeout=0)
    result = consumer.commit(offsets=[KafkaTopicPartition("t", 0, 4)], asynchronous=False)
    assert result is not None and [(p.partition, p.offset, p.error) for p in result] == [
        (0, 4, None)
    ]
    assert consumer.commit(offsets=[KafkaTopicPartition("t", 1, 2)], asynchronous=True) is None
    assert events.commit_errors == []  # served by consume(), like librdkafka's poll
    consumer.consume(1, timeout=0)
    assert events.commit_errors == [None, None]
    committed = consumer.committed([KafkaTopicPartition("t", p) for p in (0, 1)])
    assert [p.offset for p in committed] == [4, 2]


def test_a_fenced_member_cannot_commit() -> None:
    broker, events = broker_with(), Events()
    consumer = subscribed(broker, events)
    consumer.consume(1, timeout=0)
    consumer.expire()
    with pytest.raises(KafkaException) as refused:
        consumer.commit(offsets=[KafkaTopicPartition("t", 0, 1)], asynchronous=False)
    error = refused.value.args[0]
    assert isinstance(error, KafkaError) and error.code() == KafkaError.UNKNOWN_MEMBER_ID
    consumer.commit(offsets=[KafkaTopicPartition("t", 0, 1)], asynchronous=True)
    consumer.consume(1, timeout=0)
    assert [e.code() if e else None for e in events.commit_errors] == [
        KafkaError.UNKNOWN_MEMBER_ID
    ] * 2
    # on_lost told it, then it rejoined and got its partitions back.
    assert events.log[1:] == [("lost", [("t", 0), ("t", 1)]), ("assign", [("t", 0), ("t", 1)])]
    assert broker.committed("g") == {}


def test_paused_partitions_are_skipped_until_resumed() -> None:
    broker = broker_with()
    consumer = subscribed(broker, Events())
    consumer.consume(1, timeout=0)
    broker.append("t", None, b"p0", partition=0)
    broker.append("t", None, b"p1", partition=1)
    consumer.pause([KafkaTopicPartition("t", 0)])
    assert [m.value() for m in consumer.consume(10, timeout=0)] == [b"p1"]
    assert consumer.consume(10, timeout=0) == []
    consumer.resume([KafkaTopicPartition("t", 0)])
    assert [m.value() for m in consumer.consume(10, timeout=0)] == [b"p0"]


def test_close_revokes_then_leaves_so_another_member_takes_over_at_the_commit() -> None:
    broker, first_events, second_events = broker_with(), Events(), Events()
    first = subscribed(broker, first_events)
    first.consume(1, timeout=0)
    for _ in range(3):
        broker.append("t", None, b"v", partition=0)
    first.commit(offsets=[KafkaTopicPartition("t", 0, 2)], asynchronous=False)
    second = subscribed(broker, second_events)
    second.consume(1, timeout=0)
    first.consume(1, timeout=0)  # revokes one partition for the newcomer
    second.consume(1, timeout=0)
    first.close()
    assert first_events.log == [
        ("assign", [("t", 0), ("t", 1)]),
        ("revoke", [("t", 1)]),  # the rebalance: one partition for the newcomer
        ("revoke", [("t", 0)]),  # close(): the rest
    ]
    [msg] = second.consume(10, timeout=0)
    assert (msg.partition(), msg.offset()) == (0, 2)  # from the commit, not from 0
    assert sorted(p.partition for p in second.assignment()) == [0, 1]
    with pytest.raises(RuntimeError, match="closed"):
        first.consume(1, timeout=0)


def test_a_crashed_consumer_revokes_nothing_and_its_commits_never_land() -> None:
    broker, events = broker_with(), Events()
    consumer = subscribed(broker, events)
    consumer.consume(1, timeout=0)
    consumer.crash()
    with pytest.raises(KafkaException):
        consumer.commit(offsets=[KafkaTopicPartition("t", 0, 1)], asynchronous=False)
    consumer.close()
    assert [kind for kind, _ in events.log] == ["assign"]
    assert broker.committed("g") == {}


def test_delivery_reports_wait_for_poll_and_carry_the_offsets() -> None:
    broker = broker_with(partitions=1)
    producer = MemoryProducer(broker)
    reports: list[tuple[KafkaError | None, int]] = []

    def on_delivery(err: KafkaError | None, msg: MemoryMessage) -> None:
        reports.append((err, msg.offset()))

    producer.produce("t", value="a", key="k", on_delivery=on_delivery, headers={"h": "x"})
    producer.produce("t", value=b"b", callback=on_delivery)
    assert reports == [] and len(producer) == 2
    assert [m.value() for m in broker.messages("t")] == [b"a", b"b"]  # appended already
    assert broker.messages("t")[0].headers() == [("h", b"x")]
    assert producer.poll(0) == 2
    assert reports == [(None, 0), (None, 1)]
    producer.produce("missing", value=b"x", on_delivery=on_delivery)
    assert producer.flush(1) == 0
    err, offset = reports[-1]
    assert err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART and offset == -1


def test_a_crashed_producer_appends_and_acknowledges_nothing() -> None:
    broker = broker_with(partitions=1)
    producer = MemoryProducer(broker)
    acked: list[Any] = []
    producer.produce("t", value=b"before", on_delivery=lambda e, m: acked.append(m))
    producer.crash()
    producer.produce("t", value=b"after", on_delivery=lambda e, m: acked.append(m))
    assert producer.flush() == 0 and acked == []
    assert [m.value() for m in broker.messages("t")] == [b"before"]


def test_the_backend_builds_clients_on_one_broker_from_the_app_config() -> None:
    backend = MemoryBackend()
    backend.broker.create_topic("t", 1)
    config = AppConfig.load("app", {"brokers": "memory:9092", "group_id": "grp"}, env={})
    consumer = backend.consumer(config, error_cb=print, on_commit=None)
    consumer.subscribe(["t"])
    backend.producer(config, error_cb=print).produce("t", value=b"v")
    [msg] = consumer.consume(5, timeout=0)
    assert msg.value() == b"v"
    assert backend.broker.members("grp")[0] is consumer.member
