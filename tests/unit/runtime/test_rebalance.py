"""The rebalance handlers called directly, with a fake runtime behind them."""

import concurrent.futures
from typing import Any

from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamkit.runtime.rebalance import RebalanceHandlers
from streamkit.types import TopicPartition


class FakeHost:
    group = "g"

    def __init__(self, offsets: list[KafkaTopicPartition] | None = None, hang: bool = False):
        self.assigned: list[TopicPartition] = []
        self.released: list[TopicPartition] = []
        self.abandoned: list[TopicPartition] = []
        self._offsets = offsets or []
        self._hang = hang

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned += tps

    def release(
        self, tps: list[TopicPartition], budget: float
    ) -> concurrent.futures.Future[list[KafkaTopicPartition]]:
        self.released += tps
        future: concurrent.futures.Future[list[KafkaTopicPartition]] = concurrent.futures.Future()
        if not self._hang:
            future.set_result(self._offsets)
        return future

    def abandon(self, tps: list[TopicPartition]) -> list[str]:
        self.abandoned += tps
        return [f"{tp}@5" for tp in tps]


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[tuple[list[KafkaTopicPartition], bool]] = []

    def commit(self, offsets: list[KafkaTopicPartition], asynchronous: bool) -> Any:
        self.commits.append((offsets, asynchronous))
        return offsets


def parts(*ns: int) -> list[KafkaTopicPartition]:
    return [KafkaTopicPartition("t", n) for n in ns]


def test_assign_creates_workers_for_new_partitions_only() -> None:
    host = FakeHost()
    RebalanceHandlers(host, budget=1.0).on_assign(FakeConsumer(), parts(1, 2))
    assert host.assigned == [TopicPartition("t", 1), TopicPartition("t", 2)]


def test_revoke_drains_then_commits_synchronously() -> None:
    offsets = [KafkaTopicPartition("t", 1, 42)]
    host, consumer = FakeHost(offsets), FakeConsumer()
    RebalanceHandlers(host, budget=1.0).on_revoke(consumer, parts(1))
    assert host.released == [TopicPartition("t", 1)]
    assert consumer.commits == [(offsets, False)]
    assert host.abandoned == []


def test_revoke_past_deadline_abandons_without_commit() -> None:
    host, consumer = FakeHost(hang=True), FakeConsumer()
    RebalanceHandlers(host, budget=0.05).on_revoke(consumer, parts(3))
    assert consumer.commits == []
    assert host.abandoned == [TopicPartition("t", 3)]


def test_lost_never_commits() -> None:
    host, consumer = FakeHost([KafkaTopicPartition("t", 1, 9)]), FakeConsumer()
    RebalanceHandlers(host, budget=1.0).on_lost(consumer, parts(1))
    assert consumer.commits == []
    assert host.released == []
    assert host.abandoned == [TopicPartition("t", 1)]


def test_a_member_that_lost_its_partitions_is_not_joined_until_assigned_again() -> None:
    handlers = RebalanceHandlers(FakeHost(), budget=1.0)
    handlers.on_assign(FakeConsumer(), parts(1))
    assert handlers.joined
    handlers.on_lost(FakeConsumer(), parts(1))
    assert not handlers.joined, "/readyz would keep saying ready"
    handlers.on_assign(FakeConsumer(), [])
    assert handlers.joined


def test_empty_revoke_is_a_no_op() -> None:
    host, consumer = FakeHost(), FakeConsumer()
    RebalanceHandlers(host, budget=1.0).on_revoke(consumer, [])
    assert host.released == [] and consumer.commits == []
