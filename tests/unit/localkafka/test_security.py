"""The secure layout without Java: certificates, passwords, properties, ACLs, the CLI flag."""

from __future__ import annotations

import json
import ssl
import stat
from pathlib import Path

import pytest
from confluent_kafka.admin import AclOperation, AclPermissionType, ResourcePatternType, ResourceType

from streamkit.errors import ConfigError, LocalKafkaError
from streamkit.localkafka import LocalKafka, free_ports
from streamkit.localkafka.__main__ import build_parser
from streamkit.localkafka.security import (
    Acl,
    Security,
    full_access,
    load_credentials,
    scram_arguments,
)
from streamkit.localkafka.tls import ensure_certificates, write_ca


def test_the_broker_certificate_verifies_against_the_ca_for_loopback(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path)
    pem = files.broker.read_text()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, as Kafka's PEM store reads
    assert pem.count("BEGIN CERTIFICATE") == 2  # the broker's, then the CA's
    assert stat.S_IMODE(files.broker.stat().st_mode) == 0o600
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem.split("-----END PRIVATE KEY-----")[1].encode())
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    # OpenSSL (what librdkafka uses) accepts the CA file as a trust store.
    ssl.create_default_context(cafile=str(files.ca))


def test_certificates_are_kept_and_another_ca_is_unrelated(tmp_path: Path) -> None:
    first = ensure_certificates(tmp_path).ca.read_bytes()
    assert ensure_certificates(tmp_path).ca.read_bytes() == first
    other = write_ca(tmp_path / "other.pem").read_bytes()
    assert other != first


def test_passwords_are_drawn_once_and_kept_private(tmp_path: Path) -> None:
    passwords, new = load_credentials(tmp_path, ["alice"])
    assert new == ["admin", "alice"]
    assert len(set(passwords.values())) == 2
    again, new_again = load_credentials(tmp_path, ["alice", "bob"])
    assert new_again == ["bob"]
    assert again["alice"] == passwords["alice"]
    path = tmp_path / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == again


def test_scram_arguments_create_every_user_at_format_time() -> None:
    assert scram_arguments({"alice": "a1", "admin": "x9"}) == [
        "--add-scram",
        "SCRAM-SHA-512=[name=admin,password=x9]",
        "--add-scram",
        "SCRAM-SHA-512=[name=alice,password=a1]",
    ]


def test_the_secure_broker_has_no_plaintext_listener_and_an_authorizer(tmp_path: Path) -> None:
    port, controller_port = free_ports(2)
    kafka = LocalKafka(port, controller_port=controller_port, data_dir=tmp_path, security=True)
    cluster = kafka.secure_cluster
    tls = ensure_certificates(kafka.secure_dir)
    passwords, _ = load_credentials(kafka.secure_dir, ("alice",))
    props = kafka._properties(kafka._secure_properties(tls, passwords))
    assert props["listeners"] == (
        f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
    )
    assert "PLAINTEXT" not in props["listener.security.protocol.map"].replace("SASL_PLAINTEXT", "")
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["super.users"] == "User:admin"
    assert props["ssl.keystore.type"] == "PEM"
    assert "offsets.topic.replication.factor" in props  # the test-friendly defaults stay
    # Clients: what streamkit reads from the environment.
    env = cluster.streamkit_env("alice")
    assert env["STREAMKIT_BROKERS"] == f"127.0.0.1:{port}"
    assert env["STREAMKIT_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["STREAMKIT_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["STREAMKIT_KAFKA_SASL_PASSWORD"] == passwords["alice"]
    assert env["STREAMKIT_KAFKA_SSL_CA_LOCATION"] == str(tls.ca)
    assert passwords["alice"] not in repr(cluster)
    assert cluster.client_config("alice", "PLAIN")["sasl.mechanism"] == "PLAIN"
    with pytest.raises(LocalKafkaError, match="no user 'mallory'"):
        cluster.password("mallory")


def test_extras_cannot_undo_the_secure_layout(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"super\.users"):
        LocalKafka(19092, data_dir=tmp_path, security=True, extra_properties={"super.users": "x"})
    LocalKafka(19092, data_dir=tmp_path, extra_properties={"super.users": "User:x"})  # plain: fine
    with pytest.raises(LocalKafkaError, match="has no security"):
        _ = LocalKafka(19092, data_dir=tmp_path).secure_cluster


def test_users_and_acls() -> None:
    with pytest.raises(LocalKafkaError, match="always there"):
        Security(users=("admin",))
    with pytest.raises(LocalKafkaError, match="not a plain user name"):
        Security(users=("a,b",))
    assert Security(users=("a", "b")).initial_acls() == full_access("a") + full_access("b")
    assert Security(acls=()).initial_acls() == ()
    [deny] = Acl("bob", "topic", "out", ("write",), allow=False).bindings()
    assert (deny.restype, deny.name, deny.principal) == (ResourceType.TOPIC, "out", "User:bob")
    assert deny.operation == AclOperation.WRITE
    assert deny.permission_type == AclPermissionType.DENY
    assert deny.resource_pattern_type == ResourcePatternType.LITERAL
    [cluster] = Acl("bob", "cluster", operations=("describe",)).bindings()
    assert cluster.name == "kafka-cluster"
    with pytest.raises(LocalKafkaError, match="unknown operation"):
        Acl("bob", "topic", operations=("juggle",)).bindings()


def test_up_takes_secure_and_users() -> None:
    args = build_parser().parse_args(["up", "--secure", "--user", "alice", "--user", "bob"])
    assert args.secure and args.users == ["alice", "bob"]
    assert build_parser().parse_args(["up"]).secure is False
