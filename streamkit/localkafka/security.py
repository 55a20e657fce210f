"""The secure local broker: a SASL_SSL listener, SCRAM and PLAIN users, ACLs.

``LocalKafka(port, security=Security(users=("alice", "bob")))`` starts a
broker whose only client listener is SASL_SSL on 127.0.0.1:

* TLS with a CA and a broker certificate (``localhost``, ``127.0.0.1``) made
  at the first start (:mod:`streamkit.localkafka.tls`);
* every user, and the ``admin`` super user, with a SCRAM-SHA-512 credential
  created when the data directory is formatted (``--add-scram``), and a PLAIN
  one in the listener's JAAS configuration;
* the standard authorizer (``StandardAuthorizer``): nothing is allowed that
  no ACL allows, except to ``admin``, which the broker itself also uses to
  talk to its listener and its controller (SASL_PLAINTEXT with PLAIN on
  loopback, so no unauthenticated port is left open);
* ACLs created once the broker answers: :class:`Security`'s ``acls``, or
  full access to topics, groups and transactional ids for every user.

Passwords are random, drawn on the first start and kept with the data
directory in ``secure/credentials.json`` (mode 0600), since the SCRAM
credentials live in the broker's metadata log: a restart reuses them.
Nothing here logs or prints a password; :class:`SecureCluster`'s ``repr``
masks them.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from streamkit.errors import LocalKafkaError
from streamkit.localkafka.config import LOOPBACK
from streamkit.localkafka.tls import TlsFiles

ADMIN_USER = "admin"
"""The super user: the broker's own principal, and the one LocalKafka's admin calls use."""

Mechanism = Literal["SCRAM-SHA-512", "PLAIN"]
SCRAM: Mechanism = "SCRAM-SHA-512"
PLAIN: Mechanism = "PLAIN"
ResourceKind = Literal["topic", "group", "cluster", "transactional_id"]

CREDENTIALS_FILE = "credentials.json"

# Keys the secure layout sets; an extra property overriding one would leave
# the broker's listeners, certificates or authorizer out of step with what
# SecureCluster tells clients.
SECURE_MANAGED_KEYS = frozenset(
    {
        "authorizer.class.name",
        "listener.name.controller.plain.sasl.jaas.config",
        "listener.name.controller.sasl.enabled.mechanisms",
        "listener.name.sasl_ssl.plain.sasl.jaas.config",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config",
        "sasl.enabled.mechanisms",
        "sasl.mechanism.controller.protocol",
        "sasl.mechanism.inter.broker.protocol",
        "ssl.keystore.location",
        "ssl.keystore.type",
        "ssl.truststore.location",
        "ssl.truststore.type",
        "super.users",
    }
)

_USER_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


@dataclass(frozen=True)
class Acl:
    """One ACL for a user, as the admin client's ``create_acls`` takes it.

    Args:
        user: The SASL user name (principal ``User:<user>``).
        resource: What it is about; ``cluster`` ignores ``name``.
        name: The topic, group or transactional id; ``*`` for all.
        operations: Kafka's operation names, any case: ``read``, ``write``,
            ``describe``, ``create``, ``idempotent_write``, ``all``...
        allow: ``False`` makes it a DENY, which wins over every ALLOW.
        prefixed: ``name`` is a prefix rather than a literal name.

    """

    user: str
    resource: ResourceKind
    name: str = "*"
    operations: tuple[str, ...] = ("all",)
    allow: bool = True
    prefixed: bool = False

    def bindings(self) -> list[Any]:
        """The ``confluent_kafka.admin.AclBinding`` objects, one per operation."""
        from confluent_kafka.admin import (
            AclBinding,
            AclOperation,
            AclPermissionType,
            ResourcePatternType,
            ResourceType,
        )

        kind = {
            "topic": ResourceType.TOPIC,
            "group": ResourceType.GROUP,
            "cluster": ResourceType.BROKER,  # confluent-kafka's name for CLUSTER
            # Missing from the type stubs, not from confluent-kafka.
            "transactional_id": ResourceType["TRANSACTIONAL_ID"],
        }[self.resource]
        name = "kafka-cluster" if self.resource == "cluster" else self.name
        pattern = ResourcePatternType.PREFIXED if self.prefixed else ResourcePatternType.LITERAL
        permission = AclPermissionType.ALLOW if self.allow else AclPermissionType.DENY
        out = []
        for op in self.operations:
            try:
                operation = AclOperation[op.upper()]
            except KeyError:
                raise LocalKafkaError(f"Acl({self.user!r}): unknown operation {op!r}") from None
            out.append(
                AclBinding(kind, name, pattern, f"User:{self.user}", "*", operation, permission)
            )
        return out


def full_access(user: str) -> tuple[Acl, ...]:
    """What a streamkit app needs, for ``user``.

    Every topic, group and transactional id; creating topics and describing
    the cluster, but not altering it.
    """
    return (
        Acl(user, "topic"),
        Acl(user, "group"),
        Acl(user, "transactional_id"),
        Acl(
            user,
            "cluster",
            operations=("describe", "create", "idempotent_write", "describe_configs"),
        ),
    )


@dataclass(frozen=True)
class Security:
    """How the secure broker is set up (``LocalKafka(security=...)``).

    Args:
        users: SASL users besides ``admin``; each gets a random password.
        acls: ACLs created at every start; ``None`` gives each user
            :func:`full_access`. ``()`` creates none: only ``admin`` can do
            anything until a test adds ACLs (:meth:`SecureCluster.create_acls`).

    """

    users: tuple[str, ...] = ("alice",)
    acls: tuple[Acl, ...] | None = None

    def __post_init__(self) -> None:
        for user in self.users:
            if not user or not set(user) <= _USER_NAME:
                raise LocalKafkaError(f"Security(users=...): {user!r} is not a plain user name")
        if ADMIN_USER in self.users:
            raise LocalKafkaError(f"Security(users=...): {ADMIN_USER!r} is always there")

    def initial_acls(self) -> tuple[Acl, ...]:
        """The ACLs to create at start."""
        if self.acls is not None:
            return self.acls
        return tuple(acl for user in self.users for acl in full_access(user))


@dataclass(frozen=True)
class SecureCluster:
    """What a client needs to reach the secure broker.

    ``repr`` shows no password; :meth:`password` and :meth:`client_config`
    hand them out to the code that connects.
    """

    bootstrap: str
    ca_location: Path
    users: tuple[str, ...]
    passwords: Mapping[str, str] = field(repr=False)
    security_protocol: str = "SASL_SSL"

    def password(self, user: str) -> str:
        """The password of ``user`` (SCRAM and PLAIN share it)."""
        try:
            return self.passwords[user]
        except KeyError:
            raise LocalKafkaError(
                f"no user {user!r} on this broker (users: {', '.join(self.users)})"
            ) from None

    def client_config(self, user: str = ADMIN_USER, mechanism: Mechanism = SCRAM) -> dict[str, str]:
        """The librdkafka properties for ``user``: bootstrap, SASL_SSL, mechanism, CA."""
        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.security_protocol,
            "sasl.mechanism": mechanism,
            "sasl.username": user,
            "sasl.password": self.password(user),
            "ssl.ca.location": str(self.ca_location),
        }

    def streamkit_env(self, user: str, mechanism: Mechanism = SCRAM) -> dict[str, str]:
        """The same as ``STREAMKIT_*`` environment variables, for ``streamkit run`` and the CLI."""
        conf = self.client_config(user, mechanism)
        env = {"STREAMKIT_BROKERS": conf.pop("bootstrap.servers")}
        for key, value in conf.items():
            env["STREAMKIT_KAFKA_" + key.upper().replace(".", "_")] = value
        return env

    def create_acls(self, acls: Iterable[Acl], timeout: float = 30.0) -> None:
        """Create ACLs as ``admin``; creating one that exists is not an error."""
        bindings = [b for acl in acls for b in acl.bindings()]
        if not bindings:
            return
        from confluent_kafka import KafkaException

        admin = self._admin()
        for binding, future in admin.create_acls(bindings, request_timeout=timeout).items():
            try:
                future.result(timeout=timeout)
            except KafkaException as exc:
                raise LocalKafkaError(f"creating ACL {binding} failed: {exc}") from None
        # Created means recorded by the controller; the broker's authorizer
        # applies it once its metadata catches up. Describing asks the broker.
        deadline = time.monotonic() + timeout
        from confluent_kafka.admin import AclBindingFilter

        for b in bindings:
            wanted = AclBindingFilter(
                b.restype, b.name, b.resource_pattern_type, b.principal, b.host,
                b.operation, b.permission_type,
            )  # fmt: skip
            while not admin.describe_acls(wanted, request_timeout=timeout).result(timeout):
                if time.monotonic() > deadline:
                    raise LocalKafkaError(f"ACL {b} not in effect after {timeout:.0f}s")
                time.sleep(0.05)

    def _admin(self) -> Any:
        import logging

        from confluent_kafka.admin import AdminClient

        conf: dict[str, Any] = dict(self.client_config(ADMIN_USER, PLAIN))
        conf["logger"] = logging.getLogger(__name__)
        return AdminClient(conf)


def load_credentials(directory: Path, users: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Return every user's password, drawing new ones for users not seen before.

    Returns:
        ``(passwords, new)``: all passwords (``admin`` included), and the
        users whose password was drawn now, who have no SCRAM credential yet
        unless the data directory is formatted next.

    """
    path = directory / CREDENTIALS_FILE
    try:
        known: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = {}
    except (OSError, ValueError) as exc:
        raise LocalKafkaError(f"cannot read {path}: {exc}") from None
    new = [u for u in (ADMIN_USER, *users) if u not in known]
    if new:
        for user in new:
            # Hex only: the storage tool's --add-scram and the JAAS config
            # both take it unquoted, and no client config needs escaping.
            known[user] = secrets.token_hex(16)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(known, out, indent=2, sort_keys=True)
        tmp.replace(path)
    return known, new


def scram_arguments(passwords: Mapping[str, str]) -> list[str]:
    """``kafka-storage format`` arguments creating every user's SCRAM credential."""
    args: list[str] = []
    for user, password in sorted(passwords.items()):
        args += ["--add-scram", f"{SCRAM}=[name={user},password={password}]"]
    return args


def listener_properties(
    *, port: int, controller_port: int, tls: TlsFiles, passwords: Mapping[str, str]
) -> dict[str, str]:
    """The broker properties of the secure layout (listeners, TLS, SASL, authorizer)."""
    admin_password = passwords[ADMIN_USER]
    plain_users = " ".join(f'user_{u}="{p}"' for u, p in sorted(passwords.items()))
    plain_module = "org.apache.kafka.common.security.plain.PlainLoginModule required"
    return {
        "listeners": f"SASL_SSL://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}",
        "advertised.listeners": f"SASL_SSL://{LOOPBACK}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "CONTROLLER:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms": f"{SCRAM},{PLAIN}",
        # PLAIN for the broker's own connections: its credential is in the
        # JAAS text below, so it works before any SCRAM credential exists.
        "sasl.mechanism.inter.broker.protocol": PLAIN,
        "sasl.mechanism.controller.protocol": PLAIN,
        "listener.name.controller.sasl.enabled.mechanisms": PLAIN,
        "listener.name.controller.plain.sasl.jaas.config": (
            f'{plain_module} username="{ADMIN_USER}" password="{admin_password}" '
            f'user_{ADMIN_USER}="{admin_password}";'
        ),
        "listener.name.sasl_ssl.plain.sasl.jaas.config": (
            f'{plain_module} username="{ADMIN_USER}" password="{admin_password}" {plain_users};'
        ),
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls.broker),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls.ca),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{ADMIN_USER}",
    }
