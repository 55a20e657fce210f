from __future__ import annotations

from streamkit.localkafka.container import IMAGE, container_env, env_name
from streamkit.localkafka.fetch import KAFKA_VERSION


def test_image_is_the_pinned_version() -> None:
    assert IMAGE.split(":") == ["apache/kafka", KAFKA_VERSION]


def test_env_names_follow_the_image_convention() -> None:
    assert (
        env_name("group.consumer.session.timeout.ms") == "KAFKA_GROUP_CONSUMER_SESSION_TIMEOUT_MS"
    )
    assert env_name("a_b-c.d") == "KAFKA_A___B__C_D"


def test_container_env_advertises_the_published_address() -> None:
    env = container_env("docker-host", 31000, 9093)
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://docker-host:31000"
    assert env["KAFKA_LISTENERS"] == "PLAINTEXT://0.0.0.0:31000,CONTROLLER://localhost:9093"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@localhost:9093"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert len(env["CLUSTER_ID"]) == 22
