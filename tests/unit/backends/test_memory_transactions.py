"""Kafka transactions on the in-memory backend: what exactly-once tests rely on.

Each test states a rule Kafka keeps (visibility to ``read_committed``
readers, offsets committed with the transaction, fencing of zombies) and
checks the memory broker keeps it through the confluent-kafka method set.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamkit.backends.memory import MemoryBackend, MemoryConsumer, MemoryProducer
from streamkit.backends.memory_broker import MemoryBroker, MemoryMessage
from streamkit.config import AppConfig
from streamkit.types import TopicPartition

FENCED = "producer fenced by a newer instance with the same transactional.id"


def broker_with(partitions: int = 1) -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topic("t", partitions)
    return broker


def assigned(
    broker: MemoryBroker, group: str = "g", isolation: str = "read_committed"
) -> MemoryConsumer:
    """A consumer of ``t`` that took its assignment (call before appending records)."""
    settings: dict[str, Any] = {"isolation.level": isolation}
    consumer = MemoryConsumer(broker, group, **settings)
    consumer.subscribe(["t"])
    assert consumer.consume(10, timeout=0) == []  # the first consume takes the assignment
    assert consumer.assignment()
    return consumer


def transactional(broker: MemoryBroker, tid: str = "tx") -> MemoryProducer:
    producer = MemoryProducer(broker, **{"transactional.id": tid})
    producer.init_transactions()
    return producer


def values(msgs: list[MemoryMessage]) -> list[bytes | None]:
    return [m.value() for m in msgs]


def raised(call: Callable[[], object]) -> KafkaError:
    """The KafkaError inside the KafkaException ``call`` raises."""
    with pytest.raises(KafkaException) as info:
        call()
    error = info.value.args[0]
    assert isinstance(error, KafkaError)
    return error


def positions(*offsets: tuple[int, int]) -> list[KafkaTopicPartition]:
    return [KafkaTopicPartition("t", p, o) for p, o in offsets]


def test_a_committed_transaction_becomes_visible_to_read_committed_all_at_once() -> None:
    broker = broker_with()
    consumer = assigned(broker)
    producer = transactional(broker)
    producer.begin_transaction()
    producer.produce("t", value=b"a")
    producer.produce("t", value=b"b")
    assert consumer.consume(10, timeout=0) == []
    producer.commit_transaction()
    assert [(m.offset(), m.value()) for m in consumer.consume(10, timeout=0)] == [
        (0, b"a"),
        (1, b"b"),
    ]


def test_aborted_records_are_never_visible_but_their_offsets_are_consumed() -> None:
    broker = broker_with()
    consumer = assigned(broker)
    producer = transactional(broker)
    producer.begin_transaction()
    producer.produce("t", value=b"aborted-0")
    producer.produce("t", value=b"aborted-1")
    producer.abort_transaction()
    seen = broker.progress_seq
    assert consumer.consume(10, timeout=0) == []
    assert broker.progress_seq > seen  # drivers hear that the position moved
    member = consumer.member
    assert member is not None and member.owned[TopicPartition("t", 0)] == 2
    with broker.progress:
        assert broker.caught_up("g") == []  # nothing left to fetch: they were stepped over
    producer.begin_transaction()
    producer.produce("t", value=b"kept")
    producer.commit_transaction()
    [msg] = consumer.consume(10, timeout=0)
    assert (msg.offset(), msg.value()) == (2, b"kept")
    assert values(broker.messages("t")) == [b"aborted-0", b"aborted-1", b"kept"]
    assert values(broker.messages("t", committed_only=True)) == [b"kept"]


def test_an_open_transaction_holds_back_later_records_from_read_committed_only() -> None:
    broker = broker_with()
    committed, uncommitted = assigned(broker, "rc"), assigned(broker, "ru", "read_uncommitted")
    broker.append("t", None, b"before")
    producer = transactional(broker)
    producer.begin_transaction()
    producer.produce("t", value=b"open")
    broker.append("t", None, b"after")  # not transactional, but behind the open one
    assert values(committed.consume(10, timeout=0)) == [b"before"]
    assert values(uncommitted.consume(10, timeout=0)) == [b"before", b"open", b"after"]
    assert values(broker.messages("t", committed_only=True)) == [b"before"]
    with broker.progress:
        pending = broker.caught_up("rc")
    assert pending[-1] == (
        "t[0]: 2 records not fetched by rc-1 (an open transaction holds them back from offset 1)"
    )
    producer.commit_transaction()
    assert values(committed.consume(10, timeout=0)) == [b"open", b"after"]
    assert values(broker.messages("t", committed_only=True)) == [b"before", b"open", b"after"]


@pytest.mark.parametrize(("commit", "seen"), [(True, [b"txn", b"after"]), (False, [b"after"])])
def test_a_consume_waiting_behind_an_open_transaction_wakes_when_it_ends(
    commit: bool, seen: list[bytes]
) -> None:
    broker = broker_with()
    consumer = assigned(broker)
    producer = transactional(broker)
    producer.begin_transaction()
    producer.produce("t", value=b"txn")
    broker.append("t", None, b"after")
    assert consumer.consume(10, timeout=0) == []
    results: list[list[MemoryMessage]] = []
    waiter = threading.Thread(target=lambda: results.append(consumer.consume(10, timeout=30)))
    waiter.start()
    if commit:
        producer.commit_transaction()
    else:
        producer.abort_transaction()
    waiter.join(10)  # well before the 30 s timeout would return it anyway
    assert not waiter.is_alive() and values(results[0]) == seen


def test_staged_offsets_are_committed_with_the_transaction_and_dropped_with_an_abort() -> None:
    broker = broker_with(partitions=2)
    consumer = assigned(broker)
    for p in (0, 1):
        for _ in range(5):
            broker.append("t", None, b"in", partition=p)
    producer = transactional(broker)
    producer.begin_transaction()
    producer.send_offsets_to_transaction(
        positions((0, 3), (1, 2)), consumer.consumer_group_metadata()
    )
    assert broker.committed("g") == {}
    producer.commit_transaction()
    assert broker.committed("g") == {TopicPartition("t", 0): 3, TopicPartition("t", 1): 2}
    producer.begin_transaction()
    producer.produce("t", value=b"out", partition=0)
    producer.send_offsets_to_transaction(positions((0, 5)), consumer.consumer_group_metadata())
    producer.abort_transaction()
    found = consumer.committed([KafkaTopicPartition("t", p) for p in (0, 1)])
    assert [p.offset for p in found] == [3, 2]
    assert b"out" not in values(broker.messages("t", committed_only=True))


def test_logical_offsets_sent_to_a_transaction_are_ignored() -> None:
    broker = broker_with()
    consumer = assigned(broker)
    producer = transactional(broker)
    producer.begin_transaction()
    producer.send_offsets_to_transaction(positions((0, -1001)), consumer.consumer_group_metadata())
    producer.commit_transaction()
    assert broker.committed("g") == {}


def test_the_transactional_api_refuses_calls_out_of_order_as_librdkafka_does() -> None:
    broker = broker_with()
    producer = MemoryProducer(broker, **{"transactional.id": "tx"})
    assert raised(lambda: producer.produce("t", value=b"v")).code() == KafkaError._STATE
    assert raised(producer.begin_transaction).code() == KafkaError._STATE  # before init
    producer.init_transactions()
    error = raised(lambda: producer.produce("t", value=b"v"))
    assert (error.code(), error.str()) == (KafkaError._STATE, "Operation not valid in state Ready")
    assert raised(producer.commit_transaction).code() == KafkaError._STATE
    assert raised(producer.abort_transaction).code() == KafkaError._STATE
    producer.begin_transaction()
    assert raised(producer.begin_transaction).code() == KafkaError._STATE
    assert raised(producer.init_transactions).code() == KafkaError._STATE
    producer.abort_transaction()
    producer.begin_transaction()  # allowed again after an abort
    producer.produce("t", value=b"v")
    producer.commit_transaction()
    assert broker.messages("t") != [] and broker.messages("t") == broker.messages("t", True)
    plain = MemoryProducer(broker)
    assert raised(plain.begin_transaction).code() == KafkaError._NOT_CONFIGURED


def assert_fenced(error: KafkaError) -> None:
    assert (error.code(), error.str(), error.fatal()) == (KafkaError._FENCED, FENCED, True)


def test_a_newer_producer_with_the_same_id_fences_the_older_and_aborts_its_transaction() -> None:
    broker = broker_with()
    consumer = assigned(broker)
    old = transactional(broker)
    old.begin_transaction()
    old.produce("t", value=b"zombie")
    old.send_offsets_to_transaction(positions((0, 1)), consumer.consumer_group_metadata())
    new = transactional(broker)
    assert_fenced(raised(lambda: old.produce("t", value=b"late")))
    for call in (old.commit_transaction, old.abort_transaction, old.begin_transaction):
        assert_fenced(raised(call))
    assert_fenced(
        raised(
            lambda: old.send_offsets_to_transaction(
                positions((0, 1)), consumer.consumer_group_metadata()
            )
        )
    )
    assert values(broker.messages("t")) == [b"zombie"]  # "late" never reached the log
    assert broker.committed("g") == {}
    new.begin_transaction()
    new.produce("t", value=b"fresh")
    new.commit_transaction()
    assert values(consumer.consume(10, timeout=0)) == [b"fresh"]


def test_the_broker_can_fence_a_transactional_id_for_tests() -> None:
    broker = broker_with()
    consumer = assigned(broker)
    producer = transactional(broker)
    producer.begin_transaction()
    producer.produce("t", value=b"v")
    broker.fence("tx")
    assert_fenced(raised(producer.commit_transaction))
    assert consumer.consume(10, timeout=0) == []
    assert values(broker.messages("t", committed_only=True)) == []
    transactional(broker, "other").begin_transaction()  # other ids are untouched


def stale_metadata_after(change: str, broker: MemoryBroker, consumer: MemoryConsumer) -> Any:
    """Group metadata taken before ``change`` happened to ``consumer``'s membership."""
    metadata = consumer.consumer_group_metadata()
    if change == "crashed":
        consumer.crash()
    elif change == "left":
        consumer.close()
    elif change == "expired":
        consumer.expire()
    elif change == "rejoined":
        consumer.expire()
        consumer.consume(10, timeout=0)  # on_lost, then it rejoins and gets t[0] back
        assert consumer.assignment()
    elif change == "moved":
        other = MemoryConsumer(broker, "g")
        other.subscribe(["t"])
        other.consume(10, timeout=0)
        consumer.consume(10, timeout=0)  # revokes t[1] for the newcomer
        assert [p.partition for p in consumer.assignment()] == [0]
        return consumer.consumer_group_metadata()  # current, but no longer owns t[1]
    return metadata


@pytest.mark.parametrize("change", ["crashed", "left", "expired", "rejoined", "moved"])
def test_offsets_from_a_member_no_longer_current_are_refused_and_doom_the_transaction(
    change: str,
) -> None:
    broker = broker_with(partitions=2)
    consumer = assigned(broker)
    metadata = stale_metadata_after(change, broker, consumer)
    producer = transactional(broker)
    producer.begin_transaction()
    producer.produce("t", value=b"out", partition=0)
    error = raised(lambda: producer.send_offsets_to_transaction(positions((1, 1)), metadata))
    assert error.code() == KafkaError.ILLEGAL_GENERATION and error.txn_requires_abort()
    assert not error.fatal()
    error = raised(producer.commit_transaction)
    assert error.txn_requires_abort()
    producer.abort_transaction()
    assert broker.committed("g") == {}
    assert values(broker.messages("t", committed_only=True)) == []
    producer.begin_transaction()  # the producer itself is fine


def test_a_read_committed_member_waits_for_a_zombies_staged_offsets_to_settle() -> None:
    broker = broker_with()
    zombie = assigned(broker)
    for _ in range(4):
        broker.append("t", None, b"in")
    producer = transactional(broker)
    producer.begin_transaction()
    producer.send_offsets_to_transaction(positions((0, 3)), zombie.consumer_group_metadata())
    zombie.expire()  # its partition is free now, but its transaction is still open
    successor = MemoryConsumer(broker, "g")
    successor.subscribe(["t"])
    assert successor.consume(10, timeout=0) == [] and successor.assignment() == []
    with broker.progress:
        assert not broker.stable("g")
        assert broker.caught_up("g")[-1] == (
            "t[0]: g-2 waits for the open transaction of tx, which holds offsets for it"
        )
    producer.commit_transaction()  # accepted before the expiry, so it lands (KIP-447)
    [msg] = successor.consume(10, timeout=0)
    assert msg.offset() == 3  # from the zombie's committed offset, not from 0


def test_a_failed_record_makes_the_commit_refuse_and_commit_nothing() -> None:
    broker = broker_with()
    consumer = assigned(broker)
    producer = transactional(broker)
    reports: list[KafkaError | None] = []
    metadata = consumer.consumer_group_metadata()
    producer.begin_transaction()
    producer.send_offsets_to_transaction(positions((0, 1)), metadata)
    producer.produce("t", value=b"ok", on_delivery=lambda err, _msg: reports.append(err))
    producer.produce("missing", value=b"x", on_delivery=lambda err, _msg: reports.append(err))
    error = raised(lambda: producer.send_offsets_to_transaction(positions((0, 1)), metadata))
    assert error.txn_requires_abort()  # the transaction is doomed from the failure on
    error = raised(producer.commit_transaction)
    assert error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART and error.txn_requires_abort()
    assert len(reports) == 2 and reports[0] is None  # served first, as flush() would
    assert consumer.consume(10, timeout=0) == [] and broker.committed("g") == {}
    producer.abort_transaction()
    producer.begin_transaction()
    producer.produce("t", value=b"retry")
    producer.commit_transaction()
    assert values(consumer.consume(10, timeout=0)) == [b"retry"]


def test_a_crashed_producer_has_its_open_transaction_aborted_at_once() -> None:
    broker = broker_with()
    consumer = assigned(broker)
    broker.append("t", None, b"in")
    assert values(consumer.consume(10, timeout=0)) == [b"in"]
    producer = transactional(broker)
    producer.begin_transaction()
    producer.produce("t", value=b"lost")
    producer.send_offsets_to_transaction(positions((0, 1)), consumer.consumer_group_metadata())
    broker.append("t", None, b"plain")
    assert consumer.consume(10, timeout=0) == []  # held back behind the open transaction
    producer.crash()
    assert values(consumer.consume(10, timeout=0)) == [b"plain"]
    producer.commit_transaction()  # a dead process's calls reach nothing
    assert broker.committed("g") == {}
    assert values(broker.messages("t", committed_only=True)) == [b"in", b"plain"]


def test_seek_moves_the_position_and_drops_what_lay_between() -> None:
    broker = broker_with()
    consumer = assigned(broker)
    for i in range(6):
        broker.append("t", None, str(i).encode())
    assert values(consumer.consume(2, timeout=0)) == [b"0", b"1"]
    consumer.seek(KafkaTopicPartition("t", 0, 4))
    assert values(consumer.consume(10, timeout=0)) == [b"4", b"5"]  # 2 and 3 never come
    consumer.seek(KafkaTopicPartition("t", 0, 1))
    assert values(consumer.consume(1, timeout=0)) == [b"1"]
    consumer.seek(KafkaTopicPartition("t", 0, OFFSET_END))
    assert consumer.consume(10, timeout=0) == []
    consumer.seek(KafkaTopicPartition("t", 0, OFFSET_BEGINNING))
    assert values(consumer.consume(1, timeout=0)) == [b"0"]


def test_seek_on_a_partition_not_assigned_is_refused() -> None:
    broker = broker_with(partitions=2)
    consumer = MemoryConsumer(broker, "g")
    assert raised(lambda: consumer.seek(KafkaTopicPartition("t", 0, 0))).code() == (
        KafkaError._STATE
    )
    consumer.subscribe(["t"])
    consumer.consume(10, timeout=0)
    other = MemoryConsumer(broker, "g")
    other.subscribe(["t"])
    consumer.consume(10, timeout=0)  # revokes t[1] for the newcomer
    other.consume(10, timeout=0)
    assert [p.partition for p in other.assignment()] == [1]
    assert raised(lambda: other.seek(KafkaTopicPartition("t", 0, 0))).code() == KafkaError._STATE
    assert raised(lambda: other.seek(KafkaTopicPartition("t", 1, -5))).code() == (
        KafkaError._INVALID_ARG
    )


def test_seek_to_the_end_on_read_committed_stops_at_the_open_transaction() -> None:
    broker = broker_with()
    consumer = assigned(broker)
    producer = transactional(broker)
    producer.begin_transaction()
    producer.produce("t", value=b"open")
    broker.append("t", None, b"after")
    consumer.seek(KafkaTopicPartition("t", 0, OFFSET_END))
    producer.commit_transaction()
    assert values(consumer.consume(10, timeout=0)) == [b"open", b"after"]


def test_an_unknown_isolation_level_is_refused_at_construction() -> None:
    settings: dict[str, Any] = {"isolation.level": "read_committed_please"}
    with pytest.raises(ValueError, match=r"isolation\.level"):
        MemoryConsumer(broker_with(), "g", **settings)


def test_the_backend_hands_clients_their_librdkafka_settings() -> None:
    backend = MemoryBackend()
    backend.broker.create_topic("t", 1)
    settings = {"brokers": "memory:9092", "group_id": "g"}
    config = AppConfig.load(
        "app", {**settings, "consumer": {"isolation.level": "read_uncommitted"}}, env={}
    )
    consumer = backend.consumer(config)
    consumer.subscribe(["t"])
    consumer.consume(1, timeout=0)
    producer = backend.producer(config, **{"transactional.id": "app-0"})
    producer.init_transactions()
    producer.begin_transaction()
    producer.produce("t", value=b"open")
    assert values(consumer.consume(10, timeout=0)) == [b"open"]  # read_uncommitted
    plain = backend.producer(AppConfig.load("app", settings, env={}))
    assert raised(plain.init_transactions).code() == KafkaError._NOT_CONFIGURED
