"""The jar broker and the pytest fixtures against a real Kafka broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from streamkit.errors import LocalKafkaError
from streamkit.localkafka import KAFKA_VERSION, LocalKafka, free_ports, process
from streamkit.pytest_plugin import NameFactory, TopicFactory, _delete_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

# Generous for one record on an idle local broker (milliseconds), but a
# KIP-848 group's first assignment needs a few heartbeats (1 s each here).
_CONSUME_TIMEOUT_S = 30.0


def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(topic, key=key, value=value, on_delivery=delivered)
    assert producer.flush(_CONSUME_TIMEOUT_S) == 0
    assert errors == []


def _consume_one(bootstrap: str, topic: str, group: str, **conf: Any) -> Message:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **conf,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + _CONSUME_TIMEOUT_S
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            consumer.commit(message=msg, asynchronous=False)
            return msg
        raise AssertionError(f"no record from {topic} within {_CONSUME_TIMEOUT_S}s")
    finally:
        consumer.close()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    """A broker of this test's own, so stopping it does not disturb other tests."""
    port, controller_port = free_ports(2)
    kafka = LocalKafka(port, controller_port=controller_port, data_dir=tmp_path / "kafka")
    yield kafka
    kafka.stop()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamkit.localkafka", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "protocol_conf",
    [
        pytest.param({"group.protocol": "consumer"}, id="kip848"),
        # A 1 s session is below Kafka's default floor (6 s); the local broker allows it.
        pytest.param(
            {"group.protocol": "classic", "session.timeout.ms": 1000, "heartbeat.interval.ms": 300},
            id="classic-short-session",
        ),
    ],
)
def test_new_topic_roundtrip_with_both_group_protocols(
    kafka_bootstrap: str,
    new_topic: TopicFactory,
    unique_name: NameFactory,
    protocol_conf: dict[str, Any],
) -> None:
    topic = new_topic(partitions=3)
    metadata = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(topic, timeout=10)
    partitions = metadata.topics[topic].partitions
    assert sorted(partitions) == [0, 1, 2]
    assert all(p.leader >= 0 for p in partitions.values())

    _produce(kafka_bootstrap, topic, b"k", b"hello")
    msg = _consume_one(kafka_bootstrap, topic, unique_name("grp"), **protocol_conf)
    assert (msg.key(), msg.value()) == (b"k", b"hello")


def test_new_topic_honours_name_and_config(
    kafka_bootstrap: str, new_topic: TopicFactory, unique_name: NameFactory
) -> None:
    wanted = unique_name("named")
    assert new_topic(name=wanted, config={"retention.ms": "60000"}) == wanted
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, wanted)
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    assert configs["retention.ms"].value == "60000"


def test_topics_are_not_auto_created(local_kafka: LocalKafka, unique_name: NameFactory) -> None:
    # Streamkit's own broker config, so only checked on the local broker: a
    # shared cluster behind STREAMKIT_TEST_BROKERS may allow auto-creation.
    missing = unique_name("typo")
    producer = Producer({"bootstrap.servers": local_kafka.bootstrap, "message.timeout.ms": 3000})
    failures: list[KafkaError | None] = []
    producer.produce(missing, b"x", on_delivery=lambda err, _msg: failures.append(err))
    assert producer.flush(30) == 0
    assert len(failures) == 1
    assert failures[0] is not None
    assert failures[0].code() in {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
    admin = AdminClient({"bootstrap.servers": local_kafka.bootstrap})
    assert missing not in admin.list_topics(timeout=10).topics


def test_record_survives_restart(
    local_kafka: LocalKafka, new_topic: TopicFactory, unique_name: NameFactory
) -> None:
    topic = new_topic()
    _produce(local_kafka.bootstrap, topic, b"id-1", b"kept")
    old_pid = local_kafka.pid

    local_kafka.restart()

    assert local_kafka.pid not in (None, old_pid)
    assert old_pid is not None and not process.is_alive(old_pid)
    msg = _consume_one(local_kafka.bootstrap, topic, unique_name("after-restart"))
    assert (msg.key(), msg.value()) == (b"id-1", b"kept")


def test_delete_topics_removes_them_and_ignores_missing_ones(
    kafka_bootstrap: str, unique_name: NameFactory
) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topic = unique_name("doomed")
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)

    _delete_topics(admin, [topic, unique_name("never-created")])

    deadline = time.monotonic() + 30
    while topic in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, f"{topic} still listed after deletion"
        time.sleep(0.1)


def test_start_writes_config_and_stop_cleans_up(own_broker: LocalKafka) -> None:
    started = time.monotonic()
    own_broker.start()
    startup_s = time.monotonic() - started

    pid = own_broker.pid
    assert pid is not None and process.is_alive(pid)
    assert process.read_pidfile(own_broker.data_dir) == pid
    assert os.getpgid(pid) == pid  # its own process group
    props = own_broker.server_properties.read_text()
    assert f"listeners=PLAINTEXT://127.0.0.1:{own_broker.port}," in props
    assert "Kafka Server started" in own_broker.log_file.read_text()
    assert (own_broker.log_dir / "meta.properties").is_file()
    assert startup_s < 60

    own_broker.stop()

    assert not process.is_alive(pid)
    assert not own_broker.is_running()
    assert process.read_pidfile(own_broker.data_dir) is None
    assert process.port_is_free(own_broker.port)
    assert process.port_is_free(own_broker.controller_port)
    own_broker.stop()  # idempotent


def test_a_broker_that_dies_at_startup_is_reported_with_its_log(tmp_path: Path) -> None:
    port, controller_port = free_ports(2)
    # Formatting runs without the heap flags and succeeds; the broker JVM then
    # refuses to start with a 1 KiB heap.
    kafka = LocalKafka(port, controller_port=controller_port, data_dir=tmp_path, heap="1k")
    with pytest.raises(LocalKafkaError, match="exited with code") as caught:
        kafka.start(timeout=60)
    assert "heap" in str(caught.value).lower()
    assert not kafka.is_running()
    assert process.read_pidfile(tmp_path) is None


def test_cli_up_is_idempotent_and_down_stops(tmp_path: Path) -> None:
    port, controller_port = free_ports(2)
    args = ["--port", str(port), "--controller-port", str(controller_port)]
    args += ["--data-dir", str(tmp_path / "kafka")]
    try:
        first = _cli("up", *args)
        assert first.returncode == 0, first.stderr
        assert f"kafka {KAFKA_VERSION} up on 127.0.0.1:{port} (pid " in first.stdout
        # The CLI process exited; the broker it started keeps answering.
        metadata = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10)
        assert list(metadata.brokers) == [1]

        again = _cli("up", *args)
        assert again.returncode == 0, again.stderr
        assert "already up" in again.stdout
        assert _cli("status", *args).returncode == 0

        pid = process.read_pidfile(tmp_path / "kafka")
        assert pid is not None
        down = _cli("down", *args)
        assert down.returncode == 0, down.stderr
        assert f"stopped (was pid {pid})" in down.stdout
        assert not process.is_alive(pid)

        assert _cli("down", *args).returncode == 0
        assert _cli("status", *args).returncode == 3
    finally:
        LocalKafka(port, controller_port=controller_port, data_dir=tmp_path / "kafka").stop()


def test_a_forgotten_broker_is_stopped_when_python_exits(tmp_path: Path) -> None:
    port, controller_port = free_ports(2)
    script = (
        "from streamkit.localkafka import LocalKafka\n"
        f"kafka = LocalKafka({port}, controller_port={controller_port},"
        f" data_dir={str(tmp_path)!r})\n"
        "kafka.start()\n"
        "print(kafka.pid, flush=True)\n"
        # No stop(): the atexit hook must do it.
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    try:
        assert done.returncode == 0, done.stderr
        pid = int(done.stdout.split()[-1])
        assert not process.is_alive(pid)
        assert process.read_pidfile(tmp_path) is None
        assert process.port_is_free(port)
    finally:
        LocalKafka(port, controller_port=controller_port, data_dir=tmp_path).stop()
