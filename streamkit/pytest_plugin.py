"""pytest fixtures for testing against a real Kafka broker.

Installed with streamkit and loaded automatically (``pytest11`` entry point).
Importing it is cheap: nothing touches the network, Docker or Java until a
test asks for one of these fixtures.

Fixtures:

``kafka_bootstrap`` (session)
    ``bootstrap.servers`` of a broker, chosen in this order:

    1. ``$STREAMKIT_TEST_BROKERS``, used as is (CI with a managed broker);
    2. an ``apache/kafka`` container, if ``testcontainers`` is installed and a
       Docker engine answers;
    3. a :class:`~streamkit.localkafka.LocalKafka` jar broker on free ports
       with a temporary data directory, removed at the end of the session.

``local_kafka`` (session)
    The ``LocalKafka`` behind ``kafka_bootstrap``, for tests that stop or
    restart the broker; skips the test when the broker comes from elsewhere.

``unique_name`` (function)
    ``unique_name("orders") -> "orders-restart-keeps-data-1a2b3c4d"``: topic and
    group names that never collide with another test or an earlier run.

``new_topic`` (function)
    ``new_topic(partitions=3) -> name``: creates a topic, waits until every
    partition has a leader, and deletes it when the test ends.

``memory_app`` (function)
    ``memory_app(app, **options) -> TestApp``: the app running on an
    in-memory Kafka (:mod:`streamkit.testing`), already started and stopped
    when the test ends. No broker, no Docker, no Java.

Example::

    def test_roundtrip(kafka_bootstrap: str, new_topic: TopicFactory) -> None:
        topic = new_topic(partitions=2)
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pytest

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

    from streamkit.app import App
    from streamkit.localkafka import LocalKafka
    from streamkit.testing import TestApp

BROKERS_ENV_VAR = "STREAMKIT_TEST_BROKERS"

BrokerSource = Literal["env", "container", "local"]

# Creating a topic and electing its leaders takes well under a second on an
# idle broker; 30 s leaves room for a CI machine running several suites.
_TOPIC_TIMEOUT_S = 30.0
# A cold jar broker formats and starts in 3-5 s; a container may first pull
# its image. Two minutes fails a broken setup without hanging the session.
_BROKER_START_TIMEOUT_S = 120.0
_POLL_S = 0.05
# Kafka allows 249 characters; staying far below keeps names readable in
# tool output and leaves room for suffixes tests add themselves.
_MAX_NAME_CHARS = 120


class NameFactory(Protocol):
    """Type of the ``unique_name`` fixture."""

    def __call__(self, prefix: str) -> str:
        """Return a new name starting with ``prefix``, unique to this call."""
        ...


class TopicFactory(Protocol):
    """Type of the ``new_topic`` fixture."""

    def __call__(
        self,
        partitions: int = 1,
        name: str | None = None,
        config: Mapping[str, str] | None = None,
    ) -> str:
        """Create a topic (deleted after the test) and return its name once usable."""
        ...


class MemoryAppFactory(Protocol):
    """Type of the ``memory_app`` fixture."""

    def __call__(self, app: App, **options: Any) -> TestApp:
        """Start ``app`` on an in-memory Kafka; ``options`` as for ``TestApp``."""
        ...


@dataclass(frozen=True)
class TestBroker:
    """The broker a test session runs against, and where it came from."""

    __test__ = False  # Not a test class, despite the name pytest looks for.

    bootstrap: str
    source: BrokerSource
    local: LocalKafka | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Declare the ``integration`` marker unless the project already does."""
    declared = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    if "integration" not in declared:
        config.addinivalue_line("markers", "integration: the test talks to a real Kafka broker")


def choose_broker_source(
    environ: Mapping[str, str], docker_usable: Callable[[], bool]
) -> BrokerSource:
    """Decide where the session's broker comes from (see the module docstring).

    ``docker_usable`` is only called when the environment names no broker, so
    a CI job with ``$STREAMKIT_TEST_BROKERS`` never waits on a Docker ping.
    """
    if environ.get(BROKERS_ENV_VAR, "").strip():
        return "env"
    if docker_usable():
        return "container"
    return "local"


@pytest.fixture(scope="session")
def streamkit_test_broker() -> Iterator[TestBroker]:
    """Provide the session's broker (what ``kafka_bootstrap`` and ``local_kafka`` read)."""
    from streamkit.localkafka.container import docker_usable

    source = choose_broker_source(os.environ, docker_usable)
    if source == "env":
        yield TestBroker(bootstrap=os.environ[BROKERS_ENV_VAR].strip(), source="env")
    elif source == "container":
        yield from _container_broker()
    else:
        yield from _local_broker()


def _container_broker() -> Iterator[TestBroker]:
    from streamkit.localkafka.container import KafkaContainerBroker

    container = KafkaContainerBroker()
    container.start()
    try:
        yield TestBroker(bootstrap=container.bootstrap, source="container")
    finally:
        container.stop()


def _local_broker() -> Iterator[TestBroker]:
    from streamkit.localkafka import LocalKafka, free_ports

    data_dir = tempfile.mkdtemp(prefix="streamkit-kafka-")
    try:
        port, controller_port = free_ports(2)
        kafka = LocalKafka(port, controller_port=controller_port, data_dir=data_dir)
        try:
            kafka.start(timeout=_BROKER_START_TIMEOUT_S)
            yield TestBroker(bootstrap=kafka.bootstrap, source="local", local=kafka)
        finally:
            kafka.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap(streamkit_test_broker: TestBroker) -> str:
    """Return ``bootstrap.servers`` of the session's broker."""
    return streamkit_test_broker.bootstrap


@pytest.fixture(scope="session")
def local_kafka(streamkit_test_broker: TestBroker) -> LocalKafka:
    """Provide the session's jar broker, for tests that stop or restart it.

    A test that stops it must start it again before returning; later tests
    share it.
    """
    if streamkit_test_broker.local is None:
        pytest.skip(
            f"needs the local jar broker, but this session's broker comes from "
            f"{streamkit_test_broker.source} ({streamkit_test_broker.bootstrap})"
        )
    return streamkit_test_broker.local


def short_test_id(test_name: str, limit: int = 32) -> str:
    """Turn a test's name into a short, topic-safe fragment for names it creates.

    Only ``[a-z0-9-]``: Kafka also allows ``.`` and ``_`` but warns that the
    two collide in metric names.
    """
    name = test_name.removeprefix("test_").lower()
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")[:limit].strip("-") or "test"


def make_unique_name(prefix: str, test_id: str) -> str:
    """Return ``<prefix>-<test id>-<8 hex chars>``, using only valid topic characters."""
    safe_prefix = re.sub(r"[^A-Za-z0-9._-]+", "-", prefix).strip("-") or "t"
    stem = f"{safe_prefix}-{test_id}"[: _MAX_NAME_CHARS - 9]
    # 32 random bits: two names from one test collide once in four billion.
    return f"{stem}-{secrets.token_hex(4)}"


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> NameFactory:
    """Make topic and group names unique to this test and this run."""
    test_id = short_test_id(request.node.name)

    def make(prefix: str) -> str:
        return make_unique_name(prefix, test_id)

    return make


@pytest.fixture
def new_topic(kafka_bootstrap: str, unique_name: NameFactory) -> Iterator[TopicFactory]:
    """Create topics for one test and delete them all when it ends."""
    created: list[str] = []
    admin: AdminClient | None = None

    def create(
        partitions: int = 1,
        name: str | None = None,
        config: Mapping[str, str] | None = None,
    ) -> str:
        nonlocal admin
        from confluent_kafka.admin import AdminClient, NewTopic

        if admin is None:
            # librdkafka's own log goes to Python logging: a test that stops
            # the broker would otherwise get a stderr line per reconnect.
            admin = AdminClient(
                {"bootstrap.servers": kafka_bootstrap, "logger": logging.getLogger(__name__)}
            )
        topic = name or unique_name("topic")
        # Replication factor -1 takes the broker's default: 1 on the local
        # broker, the cluster's choice on a shared one.
        spec = NewTopic(
            topic, num_partitions=partitions, replication_factor=-1, config=dict(config or {})
        )
        admin.create_topics([spec], operation_timeout=_TOPIC_TIMEOUT_S)[topic].result(
            timeout=_TOPIC_TIMEOUT_S
        )
        created.append(topic)
        _wait_until_usable(admin, topic, partitions)
        return topic

    yield create
    if created and admin is not None:
        _delete_topics(admin, created)


def _wait_until_usable(admin: AdminClient, topic: str, partitions: int) -> None:
    """Poll metadata until every partition of ``topic`` has a leader.

    CreateTopics returns once the controller recorded the topic; the broker
    learns about it (and elects leaders) moments later, and a producer that
    races that gets UNKNOWN_TOPIC_OR_PART errors.
    """
    deadline = time.monotonic() + _TOPIC_TIMEOUT_S
    while True:
        metadata = admin.list_topics(topic=topic, timeout=_TOPIC_TIMEOUT_S)
        found = metadata.topics.get(topic)
        if (
            found is not None
            and found.error is None
            and len(found.partitions) == partitions
            and all(p.error is None and p.leader >= 0 for p in found.partitions.values())
        ):
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"topic {topic} did not get leaders for {partitions} partitions "
                f"within {_TOPIC_TIMEOUT_S:.0f}s"
            )
        time.sleep(_POLL_S)


def _delete_topics(admin: AdminClient, topics: list[str]) -> None:
    from confluent_kafka import KafkaError, KafkaException

    futures = admin.delete_topics(topics, operation_timeout=_TOPIC_TIMEOUT_S)
    for future in futures.values():
        try:
            future.result(timeout=_TOPIC_TIMEOUT_S)
        except KafkaException as exc:
            error = exc.args[0]
            # The test deleted it already: the goal is reached.
            if not (
                isinstance(error, KafkaError) and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            ):
                raise


@pytest.fixture
def memory_app() -> Iterator[MemoryAppFactory]:
    """Start apps on in-memory brokers for one test; each is stopped at teardown.

    Teardown re-raises a worker failure the test never looked at, as leaving
    ``with TestApp(...)`` does.
    """
    from streamkit.testing import TestApp

    started: list[TestApp] = []

    def start(app: App, **options: Any) -> TestApp:
        harness = TestApp(app, **options)
        harness.__enter__()
        started.append(harness)
        return harness

    yield start
    failures: list[BaseException] = []
    for harness in reversed(started):
        try:
            harness.__exit__(None, None, None)
        except BaseException as exc:  # stop the others before reporting it
            failures.append(exc)
    if failures:
        raise failures[0]
