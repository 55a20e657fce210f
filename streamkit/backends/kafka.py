"""The confluent-kafka (librdkafka) backend: clients built from one config.

Client construction is where librdkafka validates pass-through properties, so
this module turns its errors into :class:`~streamkit.errors.ConfigError`
naming the setting the user wrote, instead of a librdkafka error string.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamkit.config import AppConfig, Role
from streamkit.errors import BrokerError, ConfigError
from streamkit.topics import Topic

log = structlog.get_logger("streamkit.kafka")


def _build(
    factory: Callable[[dict[str, Any]], Any], config: AppConfig, role: Role, extra: dict[str, Any]
) -> Any:
    conf = config.librdkafka(role)
    conf.update(extra)
    try:
        return factory(conf)
    except (KafkaException, ValueError, TypeError) as exc:
        text = _error_text(exc)
        setting = _culprit(factory, config, role, conf)
        raise ConfigError(setting, f"librdkafka rejected it: {text}") from None


def _culprit(
    factory: Callable[[dict[str, Any]], Any], config: AppConfig, role: Role, conf: dict[str, Any]
) -> str:
    """Find which user-set property librdkafka refused.

    librdkafka's message names the property by its canonical name, which is
    not always the one the user wrote (``linger.ms`` is reported as
    ``queue.buffering.max.ms``), so each user property is tried alone.
    """
    base = {k: v for k, v in conf.items() if k not in config.origins}
    for key, origin in config.origins.items():
        if key not in conf:
            continue
        try:
            client = factory({**base, key: conf[key]})
        except (KafkaException, ValueError, TypeError):
            return origin
        del client
    return "kafka="


def _error_text(exc: Exception) -> str:
    """Librdkafka wraps a KafkaError in the exception; its ``str()`` is the readable part."""
    first = exc.args[0] if exc.args else exc
    return first.str() if isinstance(first, KafkaError) else str(first)


def create_consumer(config: AppConfig, **callbacks: Any) -> Consumer:
    """A consumer with the runtime's delivery settings; ``callbacks`` are librdkafka's."""
    consumer: Consumer = _build(Consumer, config, "consumer", callbacks)
    return consumer


def create_producer(config: AppConfig, **callbacks: Any) -> Producer:
    """An idempotent ``acks=all`` producer."""
    producer: Producer = _build(Producer, config, "producer", callbacks)
    return producer


def create_admin(config: AppConfig) -> AdminClient:
    """An admin client with the shared connection and security settings."""
    admin: AdminClient = _build(AdminClient, config, "admin", {})
    return admin


def wait_for_broker(admin: AdminClient, brokers: str, timeout: float | None = None) -> None:
    """Block until the cluster answers a metadata request.

    A worker that starts before Kafka (a pod scheduled during an outage)
    waits instead of crash-looping; it says so once, then every minute.

    Args:
        admin: Any admin client.
        brokers: The bootstrap servers, for the log line.
        timeout: Give up after this many seconds (``None``: wait for ever).

    Raises:
        BrokerError: ``timeout`` passed without an answer.
    """
    started = time.monotonic()
    last_said = -math.inf
    while True:
        try:
            admin.list_topics(timeout=5)
            if last_said > -math.inf:
                log.info("kafka reachable", brokers=brokers)
            return
        except KafkaException as exc:
            waited = time.monotonic() - started
            if timeout is not None and waited >= timeout:
                raise BrokerError(
                    f"cannot reach Kafka at {brokers} after {timeout:.0f}s: {_error_text(exc)}"
                ) from None
            if time.monotonic() - last_said >= 60:
                last_said = time.monotonic()
                log.warning("waiting for kafka", brokers=brokers, error=_error_text(exc))


def ensure_topics(admin: AdminClient, topics: Iterable[Topic], timeout: float = 30.0) -> list[str]:
    """Create the declared topics that do not exist yet; idempotent.

    Topics without a partition count get 1 and replication 1 unless declared,
    which suits local brokers; production topics should declare both.

    Returns:
        Names of the topics created by this call.

    Raises:
        BrokerError: The broker refused a creation for a reason other than
            the topic already existing.
    """
    wanted = {t.name: t for t in topics}
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [t for name, t in wanted.items() if name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                t.name,
                num_partitions=t.partitions or 1,
                replication_factor=t.replication or 1,
                config=dict(t.config),
            )
            for t in missing
        ],
        operation_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0]
            if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                raise BrokerError(f"cannot create topic {name}: {_error_text(exc)}") from None
    if created:
        _wait_for_leaders(admin, created, timeout)
        log.info("topics created", topics=", ".join(sorted(created)))
    return sorted(created)


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout: float) -> None:
    """Creation returns before leaders are elected; produce fails until they are."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = admin.list_topics(timeout=timeout).topics
        if all(
            n in meta
            and meta[n].partitions
            and all(p.leader >= 0 for p in meta[n].partitions.values())
            for n in names
        ):
            return
        time.sleep(0.05)
    raise BrokerError(f"topics {', '.join(names)} have no leader after {timeout}s")


class KafkaBackend:
    """The confluent-kafka backend (the default)."""

    def consumer(self, config: AppConfig, **callbacks: Any) -> Consumer:
        """See :func:`create_consumer`."""
        return create_consumer(config, **callbacks)

    def producer(self, config: AppConfig, **callbacks: Any) -> Producer:
        """See :func:`create_producer`."""
        return create_producer(config, **callbacks)
