"""One immutable app configuration, validated once at start.

Precedence, highest first: arguments given in code, ``STREAMKIT_*``
environment variables, defaults. Every value is checked before anything
connects; a bad one raises :class:`~streamkit.errors.ConfigError` naming the
setting exactly as the user wrote it (``commit_every=`` in code, or
``STREAMKIT_COMMIT_EVERY`` in the environment), so the fix is obvious.

Any librdkafka property passes through: ``kafka={"security.protocol": "SSL"}``
in code, or ``STREAMKIT_KAFKA_SECURITY_PROTOCOL=SSL`` in the environment
(underscores become dots). ``STREAMKIT_CONSUMER_*`` and ``STREAMKIT_PRODUCER_*``
reach only that client. Values of secret-looking properties never appear in a
``repr`` or a log line.

Example::

    config = AppConfig.load("orders", {"brokers": "127.0.0.1:9092", "commit_every": 500})
    consumer_conf = config.librdkafka("consumer")

The values' parsers live in :mod:`streamkit.config_values`; the security
settings' parsers, checks and the record of loaded credentials in
:mod:`streamkit.config_security`. Both sit below this module, which
re-exports :func:`is_secret` and :func:`secret_values`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from streamkit.config_security import (
    _PEM,
    _SECURITY_PROPERTIES,
    _SECURITY_SETTINGS,
    _blame_tls_files,
    _check_security,
    _env_name,
    _from_file,
    _masked,
    _registry_url,
    _remember_secrets,
    _security_property,
    _user_info,
)
from streamkit.config_security import is_secret as is_secret
from streamkit.config_security import secret_values as secret_values
from streamkit.config_values import (
    _bool,
    _brokers,
    _choice,
    _host,
    _optional_port,
    _optional_str,
    _positive_float,
    _positive_int,
    _processes,
    _reason,
    _replication,
    _text,
)
from streamkit.errors import ConfigError

Role = Literal["consumer", "producer", "admin"]

# Properties the runtime owns: letting users override them would break the
# delivery guarantee, so a pass-through that sets them is refused.
_OWNED = {
    "enable.auto.commit": "commits are batched by the runtime (commit_every / commit_interval)",
    "enable.auto.offset.store": "offsets are stored only after a record is fully processed",
    "group.id": "use group_id= or STREAMKIT_GROUP_ID",
    "bootstrap.servers": "use brokers= or STREAMKIT_BROKERS",
    "enable.idempotence": "the producer is always idempotent: at-least-once without "
    "reordering, and exactly-once needs it",
    "acks": "emits always wait for acks=all",
    # A transactional producer without the runtime driving begin/commit would
    # refuse every produce() at the first record; say so at start instead.
    "transactional.id": "set processing_guarantee='exactly_once' and streamkit derives it "
    "(docs/exactly-once.md)",
    "transaction.timeout.ms": "use transaction_timeout_ms= or STREAMKIT_TRANSACTION_TIMEOUT_MS",
}

# The checkpoint under exactly-once is a transaction, which costs three round
# trips and holds every partition while it commits: Kafka Streams' 100 ms
# (commit.interval.ms under EOS) keeps that near a tenth of a second of
# output latency; 10,000 records bounds a transaction at high rates.
_CHECKPOINT_DEFAULTS = {
    "at_least_once": {"commit_every": 1000, "commit_interval": 1.0},
    "exactly_once": {"commit_every": 10_000, "commit_interval": 0.1},
}
# With tables, an at-least-once checkpoint also writes one changelog record
# per key changed since the last one: every 1,000 records, 10,000 keys
# hardly repeat and every input cost a changelog record (bench/README.md,
# "Tables"). 10,000 records (still at most commit_interval apart) lets keys
# coalesce; what a crash redoes stays bounded by the same 1 s.
_STATEFUL_COMMIT_EVERY = 10_000


def _guarantee(raw: Any) -> str:
    text = str(raw).strip().lower().replace("-", "_")
    if text not in _CHECKPOINT_DEFAULTS:
        raise ValueError(f"must be at_least_once or exactly_once; got {raw!r}")
    return text


@dataclass(frozen=True, slots=True)
class _Setting:
    parse: Callable[[Any], Any]
    default: Any


# The table every value goes through: one place to read what can be set.
_SETTINGS: dict[str, _Setting] = {
    "brokers": _Setting(_brokers, None),
    "group_id": _Setting(_optional_str, None),
    "client_id": _Setting(_optional_str, None),
    "group_instance_id": _Setting(_optional_str, None),
    "group_protocol": _Setting(_choice("classic", "consumer"), "classic"),
    "auto_offset_reset": _Setting(_choice("earliest", "latest"), "earliest"),
    "processing_guarantee": _Setting(_guarantee, "at_least_once"),
    # None: the processing guarantee's default (_CHECKPOINT_DEFAULTS).
    "commit_every": _Setting(_positive_int, None),
    "commit_interval": _Setting(_positive_float, None),
    "transaction_timeout_ms": _Setting(_positive_int, 10_000),
    "shutdown_timeout": _Setting(_positive_float, 30.0),
    "revoke_timeout": _Setting(_positive_float, 5.0),
    "session_timeout_ms": _Setting(_positive_int, 45_000),
    "max_poll_interval_ms": _Setting(_positive_int, 300_000),
    "fetch_batch": _Setting(_positive_int, 500),
    "max_buffered_records": _Setting(_positive_int, 10_000),
    "max_buffered_bytes": _Setting(_positive_int, 32 * 1024 * 1024),
    "create_topics": _Setting(_bool, True),
    # None: NewTopic(replication_factor=-1), which the broker resolves to its
    # default.replication.factor (Kafka >= 2.4, KIP-464).
    "replication": _Setting(_replication, None),
    "schemas_dir": _Setting(_text, "schemas"),
    # Tables' local stores: <state_dir>/<group>/<table>/<partition>. A cache
    # of the changelog topics: losing it costs a full restore, nothing more.
    "state_dir": _Setting(_text, "state"),
    "state_store": _Setting(_choice("rocksdb", "sqlite", "lmdb", "memory"), "rocksdb"),
    "schema_registry_url": _Setting(_registry_url, None),
    "schema_registry_user_info": _Setting(_user_info, None),
    # security_protocol, sasl_* and ssl_* (streamkit.config_security): all
    # unset by default, so librdkafka's PLAINTEXT unless a pass-through sets it.
    **{name: _Setting(parse, None) for name, parse in _SECURITY_SETTINGS},
    "log_format": _Setting(_choice("auto", "console", "json"), "auto"),
    "log_level": _Setting(_choice("debug", "info", "warning", "error"), "info"),
    "http_port": _Setting(_optional_port, None),
    "http_host": _Setting(_host, "127.0.0.1"),
    "liveness_timeout": _Setting(_positive_float, 60.0),
    # streamkit run's worker processes (streamkit.processes); 1 runs the
    # worker in the command's own process, as before there was a choice.
    "processes": _Setting(_processes, 1),
}


@dataclass(frozen=True, slots=True)
class AppConfig:
    """Validated settings for one app; build it with :meth:`load`.

    Attributes:
        app: The app name; the default consumer group id.
        brokers: Bootstrap servers, ``host:port[,host:port]``.
        group_id: Consumer group id (defaults to the app name).
        client_id: Kafka client id (defaults to ``<app>-<host>-<pid>``).
        group_instance_id: Static membership id, for example a pod name.
        group_protocol: ``classic`` (cooperative-sticky) or ``consumer`` (KIP-848).
        auto_offset_reset: Where a group with no committed offset starts.
        processing_guarantee: ``at_least_once`` (the default) or
            ``exactly_once``: one Kafka transaction per checkpoint covers the
            outputs, dead letters, retry-tier moves and input offsets, and
            consumers read ``read_committed`` (docs/exactly-once.md).
        commit_every: Commit (checkpoint) after this many finished records:
            1,000 at least once; exactly once 10,000, or a quarter of
            ``max_buffered_records`` if less (held records count against it).
        commit_interval: ...or after this many seconds, whichever comes
            first: 1 s at least once, 0.1 s exactly once.
        transaction_timeout_ms: Exactly once: how long the broker lets a
            transaction stay open before aborting it. It is also how long a
            crashed worker's open transaction holds back ``read_committed``
            readers of its outputs (unless static membership lets the
            restarted worker abort it at once), hence 10 s, like Kafka Streams.
        shutdown_timeout: Seconds SIGTERM may take to drain, flush and commit.
        revoke_timeout: Seconds a revoke may spend draining the partitions
            that leave: the whole group's rebalance waits for it. Work past
            it is abandoned uncommitted and redelivered to the next owner.
        session_timeout_ms: Group session timeout (a killed worker's partitions
            move after this long); heartbeats go out three times per session
            (at most every 3 s) unless ``heartbeat.interval.ms`` is passed through.
        max_poll_interval_ms: librdkafka's poll deadline; the revoke budget stays below it.
        fetch_batch: Most records taken from librdkafka at once; the fetcher
            waits for the first record only, never for a batch to fill.
        max_buffered_records: Records fetched but not yet processed, over all partitions.
        max_buffered_bytes: The same bound in value bytes.
        create_topics: Create missing declared topics when a worker starts.
        replication: Replication factor of every topic streamkit creates
            that declares none itself, the dead-letter, retry-tier and timers
            topics included; ``None`` leaves it to the broker's
            ``default.replication.factor``. ``topics describe`` flags topics
            below it.
        schemas_dir: Where ``*.avsc`` files are looked up.
        state_dir: Where tables keep their local stores, one directory per
            group, table and partition (with static membership and the same
            directory, a restart restores only the changelog's tail).
        state_store: The local store's backend: ``rocksdb`` (the default,
            chosen by measurement: bench/README.md), ``sqlite`` (the standard
            library's), ``lmdb`` (``streamkit[lmdb]``), or ``memory`` (nothing
            on disk: every restart restores the whole changelog).
        schema_registry_url: Confluent Schema Registry (``mock://name`` in tests),
            without credentials: a ``user:password@`` part is refused.
        schema_registry_user_info: The registry's basic-auth credentials,
            ``user:password`` (confluent's ``basic.auth.user.info``; for
            Confluent Cloud, the API key and secret). Never shown in a ``repr``.
        security_protocol: librdkafka's ``security.protocol``: ``PLAINTEXT``,
            ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``; ``None`` leaves it to
            a pass-through or librdkafka's ``PLAINTEXT``.
        sasl_mechanism: ``SCRAM-SHA-512``, ``SCRAM-SHA-256`` or ``PLAIN``;
            required with a ``SASL_*`` protocol (unless a pass-through
            ``sasl.mechanism`` names another, such as ``OAUTHBEARER``).
        sasl_username: The SASL username.
        sasl_password: The SASL password. Never shown.
        ssl_ca: The CA certificate(s) the brokers' certificates are checked
            against: PEM text (``ssl.ca.pem``) or a file's path
            (``ssl.ca.location``); ``None`` for the system's store.
        ssl_certificate: The client certificate for mutual TLS, PEM text or a path.
        ssl_key: The client's private key, PEM text or a path. Never shown.
        ssl_key_password: The private key's passphrase. Never shown.
        log_format: ``console``, ``json``, or ``auto`` (console on a terminal).
        log_level: Minimum log level.
        http_port: Port of the worker's HTTP endpoint (``/livez``, ``/readyz``,
            ``/metrics``); ``None`` leaves it off.
        http_host: Address the endpoint listens on: loopback by default, ``0.0.0.0``
            in a pod so the kubelet and Prometheus reach it.
        liveness_timeout: Seconds the poll thread, the event loop or an agent
            (on one record) may go without progress before ``/livez`` fails.
        processes: Worker processes ``streamkit run`` starts as members of
            the group, under a supervisor (:mod:`streamkit.processes`):
            a positive integer, or ``auto`` for the cores this process may
            use (CPU affinity and the cgroup quota).
        kafka: librdkafka properties for every client.
        consumer: librdkafka properties for the consumer only.
        producer: librdkafka properties for the producer only.
    """

    app: str
    brokers: str
    group_id: str
    client_id: str
    group_instance_id: str | None
    group_protocol: str
    auto_offset_reset: str
    processing_guarantee: str
    commit_every: int
    commit_interval: float
    transaction_timeout_ms: int
    shutdown_timeout: float
    revoke_timeout: float
    session_timeout_ms: int
    max_poll_interval_ms: int
    fetch_batch: int
    max_buffered_records: int
    max_buffered_bytes: int
    create_topics: bool
    replication: int | None
    schemas_dir: str
    state_dir: str
    state_store: str
    schema_registry_url: str | None
    schema_registry_user_info: str | None
    security_protocol: str | None
    sasl_mechanism: str | None
    sasl_username: str | None
    sasl_password: str | None
    ssl_ca: str | None
    ssl_certificate: str | None
    ssl_key: str | None
    ssl_key_password: str | None
    log_format: str
    log_level: str
    http_port: int | None
    http_host: str
    liveness_timeout: float
    processes: int | str
    kafka: Mapping[str, Any] = field(default_factory=dict, repr=False)
    consumer: Mapping[str, Any] = field(default_factory=dict, repr=False)
    producer: Mapping[str, Any] = field(default_factory=dict, repr=False)
    # librdkafka key -> where the user set it, so client errors name the setting.
    origins: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(
        cls,
        app: str,
        overrides: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        stateful: bool = False,
    ) -> AppConfig:
        """Merge code arguments, environment and defaults, and validate them all.

        Args:
            app: The app name.
            overrides: Settings given in code; ``None`` values count as unset.
                ``kafka``, ``consumer`` and ``producer`` take property dicts.
            env: The environment to read (default ``os.environ``).
            stateful: The app declares tables: at least once, ``commit_every``
                defaults to 10,000 instead of 1,000, so changelog writes coalesce.

        Raises:
            ConfigError: The first invalid or missing setting, by the name the user wrote.
        """
        env = os.environ if env is None else env
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        unknown = set(given) - set(_SETTINGS) - {"kafka", "consumer", "producer"}
        if unknown:
            name = sorted(unknown)[0]
            shown = "***" if is_secret(name) else repr(given[name])
            close = difflib.get_close_matches(name, _SETTINGS, n=1)
            hint = (
                f"did you mean {close[0]}?" if close else f"known: {', '.join(sorted(_SETTINGS))}"
            )
            raise ConfigError(f"{name}={shown}", f"unknown setting; {hint}")
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}  # setting -> where it was given, for later checks
        for name, setting in _SETTINGS.items():
            if name in given:
                source, raw = f"{name}=", given[name]
            elif (from_file := _from_file(name, env)) is not None:
                source, raw = from_file
            elif _env_name(name) in env:
                source, raw = _env_name(name), env[_env_name(name)]
            else:
                values[name] = setting.default
                continue
            sources[name] = source
            try:
                values[name] = setting.parse(raw)
            except (TypeError, ValueError, OverflowError) as exc:
                problem = _reason(exc, raw)
                if is_secret(name):
                    problem = _masked(problem, raw)
                raise ConfigError(source, problem) from None
        if not values["brokers"]:
            raise ConfigError(
                "STREAMKIT_BROKERS", "no brokers configured; set it or pass brokers='host:port'"
            )
        if not app or not re.fullmatch(r"[A-Za-z0-9._-]+", app):
            raise ConfigError("App(name)", f"must be letters, digits, '.', '_' or '-'; got {app!r}")
        every_unset = values["commit_every"] is None
        if stateful and every_unset and values["processing_guarantee"] == "at_least_once":
            values["commit_every"] = _STATEFUL_COMMIT_EVERY
        for name, default in _CHECKPOINT_DEFAULTS[values["processing_guarantee"]].items():
            if values[name] is None:
                values[name] = default
        if values["processing_guarantee"] == "exactly_once" and every_unset:
            # Held records count against max_buffered_records until their
            # checkpoint, and one partition may hold a quarter of it: a
            # checkpoint by then keeps the fetcher from stalling on them
            # (seen: 0.3x throughput at a 0.5 s interval without it).
            values["commit_every"] = min(
                values["commit_every"], max(values["max_buffered_records"] // 4, 1)
            )
        values["group_id"] = values["group_id"] or app
        values["client_id"] = values["client_id"] or f"{app}-{socket.gethostname()}-{os.getpid()}"
        if values["session_timeout_ms"] >= values["max_poll_interval_ms"]:
            raise ConfigError(
                "session_timeout_ms",
                "must be below max_poll_interval_ms "
                f"({values['session_timeout_ms']} >= {values['max_poll_interval_ms']})",
            )
        if values["revoke_timeout"] * 1000 >= values["max_poll_interval_ms"]:
            raise ConfigError(
                "revoke_timeout",
                "must be below max_poll_interval_ms, or librdkafka leaves the group while "
                f"a revoke drains ({values['revoke_timeout']} s >= "
                f"{values['max_poll_interval_ms']} ms)",
            )
        if values["processing_guarantee"] == "exactly_once":
            _check_transactions(values, given, env)
        origins: dict[str, str] = {}
        sections = {
            section: _properties(section, given.get(section), env, origins)
            for section in ("kafka", "consumer", "producer")
        }
        _check_security(values, sources, sections, origins)
        _blame_tls_files(values, sources, origins)
        config = cls(
            app=app,
            **values,
            kafka=sections["kafka"],
            consumer=sections["consumer"],
            producer=sections["producer"],
            origins=origins,
        )
        _remember_secrets((f.name, getattr(config, f.name)) for f in dataclasses.fields(config))
        if config.exactly_once:
            isolation = {**config.kafka, **config.consumer}.get("isolation.level")
            if isolation not in (None, "read_committed"):
                raise ConfigError(
                    config.origins.get("isolation.level", "isolation.level"),
                    "exactly_once reads read_committed: an uncommitted read would see "
                    "aborted outputs of upstream transactions",
                )
        return config

    @property
    def exactly_once(self) -> bool:
        """Whether checkpoints are Kafka transactions (``processing_guarantee``)."""
        return self.processing_guarantee == "exactly_once"

    def librdkafka(self, role: Role) -> dict[str, Any]:
        """The complete librdkafka configuration for one client; the only place it is built."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.brokers,
            "client.id": self.client_id,
            # One log line per broker state change instead of librdkafka's
            # default stderr chatter; the runtime logs outages itself.
            "log.connection.close": False,
        }
        for name in _SECURITY_PROPERTIES:
            value = getattr(self, name)
            if value is not None:
                key, value = _security_property(name, value)
                conf[key] = value
        # Pass-throughs never contradict the settings above (refused at load).
        conf.update(self.kafka)
        if role == "consumer":
            conf.update(
                {
                    "group.id": self.group_id,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": self.auto_offset_reset,
                    "max.poll.interval.ms": self.max_poll_interval_ms,
                    "group.protocol": self.group_protocol,
                    # Errors such as a missing topic arrive as events we log,
                    # not as records that advance the position.
                    "enable.partition.eof": False,
                    # librdkafka's own prefetch queue, on top of ours: 16 MiB
                    # instead of 64 keeps a worker's memory flat behind a
                    # backlog and still covers several fetches.
                    "queued.max.messages.kbytes": 16384,
                }
            )
            if self.group_protocol == "classic":
                # KIP-848 moves assignment and session settings to the broker,
                # and librdkafka rejects them there.
                conf["partition.assignment.strategy"] = "cooperative-sticky"
                conf["session.timeout.ms"] = self.session_timeout_ms
                # A third of the session, as Kafka advises: librdkafka's 3 s
                # default leaves a 6 s session a single heartbeat, and one slow
                # answer from a loaded broker then expires every member at
                # once (seen: SESSTMOUT "in join-state steady" on all three
                # members of a group within 100 ms, none expired broker-side).
                conf["heartbeat.interval.ms"] = min(3000, max(self.session_timeout_ms // 3, 100))
            if self.group_instance_id:
                conf["group.instance.id"] = self.group_instance_id
            if self.exactly_once:
                conf["isolation.level"] = "read_committed"
            if self.http_port is not None:
                # /metrics reads consumer lag from librdkafka's statistics: one
                # JSON document every 5 s keeps it fresher than a 15 s scrape.
                conf.setdefault("statistics.interval.ms", 5000)
            conf.update(self.consumer)
        elif role == "producer":
            conf.update(
                {
                    "enable.idempotence": True,
                    "acks": "all",
                    # 5 ms trades a little latency for batches that keep
                    # throughput near the raw client's.
                    "linger.ms": 5,
                }
            )
            if self.exactly_once:
                # The transactional.id itself is set by the runtime, which
                # knows the process (streamkit.runtime.transaction).
                conf["transaction.timeout.ms"] = self.transaction_timeout_ms
            conf.update(self.producer)
        return conf

    def redacted(self) -> dict[str, Any]:
        """Every setting, secret values masked (settings and properties alike), for logs.

        An unset secret stays ``None``, so a log still tells whether it was given.
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "origins":
                continue
            value = getattr(self, f.name)
            if isinstance(value, Mapping):
                value = {k: ("***" if is_secret(k) else v) for k, v in value.items()}
            elif value is not None and is_secret(f.name):
                value = "***"
            elif isinstance(value, str) and _PEM in value:
                # A certificate is public, but kilobytes of base64 help no log reader.
                value = f"<PEM, {len(value)} characters>"
            out[f.name] = value
        return out

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.redacted().items())
        return f"AppConfig({inner})"


def _check_transactions(
    values: dict[str, Any], given: Mapping[str, Any], env: Mapping[str, str]
) -> None:
    """Exactly-once settings that cannot work together, refused before anything connects."""

    def source(name: str) -> str:
        return f"{name}=" if name in given else _env_name(name)

    timeout_ms = values["transaction_timeout_ms"]
    if values["commit_interval"] * 1000 * 2 > timeout_ms:
        # A checkpoint waits for the records in flight, then commits: half
        # the timeout leaves the commit room before the broker aborts it.
        raise ConfigError(
            source("commit_interval"),
            f"must be under half of transaction_timeout_ms ({values['commit_interval']} s, "
            f"{timeout_ms} ms), or the broker aborts transactions before they commit",
        )
    if values["revoke_timeout"] * 1000 >= timeout_ms:
        raise ConfigError(
            source("revoke_timeout"),
            f"must be below transaction_timeout_ms ({values['revoke_timeout']} s >= "
            f"{timeout_ms} ms): a revoke commits the open transaction",
        )


def _properties(
    section: str,
    given: Any,
    env: Mapping[str, str],
    origins: dict[str, str],
) -> dict[str, Any]:
    prefix = f"STREAMKIT_{section.upper()}_"
    props: dict[str, Any] = {}
    for name, value in env.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            key = name[len(prefix) :].lower().replace("_", ".")
            props[key] = value
            origins[key] = name
    if given is not None:
        if not isinstance(given, Mapping):
            raise ConfigError(f"{section}=", "must be a dict of librdkafka properties")
        for key, value in given.items():
            props[str(key)] = str(value) if not isinstance(value, (bool, int, float)) else value
            origins[str(key)] = f"{section}={{{key!r}: ...}}"
    for key in props:
        if key in _OWNED:
            raise ConfigError(origins[key], f"{key} is managed by streamkit: {_OWNED[key]}")
    return props
