"""The broker's ``server.properties`` and ``log4j2.properties``, as text.

Everything here is pure: the runner writes the rendered files into the data
directory on every start, so changing a port or an extra property between two
starts of the same data directory takes effect without reformatting.

The defaults make a single-node KRaft broker (broker and controller in one JVM)
that starts in a few seconds and behaves predictably under tests; each value
carries the reason it differs from Kafka's default.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Mapping
from pathlib import Path, PurePath

from streamkit.errors import ConfigError

PropertyValue = str | int | float | bool | None
"""An extra property value; ``None`` removes a default instead of setting it."""

LOOPBACK = "127.0.0.1"
NODE_ID = 1

# Derived from the constructor arguments; overriding them through extra
# properties would desynchronise what LocalKafka checks (ports, pidfile, data
# dir) from what the broker does, or bind the broker beyond loopback.
MANAGED_KEYS = frozenset(
    {
        "advertised.listeners",
        "controller.listener.names",
        "controller.quorum.voters",
        "inter.broker.listener.name",
        "listener.security.protocol.map",
        "listeners",
        "log.dirs",
        "metadata.log.dir",
        "node.id",
        "process.roles",
    }
)

TEST_FRIENDLY_DEFAULTS: Mapping[str, str] = {
    # A single broker cannot hold more than one replica of anything.
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "default.replication.factor": "1",
    # Internal topics default to 50 partitions each; creating and loading 50
    # coordinator partitions makes the first group join or transaction take
    # seconds. Four is plenty for one machine.
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.num.partitions": "4",
    "num.partitions": "1",
    # streamkit creates its topics explicitly: a typo in a topic name must fail
    # instead of silently creating a new, empty topic.
    "auto.create.topics.enable": "false",
    "delete.topic.enable": "true",
    # Classic protocol: the first rebalance of a new group waits 3 s by default
    # for more members; tests start their consumers together anyway.
    "group.initial.rebalance.delay.ms": "0",
    # Classic protocol: allow session.timeout.ms down to 1 s (default floor 6 s)
    # so failure tests can detect a dead consumer quickly.
    "group.min.session.timeout.ms": "1000",
    # KIP-848 consumer protocol: the broker owns the session timeout. 10 s
    # (default 45 s) lets a test see a killed member's partitions reassigned
    # without waiting most of a minute, yet survives a GC pause on a busy CI box.
    # The floors (1 s) let a test lower it per group with incrementalAlterConfigs.
    "group.consumer.session.timeout.ms": "10000",
    "group.consumer.min.session.timeout.ms": "1000",
    # Members pick up new assignments on their heartbeat: 1 s instead of 5 s
    # makes every KIP-848 rebalance in a test about five times faster. Kafka
    # requires min <= interval <= max (15 s) and interval < session timeout.
    "group.consumer.heartbeat.interval.ms": "1000",
    # The broker looks for transactions open past their timeout every 10 s by
    # default, so a killed exactly-once worker's transaction held read_committed
    # readers back for its timeout plus up to 10 s more; 1 s keeps that to the timeout.
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
    "group.consumer.min.heartbeat.interval.ms": "500",
    # Retention and compaction only touch closed segments; 16 MiB (default
    # 1 GiB) lets retention tests roll segments without writing a gigabyte.
    "log.segment.bytes": str(16 * 1024 * 1024),
    # The log cleaner allocates its dedupe buffer on the heap at startup:
    # 128 MiB by default, a quarter of our 512 MiB heap. 32 MiB is ample for
    # the compacted topics a test writes.
    "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
}

_KEY_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")


def new_cluster_id() -> str:
    """Return a fresh KRaft cluster id: 16 random bytes, URL-safe base64, unpadded.

    An id starting with ``-`` is drawn again: the storage tool's argument
    parser reads it as an option and fails with a usage message (1 start in
    64 failed that way before this; Kafka's own ids avoid it likewise).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def broker_properties(
    *,
    port: int,
    controller_port: int,
    log_dir: PurePath,
    extra: Mapping[str, PropertyValue] | None = None,
    security: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Build the effective broker configuration.

    Args:
        port: Client (PLAINTEXT) port on 127.0.0.1.
        controller_port: KRaft controller port on 127.0.0.1.
        log_dir: Where partitions and the metadata log live.
        extra: Overrides of :data:`TEST_FRIENDLY_DEFAULTS` or any other broker
            setting; ``None`` as a value drops a default. Booleans become
            ``true``/``false``.
        security: The secure layout's listeners, TLS, SASL and authorizer
            (:func:`streamkit.localkafka.security.listener_properties`),
            replacing the PLAINTEXT listeners; extras cannot override them.

    Returns:
        Property names to string values, in a stable order.

    Raises:
        ConfigError: An extra key is malformed or is one LocalKafka manages
            (listeners, node id, log dirs).

    """
    props: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        # Static voters: no --standalone bootstrap needed at format time.
        "controller.quorum.voters": f"{NODE_ID}@{LOOPBACK}:{controller_port}",
        "listeners": f"PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
    }
    props.update(security or {})
    props.update(TEST_FRIENDLY_DEFAULTS)
    for key, value in (extra or {}).items():
        if not _KEY_PATTERN.match(key):
            raise ConfigError(f"extra_properties[{key!r}]", "not a Kafka property name")
        if key in MANAGED_KEYS:
            raise ConfigError(
                f"extra_properties[{key!r}]",
                "set by LocalKafka from port, controller_port and data_dir",
            )
        if security and key in security:
            raise ConfigError(
                f"extra_properties[{key!r}]", "set by LocalKafka's secure layout (security=)"
            )
        if value is None:
            props.pop(key, None)
        elif isinstance(value, bool):
            props[key] = "true" if value else "false"
        else:
            props[key] = str(value)
    return props


def render_properties(props: Mapping[str, str], header: str = "") -> str:
    """Render a Java ``.properties`` file, escaping what Java would misread."""
    lines = [f"# {line}" for line in header.splitlines()]
    lines.extend(f"{key}={_escape(value)}" for key, value in props.items())
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    # Java's Properties.load treats backslash as an escape and a newline as the
    # end of the value; a leading space would be stripped.
    escaped = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    if escaped.startswith(" "):
        escaped = "\\" + escaped
    return escaped


def render_log4j2(log_file: Path) -> str:
    """Return a log4j2 configuration sending every broker log line to ``log_file``.

    One appending file, no console output: the broker runs detached, and a
    failure report only has to read one file.
    """
    props = {
        # Problems in this configuration itself are printed (to the same file,
        # via the JVM's redirected stdout) instead of disappearing.
        "status": "warn",
        # log4j's own JVM shutdown hook races Kafka's shutdown and prints a
        # warning on every stop; with immediate flushing (the File appender's
        # default) no line is lost without it.
        "shutdownHook": "disable",
        "appender.file.type": "File",
        "appender.file.name": "server",
        "appender.file.fileName": str(log_file),
        "appender.file.append": "true",
        "appender.file.layout.type": "PatternLayout",
        "appender.file.layout.pattern": "[%d] %p %m (%c)%n",
        "rootLogger.level": "INFO",
        "rootLogger.appenderRef.file.ref": "server",
        # One line per request at INFO would drown everything else.
        "logger.request.name": "kafka.request.logger",
        "logger.request.level": "WARN",
    }
    return render_properties(props)
