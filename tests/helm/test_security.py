"""The chart's Kafka security values end to end: what it mounts is what streamkit loads.

The rendered env, with the Secrets' keys written where the chart mounts
them, goes through ``AppConfig.load`` as a pod would; the credentials reach
every librdkafka client and no manifest or error carries them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamkit.config import AppConfig

from .conftest import Helm
from .test_chart import FULLNAME, env_of, pod_spec, values_file, workloads

PIPELINE = {"name": "orders", "module": "p.o:app", "partitions": 2, "replicas": 1}
PASSWORD = "sasl-pw-chart-do-not-render"
KEY_PASSWORD = "key-pw-chart-do-not-render"
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n"


def mounted(tmp_path: Path) -> dict[str, Any]:
    """The secure values with both Secrets "mounted" under tmp_path, their keys written."""
    sasl, tls = tmp_path / "kafka-sasl", tmp_path / "kafka-tls"
    sasl.mkdir()
    tls.mkdir()
    (sasl / "user").write_text("orders\n")
    (sasl / "pass").write_text(PASSWORD + "\n")
    for name, text in [("ca.crt", CERT), ("tls.crt", CERT), ("tls.key", KEY)]:
        (tls / name).write_text(text)
    (tls / "tls.key.password").write_text(KEY_PASSWORD)
    return {"kafka": {"sasl": {"mountPath": str(sasl)}, "tls": {"mountPath": str(tls)}}}


def test_the_pods_env_and_mounted_secrets_load_into_every_client(
    helm: Helm, tmp_path: Path
) -> None:
    rendered = helm.template(values_file("secure"), mounted(tmp_path))
    assert PASSWORD not in rendered.text and KEY_PASSWORD not in rendered.text
    for workload in workloads(rendered):
        env = {k: v["value"] for k, v in env_of(workload).items() if "value" in v}
        config = AppConfig.load("orders", env=env)
        for role in ("consumer", "producer", "admin"):
            conf = config.librdkafka(role)
            assert conf["security.protocol"] == "SASL_SSL"
            assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
            assert (conf["sasl.username"], conf["sasl.password"]) == ("orders", PASSWORD)
            assert conf["ssl.ca.location"] == str(tmp_path / "kafka-tls" / "ca.crt")
            assert conf["ssl.key.location"] == str(tmp_path / "kafka-tls" / "tls.key")
            assert conf["ssl.key.password"] == KEY_PASSWORD
            # The registry is the pass-through's business; nothing contradicts.
            assert "ssl.endpoint.identification.algorithm" in conf
        assert PASSWORD not in repr(config) and KEY_PASSWORD not in repr(config)


def test_plaintext_mounts_no_secret_and_sets_no_security_env(helm: Helm) -> None:
    rendered = helm.template({"pipelines": [PIPELINE]})
    (workload,) = workloads(rendered)
    env = env_of(workload)
    assert env["STREAMKIT_SECURITY_PROTOCOL"]["value"] == "PLAINTEXT"
    assert not [n for n in env if n.startswith(("STREAMKIT_SASL_", "STREAMKIT_SSL_"))]
    assert [v["name"] for v in pod_spec(workload)["volumes"]] == ["tmp"]


def test_sasl_without_tls_mounts_only_the_credentials(helm: Helm) -> None:
    rendered = helm.template(
        {
            "kafka": {
                "securityProtocol": "SASL_PLAINTEXT",
                "sasl": {"existingSecret": "kafka-credentials", "mechanism": "PLAIN"},
            },
            "pipelines": [PIPELINE],
        }
    )
    workload = rendered.one("Deployment", f"{FULLNAME}-orders")
    env = env_of(workload)
    assert env["STREAMKIT_SASL_PASSWORD_FILE"]["value"] == "/etc/streamkit/kafka-sasl/password"
    assert env["STREAMKIT_SASL_USERNAME_FILE"]["value"] == "/etc/streamkit/kafka-sasl/username"
    assert not [n for n in env if n.startswith("STREAMKIT_SSL_")]
    assert [v["name"] for v in pod_spec(workload)["volumes"]] == ["tmp", "kafka-sasl"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"kafka": {"sasl": {"mountPath": "/etc/streamkit/kafka-tls"}}},
            "kafka.sasl.mountPath and kafka.tls.mountPath are the same directory",
        ),
        (
            {"kafka": {"sasl": {"usernameKey": "pass"}}},
            "kafka.sasl.usernameKey and kafka.sasl.passwordKey name the same key",
        ),
        ({"kafka": {"sasl": {"mountPath": "secrets"}}}, "at '/kafka/sasl/mountPath'"),
        (
            {"kafka": {"extraConfig": {"sasl.username": "orders"}}},
            "at '/kafka/extraConfig/sasl.username'",
        ),
    ],
    ids=["same-mount-path", "same-key", "relative-mount-path", "extra-config-username"],
)
def test_security_values_that_cannot_work_are_refused(
    helm: Helm, values: dict[str, Any], message: str
) -> None:
    error = helm.template_error(values_file("secure"), values)
    assert message in error
