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
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from streamkit.errors import ConfigError

Role = Literal["consumer", "producer", "admin"]

# Names (librdkafka properties, streamkit settings) whose values are
# credentials. Word-ish segments where a bare substring would mask plain
# settings: `pass` and `key` only as whole segments (sasl.password, db_pass,
# api_key, private.key; not key_serde, ssl.keystore.location, passthrough),
# `auth` only at a segment start (basic.auth.user.info; not oauthbearer.method).
_SECRET = re.compile(
    r"password|secret|jaas|token|\.pem$|ssl\.key\.|oauthbearer\.config"
    r"|credential|user[._-]?info|api[._-]?key"
    r"|(^|[._-])pass(wd|phrase)?($|[._-])"
    r"|(^|[._-])key$|(private|access|signing|encryption)[._-]?key"
    r"|(^|[._-])auth",
    re.I,
)

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


def is_secret(key: str) -> bool:
    """Whether a librdkafka property or a setting holds a credential that must not be shown."""
    return bool(_SECRET.search(key))


def _positive_int(raw: Any) -> int:
    # int(True) is 1 and int(2.7) is 2: a wrong type read as a number hides
    # the mistake, so only integers and their text are taken.
    whole = isinstance(raw, int | str) or (isinstance(raw, float) and raw.is_integer())
    if isinstance(raw, bool) or not whole:
        raise ValueError(f"must be a positive integer; got {raw!r}")
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _positive_float(raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError(f"must be a positive number; got {raw!r}")
    value = float(raw)
    # inf would pass `> 0`, then overflow wherever seconds become ms.
    if not 0 < value < math.inf:
        raise ValueError("must be a positive number")
    return value


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        text = str(raw).strip().lower()
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}; got {raw!r}")
        return text

    return parse


def _guarantee(raw: Any) -> str:
    text = str(raw).strip().lower().replace("-", "_")
    if text not in _CHECKPOINT_DEFAULTS:
        raise ValueError(f"must be at_least_once or exactly_once; got {raw!r}")
    return text


def _brokers(raw: Any) -> str:
    text = str(raw).strip()
    for hostport in text.split(","):
        host, sep, port = hostport.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port[,host:port...]; got {raw!r}")
    return text


def _text(raw: Any) -> str:
    # str() of a list or bytes is a valid-looking string nobody meant.
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValueError(f"expected a string; got {type(raw).__name__}")
    return str(raw)


def _optional_str(raw: Any) -> str | None:
    text = _text(raw).strip()
    return text or None


def _optional_port(raw: Any) -> int | None:
    if isinstance(raw, bool):
        raise ValueError(f"expected a port number (1-65535); got {raw!r}")
    text = str(raw).strip()
    if not text:
        return None  # STREAMKIT_HTTP_PORT= (empty) leaves the endpoint off
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"expected a port number (1-65535); got {raw!r}")
    return int(text)


def _replication(raw: Any) -> int | None:
    if isinstance(raw, bool):
        raise ValueError(f"must be a positive integer; got {raw!r}")
    text = str(raw).strip()
    if not text:
        return None  # STREAMKIT_REPLICATION= (empty): the broker's default, as if unset
    if not text.isdigit() or int(text) < 1:
        raise ValueError(
            f"must be a positive integer (leave it unset for the broker's "
            f"default.replication.factor); got {raw!r}"
        )
    return int(text)


def _registry_url(raw: Any) -> str | None:
    text = _optional_str(raw)
    # confluent-kafka also reads the URL's userinfo as credentials, and splits
    # the URL on commas; a password there would be shown wherever the URL is
    # (repr, the pod spec). The message must not repeat it.
    if text and any("@" in urlsplit(url.strip()).netloc for url in text.split(",")):
        raise ValueError(
            "carries credentials (user:password@): put the credentials in "
            "schema_registry_user_info (a Secret in the chart) and leave them out of the URL"
        )
    return text


def _user_info(raw: Any) -> str | None:
    text = _optional_str(raw)
    if text is not None and ":" not in text:
        # No value in the message: it is a credential.
        raise ValueError("expected user:password (basic.auth.user.info); the value has no ':'")
    return text


def _host(raw: Any) -> str:
    text = str(raw).strip()
    if not text:
        raise ValueError("expected a host name or IP address to listen on")
    return text


# -- security --------------------------------------------------------------

_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
_PEM = "-----BEGIN"


def _upper_choice(*options: str) -> Callable[[Any], str | None]:
    def parse(raw: Any) -> str | None:
        text = _text(raw).strip().upper().replace("-", "_")
        if not text:
            return None
        for option in options:  # SCRAM_SHA_512 and sasl-ssl are meant as written
            if option.replace("-", "_") == text:
                return option
        raise ValueError(f"must be one of {', '.join(options)}; got {raw!r}")

    return parse


def _secret(raw: Any) -> str | None:
    """A credential, kept exactly (spaces are part of a password); empty is unset.

    No message here quotes the value.
    """
    if not isinstance(raw, str):
        raise ValueError(f"expected a string; got {type(raw).__name__}")
    return raw or None


def _pem_or_path(what: str, secret: bool = False) -> Callable[[Any], str | None]:
    """A PEM string (it holds ``-----BEGIN``) or the path of a file holding one."""

    def parse(raw: Any) -> str | None:
        text = (_secret(raw) if secret else _optional_str(raw)) or ""
        if _PEM in text:
            # A PEM pasted into a one-line variable often arrives with its
            # newlines escaped; OpenSSL reads only real ones.
            return (text.replace("\\n", "\n") if "\n" not in text else text).strip()
        text = text.strip()
        if not text:
            return None
        if what == "CA" and text == "probe":  # librdkafka's "look in the usual places"
            return text
        if not os.path.exists(text):
            shown = "" if secret else f" {text!r}"
            raise ValueError(
                f"expected a {what} as PEM text (with -----BEGIN) or the path of a PEM file; "
                f"no file{shown} exists"
            )
        return text

    return parse


# Settings that may also come from a file (STREAMKIT_<NAME>_FILE), as
# Kubernetes mounts Secrets: the credentials, and the username next to them.
_FROM_FILE = (
    "sasl_username",
    "sasl_password",
    "ssl_key",
    "ssl_key_password",
    "schema_registry_user_info",
)

# Each first-class security setting and the librdkafka properties it becomes
# (PEM text or a file's location for ssl_*): a pass-through of any of them
# is the same setting given twice.
_SECURITY_PROPERTIES: dict[str, tuple[str, ...]] = {
    "security_protocol": ("security.protocol",),
    "sasl_mechanism": ("sasl.mechanism", "sasl.mechanisms"),
    "sasl_username": ("sasl.username",),
    "sasl_password": ("sasl.password",),
    "ssl_ca": ("ssl.ca.location", "ssl.ca.pem"),
    "ssl_certificate": ("ssl.certificate.location", "ssl.certificate.pem"),
    "ssl_key": ("ssl.key.location", "ssl.key.pem"),
    "ssl_key_password": ("ssl.key.password",),
}
_SSL_SETTINGS = ("ssl_ca", "ssl_certificate", "ssl_key", "ssl_key_password")


def _security_property(name: str, value: str) -> tuple[str, str]:
    """The librdkafka property and value of one first-class security setting."""
    keys = _SECURITY_PROPERTIES[name]
    if len(keys) == 2 and name.startswith("ssl_"):
        return (keys[1] if _PEM in value else keys[0]), value
    return keys[0], value


def _read_secret_file(variable: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(variable, f"cannot read {path!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(variable, f"{path!r} is not UTF-8 text") from None
    # `echo pw > file` and most editors end the file with a newline that is
    # no part of the secret.
    text = text.rstrip("\r\n")
    if not text:
        raise ConfigError(variable, f"{path!r} is empty")
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
    # None: unset; librdkafka's PLAINTEXT unless a pass-through sets it.
    "security_protocol": _Setting(_upper_choice(*_PROTOCOLS), None),
    "sasl_mechanism": _Setting(_upper_choice(*_MECHANISMS), None),
    "sasl_username": _Setting(_optional_str, None),
    "sasl_password": _Setting(_secret, None),
    "ssl_ca": _Setting(_pem_or_path("CA"), None),
    "ssl_certificate": _Setting(_pem_or_path("certificate"), None),
    "ssl_key": _Setting(_pem_or_path("private key", secret=True), None),
    "ssl_key_password": _Setting(_secret, None),
    "log_format": _Setting(_choice("auto", "console", "json"), "auto"),
    "log_level": _Setting(_choice("debug", "info", "warning", "error"), "info"),
    "http_port": _Setting(_optional_port, None),
    "http_host": _Setting(_host, "127.0.0.1"),
    "liveness_timeout": _Setting(_positive_float, 60.0),
}


def _env_name(setting: str) -> str:
    return "STREAMKIT_" + setting.upper()


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
            file_var = _env_name(name) + "_FILE" if name in _FROM_FILE else None
            if name in given:
                source, raw = f"{name}=", given[name]
            elif file_var is not None and file_var in env:
                if _env_name(name) in env:
                    raise ConfigError(
                        file_var, f"{_env_name(name)} is set too; keep one of the two"
                    )
                source, raw = file_var, _read_secret_file(file_var, env[file_var])
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
        for name in _SSL_SETTINGS:
            if values[name] is not None:
                # So a file librdkafka cannot load is blamed on its setting
                # (the protocol stays in the base the culprit search tries them on).
                key, _ = _security_property(name, values[name])
                origins.setdefault(key, sources[name])
        config = cls(
            app=app,
            **values,
            kafka=sections["kafka"],
            consumer=sections["consumer"],
            producer=sections["producer"],
            origins=origins,
        )
        _remember_secrets(config)
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


def _check_security(
    values: dict[str, Any],
    sources: Mapping[str, str],
    sections: Mapping[str, Mapping[str, Any]],
    origins: Mapping[str, str],
) -> None:
    """Security settings that contradict each other or a pass-through, refused at start.

    Each error names one setting and quotes no value: any of them may be a
    credential.
    """
    for name, keys in _SECURITY_PROPERTIES.items():
        value = values[name]
        if value is None:
            continue
        mine = dict([_security_property(name, value)])
        for props in sections.values():
            for key in keys:
                if key in props and str(props[key]) != mine.get(key):
                    raise ConfigError(
                        origins[key],
                        f"{key} is also set by {sources[name]}, to another value; set it once "
                        f"(prefer {name})",
                    )
    passed = {k: str(v) for props in sections.values() for k, v in props.items()}
    protocol = values["security_protocol"] or passed.get("security.protocol", "").upper()
    shown = protocol or "unset (PLAINTEXT)"
    for name in ("sasl_mechanism", "sasl_username", "sasl_password"):
        if values[name] is not None and not protocol.startswith("SASL_"):
            raise ConfigError(
                sources[name],
                f"needs security_protocol SASL_SSL or SASL_PLAINTEXT; it is {shown}",
            )
    for name in _SSL_SETTINGS:
        if values[name] is not None and protocol not in ("SSL", "SASL_SSL"):
            raise ConfigError(
                sources[name], f"needs security_protocol SSL or SASL_SSL; it is {shown}"
            )
    if values["security_protocol"] in ("SASL_SSL", "SASL_PLAINTEXT"):
        mechanism = (
            values["sasl_mechanism"]
            or (passed.get("sasl.mechanism") or passed.get("sasl.mechanisms") or "").upper()
        )
        if not mechanism:
            raise ConfigError(
                "sasl_mechanism (STREAMKIT_SASL_MECHANISM)",
                f"security_protocol {values['security_protocol']} needs one: "
                f"{', '.join(_MECHANISMS)}",
            )
        if mechanism in _MECHANISMS:
            for name in ("sasl_username", "sasl_password"):
                if values[name] is None and _SECURITY_PROPERTIES[name][0] not in passed:
                    raise ConfigError(
                        f"{name} ({_env_name(name)} or {_env_name(name)}_FILE)",
                        f"security_protocol {values['security_protocol']} with {mechanism} "
                        "needs a username and a password",
                    )
    has_key = values["ssl_key"] is not None or any(
        k in passed for k in _SECURITY_PROPERTIES["ssl_key"]
    )
    has_certificate = values["ssl_certificate"] is not None or any(
        k in passed for k in _SECURITY_PROPERTIES["ssl_certificate"]
    )
    if values["ssl_certificate"] is not None and not has_key:
        raise ConfigError(
            "ssl_key (STREAMKIT_SSL_KEY)",
            f"{sources['ssl_certificate']} is set: a client certificate needs its private key",
        )
    if values["ssl_key"] is not None and not has_certificate:
        raise ConfigError(
            "ssl_certificate (STREAMKIT_SSL_CERTIFICATE)",
            f"{sources['ssl_key']} is set: a private key needs its client certificate",
        )
    if values["ssl_key_password"] is not None and not has_key:
        raise ConfigError(
            sources["ssl_key_password"], "is set but no ssl_key is: a passphrase needs its key"
        )


# Every credential value a config in this process was loaded with, so log
# output can be scrubbed of them (streamkit.logs) even where a library
# prints one under a name nobody would guess. Shorter values would mask
# ordinary words in every log line.
_MIN_SCRUBBED = 4
_secret_values: set[str] = set()


def _remember_secrets(config: AppConfig) -> None:
    found: list[str] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, Mapping):
            found += [str(v) for k, v in value.items() if is_secret(k)]
        elif isinstance(value, str) and is_secret(f.name):
            found.append(value)
            if f.name == "schema_registry_user_info":
                found.append(value.partition(":")[2])  # the password alone
    _secret_values.update(v for v in found if len(v) >= _MIN_SCRUBBED)


def secret_values() -> frozenset[str]:
    """The credentials of every config loaded in this process, for scrubbing output."""
    return frozenset(_secret_values)


def _masked(problem: str, raw: Any) -> str:
    """``problem`` without the value a secret setting was given (or its repr)."""
    for shown in (repr(raw), str(raw)):
        if len(shown) >= 1 and shown in problem:
            problem = problem.replace(shown, "***")
    return problem


def _reason(exc: Exception, raw: Any) -> str:
    text = str(exc)
    if "invalid literal" in text or "could not convert" in text:
        return f"expected a number; got {raw!r}"
    return text
