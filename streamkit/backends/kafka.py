"""The confluent-kafka (librdkafka) backend: clients built from one config.

Client construction is where librdkafka validates pass-through properties, so
this module turns its errors into :class:`~streamkit.errors.ConfigError`
naming the setting the user wrote, instead of a librdkafka error string.

A broker that refuses the client (a wrong password, a certificate the
configured CA does not verify) is not an outage: librdkafka retries it for
ever, so :func:`wait_for_broker` stops at the first refusal with one line
saying so (:func:`refusal`), and the clients' own log lines, which repeat
what their error callbacks report on every reconnect, are not printed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamkit.config import AppConfig, Role
from streamkit.errors import BrokerError, ConfigError
from streamkit.topics import Topic

log = structlog.get_logger("streamkit.kafka")


# librdkafka error codes no retry can cure: the broker refused these
# credentials or this client's trust in its certificate.
_REFUSALS = {
    KafkaError._AUTHENTICATION: "authentication failed (check sasl.username, sasl.password "
    "and sasl.mechanism)",
    KafkaError._SSL: "the TLS handshake failed (check ssl.ca.location and the broker's "
    "certificate)",
}


def refusal(err: KafkaError) -> str | None:
    """Why the broker refused this client for good, or ``None`` for a retriable error."""
    reason = _REFUSALS.get(err.code())
    return None if reason is None else f"{reason}: {err.str()}"


# Broker answers meaning this principal lacks an ACL: the same request
# fails the same way until an operator grants it.
_DENIALS = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "the topic",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "the consumer group",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "the cluster",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "the transactional id",
}


def denial(err: Any) -> str | None:
    """What the broker did not authorize, or ``None`` when ``err`` is no ACL denial."""
    if not isinstance(err, KafkaError) or err.code() not in _DENIALS:
        return None
    return f"this principal is not authorized on {_DENIALS[err.code()]}: {err.str()}"


class _ClientLog:
    """librdkafka's log lines, minus the FAIL ones.

    A FAIL line is librdkafka telling about a failed connection, and it also
    hands the same error to the error callback, which the runtime logs once
    per kind. Printed, a wrong password made one line per reconnect and
    client (293 in 40 s); the other lines go to the ``streamkit.librdkafka``
    logger.
    """

    _logger = logging.getLogger("streamkit.librdkafka")

    def log(self, level: int, fmt: str, *args: Any) -> None:
        if args and args[0] == "FAIL":
            return
        self._logger.log(level, fmt, *args)


def _build(
    factory: Callable[[dict[str, Any]], Any], config: AppConfig, role: Role, extra: dict[str, Any]
) -> Any:
    conf = config.librdkafka(role)
    conf.setdefault("logger", _ClientLog())
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
    """An admin client with the shared connection and security settings.

    It keeps the last error its callback reported (``admin.poll()`` serves
    it), so :func:`wait_for_broker` can tell a refusal from an outage.
    """
    errors: list[KafkaError] = []
    admin: AdminClient = _build(AdminClient, config, "admin", {"error_cb": errors.append})
    admin._streamkit_errors = errors  # type: ignore[attr-defined]
    return admin


def _refused(admin: AdminClient) -> str | None:
    errors: list[KafkaError] | None = getattr(admin, "_streamkit_errors", None)
    if errors is None:
        return None
    admin.poll(0)  # serves the error callback
    reasons = [r for r in map(refusal, errors) if r is not None]
    errors.clear()
    return reasons[0] if reasons else None


def wait_for_broker(admin: AdminClient, brokers: str, timeout: float | None = None) -> None:
    """Block until the cluster answers a metadata request.

    A worker that starts before Kafka (a pod scheduled during an outage)
    waits instead of crash-looping; it says so once, then every minute.

    Args:
        admin: Any admin client.
        brokers: The bootstrap servers, for the log line.
        timeout: Give up after this many seconds (``None``: wait for ever).

    Raises:
        BrokerError: ``timeout`` passed without an answer, or the broker
            refused the client (:func:`refusal`) with an admin client from
            :func:`create_admin`: that does not get better by waiting.
    """
    started = time.monotonic()
    last_said = -math.inf
    while True:
        try:
            # 1 s per try: a refusal arrives within a connection attempt
            # (~0.3 s for SCRAM), and is told after the try it fails.
            admin.list_topics(timeout=1)
            if last_said > -math.inf:
                log.info("kafka reachable", brokers=brokers)
            return
        except KafkaException as exc:
            refused = _refused(admin)
            if refused is not None:
                raise BrokerError(f"cannot connect to Kafka at {brokers}: {refused}") from None
            waited = time.monotonic() - started
            if timeout is not None and waited >= timeout:
                raise BrokerError(
                    f"cannot reach Kafka at {brokers} after {timeout:.0f}s: {_error_text(exc)}"
                ) from None
            # Said after 5 s, as when one try took 5 s: a broker slow to
            # answer its first request is not reported as down.
            if waited >= 5 and time.monotonic() - last_said >= 60:
                last_said = time.monotonic()
                log.warning("waiting for kafka", brokers=brokers, error=_error_text(exc))


# NewTopic's "let the broker decide": Kafka >= 2.4 (KIP-464) resolves it to
# default.replication.factor (or num.partitions) when it creates the topic.
BROKER_DEFAULT = -1


def replication_factor(topic: Topic, replication: int | None) -> int:
    """The replication factor to create ``topic`` with.

    The topic's own ``replication=`` wins, then the app-wide ``replication``
    setting, then the broker's ``default.replication.factor``
    (:data:`BROKER_DEFAULT`).
    """
    if topic.replication is not None:
        return topic.replication
    return BROKER_DEFAULT if replication is None else replication


def ensure_topics(
    admin: AdminClient,
    topics: Iterable[Topic],
    timeout: float = 30.0,
    *,
    replication: int | None = None,
) -> list[str]:
    """Create the declared topics that do not exist yet; idempotent.

    Topics without a partition count get 1. Topics without a replication
    factor, which includes every dead-letter, retry-tier and timers topic,
    get ``replication`` (the app-wide setting, ``AppConfig.replication``),
    or the broker's ``default.replication.factor`` when that is ``None``.

    Args:
        admin: An admin client (:func:`create_admin`).
        topics: The declarations to create when missing.
        timeout: Seconds for the metadata request and for each creation.
        replication: The app-wide replication factor; ``None``: the broker's default.

    Returns:
        Names of the topics created by this call.

    Raises:
        ConfigError: The cluster cannot place the replicas asked for (more
            than it has brokers); names the declaration or setting to lower.
        BrokerError: The broker refused a creation for another reason than
            the topic already existing.
    """
    wanted = {t.name: t for t in topics}
    metadata = admin.list_topics(timeout=timeout)
    missing = [t for name, t in wanted.items() if name not in metadata.topics]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                t.name,
                num_partitions=t.partitions or 1,
                replication_factor=replication_factor(t, replication),
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
            code = err.code() if isinstance(err, KafkaError) else None
            if code == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            if code == KafkaError.INVALID_REPLICATION_FACTOR:
                raise _too_few_brokers(
                    wanted[name], replication, len(metadata.brokers), _error_text(exc)
                ) from None
            raise BrokerError(f"cannot create topic {name}: {_error_text(exc)}") from None
    if created:
        _wait_for_leaders(admin, created, timeout)
        log.info("topics created", topics=", ".join(sorted(created)))
    return sorted(created)


def _too_few_brokers(
    topic: Topic, replication: int | None, brokers: int, said: str
) -> ConfigError | BrokerError:
    """INVALID_REPLICATION_FACTOR as an error naming what asked for the replicas."""
    cluster = f"the cluster has {brokers} broker{'' if brokers == 1 else 's'}"
    if topic.replication is not None:
        setting, asked = f"replication= of topic {topic.name}", topic.replication
    elif replication is not None:
        # Set in code or in the environment: AppConfig does not keep which.
        setting, asked = "replication (STREAMKIT_REPLICATION)", replication
    else:
        return BrokerError(
            f"cannot create topic {topic.name}: the broker's default.replication.factor "
            f"is above its broker count ({cluster}); set replication (STREAMKIT_REPLICATION) "
            f"to at most {brokers} (the broker said: {said})"
        )
    return ConfigError(
        setting,
        f"topic {topic.name} cannot get {asked} replicas: {cluster}; lower it, or leave it "
        f"unset for the broker's default.replication.factor (the broker said: {said})",
    )


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


# What a new topic's partition answers until its broker serves it. A lookup's
# error carries only its code, not librdkafka's retriable flag, so by code.
_NOT_SERVED_YET = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
    }
)


def watermarks(consumer: Consumer, tp: TopicPartition, timeout: float) -> tuple[int, int]:
    """``(low, high)`` of ``tp`` from the broker, retrying what a new topic answers at first.

    A topic created a moment ago has leaders in the controller's metadata
    before its broker serves them: for a few hundred milliseconds a lookup
    gets NOT_LEADER_OR_FOLLOWER or UNKNOWN_TOPIC_OR_PART.

    Raises:
        KafkaException: A non-retriable error, or a retriable one still there at ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                tp, timeout=max(deadline - time.monotonic(), 0.1), cached=False
            )
            return int(low), int(high)
        except KafkaException as exc:
            err = exc.args[0]
            again = isinstance(err, KafkaError) and (
                err.retriable() or err.code() in _NOT_SERVED_YET
            )
            if not again or time.monotonic() >= deadline:
                raise
        time.sleep(0.05)


class KafkaBackend:
    """The confluent-kafka backend (the default)."""

    def consumer(self, config: AppConfig, **callbacks: Any) -> Consumer:
        """See :func:`create_consumer`."""
        return create_consumer(config, **callbacks)

    def producer(self, config: AppConfig, **callbacks: Any) -> Producer:
        """See :func:`create_producer`."""
        return create_producer(config, **callbacks)

    def reader(self, config: AppConfig) -> Any:
        """A changelog reader with no group membership (table restores)."""
        from streamkit.backends.kafka_reader import KafkaChangelogReader

        return KafkaChangelogReader(config)
