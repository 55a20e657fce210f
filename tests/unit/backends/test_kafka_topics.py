"""``ensure_topics``: which replication factor each created topic asks for.

A fake admin client stands in for the cluster: it records the ``NewTopic``
requests and refuses replication factors above its broker count with
``INVALID_REPLICATION_FACTOR``, as Kafka does.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from streamkit import App, ConfigError, Topic
from streamkit.backends.kafka import BROKER_DEFAULT, ensure_topics, replication_factor
from streamkit.errors import BrokerError
from streamkit.policies import RetryPolicy


@dataclass
class FakeAdmin:
    """The two admin calls ``ensure_topics`` makes, against ``brokers`` brokers."""

    brokers: int = 3
    default_replication: int = 1
    existing: set[str] = field(default_factory=set)
    requests: list[NewTopic] = field(default_factory=list)

    def list_topics(self, timeout: float) -> Any:
        leader = SimpleNamespace(leader=0)
        topics = {name: SimpleNamespace(partitions={0: leader}) for name in self.existing}
        return SimpleNamespace(topics=topics, brokers=dict.fromkeys(range(self.brokers)))

    def create_topics(
        self, new: list[NewTopic], operation_timeout: float
    ) -> dict[str, Future[None]]:
        futures: dict[str, Future[None]] = {}
        for topic in new:
            self.requests.append(topic)
            asked = topic.replication_factor
            factor = self.default_replication if asked == BROKER_DEFAULT else asked
            future: Future[None] = Future()
            if factor > self.brokers:
                error = KafkaError(
                    KafkaError.INVALID_REPLICATION_FACTOR,
                    f"Unable to replicate the partition {factor} time(s): The target "
                    f"replication factor of {factor} cannot be reached because only "
                    f"{self.brokers} broker(s) are registered.",
                )
                future.set_exception(KafkaException(error))
            else:
                self.existing.add(topic.topic)
                future.set_result(None)
            futures[topic.topic] = future
        return futures

    def asked(self) -> dict[str, int]:
        return {t.topic: t.replication_factor for t in self.requests}


def failing_app() -> App:
    """An agent with a dead-letter topic and two retry tiers, and a timer."""
    app = App("shop", brokers="127.0.0.1:1")
    source = app.topic("shop.in", partitions=4)
    app.topic("shop.out", replication=2)

    @app.agent(source, retry=RetryPolicy(retry_topics=(5, 60)))
    def work(value: Any) -> None:
        return None

    @app.timer(60)
    def tick() -> None:
        return None

    return app


def test_a_topics_own_replication_wins_then_the_app_setting_then_the_broker() -> None:
    assert replication_factor(Topic("t", replication=2), 3) == 2
    assert replication_factor(Topic("t"), 3) == 3
    assert replication_factor(Topic("t"), None) == BROKER_DEFAULT == -1


def test_failure_and_timers_topics_get_the_app_wide_replication() -> None:
    app = failing_app()
    admin = FakeAdmin()
    created = ensure_topics(admin, app.topics.values(), replication=3)  # type: ignore[arg-type]
    assert created == sorted(app.topics)
    assert admin.asked() == {
        "shop.in": 3,
        "shop.out": 2,  # declared: the declaration wins
        "shop.work.retry.5s": 3,
        "shop.work.retry.60s": 3,
        "shop.work.dlq": 3,
        "shop.timers": 3,
    }


def test_without_the_setting_the_broker_decides() -> None:
    app = failing_app()
    admin = FakeAdmin()
    ensure_topics(admin, app.topics.values())  # type: ignore[arg-type]
    asked = admin.asked()
    assert asked.pop("shop.out") == 2
    assert set(asked.values()) == {BROKER_DEFAULT}


def test_existing_topics_are_not_requested() -> None:
    admin = FakeAdmin(existing={"shop.in"})
    created = ensure_topics(admin, [Topic("shop.in"), Topic("shop.x")], replication=3)  # type: ignore[arg-type]
    assert created == ["shop.x"]
    assert admin.asked() == {"shop.x": 3}


def test_more_replicas_than_brokers_names_the_app_setting() -> None:
    admin = FakeAdmin(brokers=1)
    with pytest.raises(ConfigError) as info:
        ensure_topics(admin, [Topic("shop.work.dlq")], replication=2)  # type: ignore[arg-type]
    assert info.value.setting == "replication (STREAMKIT_REPLICATION)"
    text = str(info.value)
    assert "shop.work.dlq cannot get 2 replicas: the cluster has 1 broker;" in text
    assert "INVALID_REPLICATION_FACTOR" not in text  # the broker's words follow, not its code
    assert "only 1 broker(s) are registered" in text


def test_more_replicas_than_brokers_names_the_declaration() -> None:
    admin = FakeAdmin(brokers=2)
    with pytest.raises(ConfigError) as info:
        ensure_topics(admin, [Topic("shop.in", replication=3)], replication=2)  # type: ignore[arg-type]
    assert info.value.setting == "replication= of topic shop.in"
    assert "cannot get 3 replicas: the cluster has 2 brokers" in str(info.value)


def test_a_broker_default_above_the_broker_count_says_what_to_set() -> None:
    admin = FakeAdmin(brokers=1, default_replication=3)
    with pytest.raises(
        BrokerError, match=r"set replication \(STREAMKIT_REPLICATION\) to at most 1"
    ):
        ensure_topics(admin, [Topic("shop.in")])  # type: ignore[arg-type]
