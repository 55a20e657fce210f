"""Every place a config can be shown, rendered and grepped for the credentials it holds.

A repr, ``redacted()``, error messages, log lines (JSON and console), the
metrics page and the CLI's output: none may carry a password, a key
passphrase, a private key or the registry's credentials.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from streamkit import App
from streamkit.config import AppConfig
from streamkit.errors import ConfigError
from streamkit.logs import configure_logging, mask_secret_fields, scrub
from streamkit.observability import Health, WorkerCollector
from streamkit.observability.kafka_stats import StatsReader
from streamkit.testing import TestApp
from tests.command_line import run_cli

PASSWORD = "sasl-pw-91f0-do-not-show"
KEY_PASSWORD = "key-pass-3c7e-do-not-show"
KEY_BODY = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg-do-not-show"
KEY_PEM = f"-----BEGIN PRIVATE KEY-----\n{KEY_BODY}\n-----END PRIVATE KEY-----"
CERT_PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUca\n-----END CERTIFICATE-----"
REGISTRY = "registry-secret-5b2d-do-not-show"
SECRETS = (PASSWORD, KEY_PASSWORD, KEY_BODY, REGISTRY)
SETTINGS: dict[str, Any] = {
    "brokers": "127.0.0.1:9093",
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "orders",
    "sasl_password": PASSWORD,
    "ssl_ca": CERT_PEM,
    "ssl_certificate": CERT_PEM,
    "ssl_key": KEY_PEM,
    "ssl_key_password": KEY_PASSWORD,
    "schema_registry_url": "mock://shown",
    "schema_registry_user_info": f"SRKEY:{REGISTRY}",
    "kafka": {"sasl.oauthbearer.client.secret": f"{PASSWORD}-oauth"},
}


def assert_clean(text: str) -> None:
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"{leaked} in:\n{text}"


def config() -> AppConfig:
    return AppConfig.load("orders", SETTINGS, env={})


def test_repr_str_and_redacted_show_the_settings_but_no_secret() -> None:
    shown = config()
    for text in (repr(shown), str(shown), json.dumps(shown.redacted())):
        assert_clean(text)
        assert "SASL_SSL" in text and "orders" in text  # what is not secret stays readable
    redacted = shown.redacted()
    assert {k for k, v in redacted.items() if v == "***"} == {
        "sasl_password",
        "ssl_key",
        "ssl_key_password",
        "schema_registry_user_info",
    }
    assert redacted["ssl_ca"] == f"<PEM, {len(CERT_PEM)} characters>"
    assert redacted["kafka"] == {"sasl.oauthbearer.client.secret": "***"}


@pytest.mark.parametrize(
    "change",
    [
        {"security_protocol": "SSL"},  # sasl_* without SASL
        {"security_protocol": "SASL_PLAINTEXT"},  # ssl_* without TLS
        {"ssl_certificate": None},  # a key without its certificate
        {"sasl_password": None, "ssl_key_password": ["x", KEY_PASSWORD]},  # a wrong type
        {"kafka": {"sasl.password": PASSWORD + "-other"}},  # contradicts sasl_password
        {"kafka": {"ssl.key.pem": KEY_PEM.replace("MIG", "XXX")}},
        {"sasl_password": 12345678},
        {"ssl_key": KEY_BODY},  # a key pasted without its BEGIN line reads as a path
        {"schema_registry_user_info": REGISTRY},  # no colon
        {"schema_registry_url": f"https://SRKEY:{REGISTRY}@registry:8081"},
        {"sasl_passwd": PASSWORD},  # an unknown setting
        {"commit_every": PASSWORD},
    ],
)
def test_no_error_message_quotes_a_secret(change: dict[str, Any]) -> None:
    settings = {**SETTINGS, **change}
    with pytest.raises(ConfigError) as info:
        AppConfig.load("orders", {k: v for k, v in settings.items() if v is not None}, env={})
    if "commit_every" not in change:  # a secret given to a plain setting is shown: no way to know
        assert_clean(str(info.value))
        assert_clean(repr(info.value))


def test_secrets_from_files_are_not_in_errors_about_those_files(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_bytes(PASSWORD.encode() + b"\xff")
    with pytest.raises(ConfigError) as info:
        AppConfig.load(
            "orders",
            {k: v for k, v in SETTINGS.items() if k != "sasl_password"},
            env={"STREAMKIT_SASL_PASSWORD_FILE": str(path)},
        )
    assert info.value.setting == "STREAMKIT_SASL_PASSWORD_FILE"
    assert_clean(str(info.value))


@pytest.fixture
def structlog_defaults() -> Iterator[None]:
    """structlog as it was before the test configured it."""
    yield
    structlog.reset_defaults()


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.usefixtures("structlog_defaults")
def test_log_lines_mask_secret_fields_and_scrub_loaded_secrets(
    capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    shown = config()
    configure_logging(fmt, "debug")
    log = structlog.get_logger("test.shown")
    log.info("config", config=shown, sasl_password=PASSWORD)
    log.info("consumer", conf=shown.librdkafka("consumer"))
    log.warning("client error", error=f"SASL authentication failed for password {PASSWORD!r}")
    log.warning("quoted", detail=json.dumps({"p": KEY_PASSWORD}))
    try:
        raise RuntimeError(f"registry said no to SRKEY:{REGISTRY}")
    except RuntimeError:
        log.exception("registry failed")
    text = capsys.readouterr().err
    assert text.count("\n") >= 5 and "registry failed" in text
    assert_clean(text)
    assert "sasl.username" in text and "orders" in text


def test_mask_secret_fields_and_scrub_alone() -> None:
    config()  # the secrets are loaded in this process
    event = {"event": "x", "ssl_key_password": KEY_PASSWORD, "conf": {"sasl.password": PASSWORD}}
    assert mask_secret_fields(None, "info", event) == {
        "event": "x",
        "ssl_key_password": "***",
        "conf": {"sasl.password": "***"},
    }
    assert scrub(f"a {PASSWORD} b {json.dumps(REGISTRY)}") == 'a *** b "***"'


def test_metric_labels_carry_no_secret() -> None:
    app = App("orders", **{k: v for k, v in SETTINGS.items() if not k.startswith("schema")})
    source = app.topic("orders.raw", value_serde="json")

    @app.agent(source)
    def relay(value: Any) -> Any:
        return value

    with TestApp(app) as t:
        t.send(source, {"n": 1}, key="a")
        t.run_until_idle()
        [worker] = t.workers
        stats = StatsReader()
        registry = CollectorRegistry()
        registry.register(WorkerCollector(worker, Health(worker, 60.0, stats=stats), stats))
        text = generate_latest(registry).decode()
    assert "streamkit_records_consumed_total" in text
    assert_clean(text)


@pytest.mark.timeout(60)
def test_the_cli_prints_no_secret_when_it_cannot_connect(tmp_path: Path) -> None:
    """A real librdkafka client with the secure settings, nobody listening: all output grepped."""
    for name, value in [("tls.key", KEY_PEM), ("tls.crt", CERT_PEM), ("ca.crt", CERT_PEM)]:
        (tmp_path / name).write_text(value + "\n")
    (tmp_path / "password").write_text(PASSWORD + "\n")
    (tmp_path / "key-password").write_text(KEY_PASSWORD + "\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STREAMKIT_")},
        "STREAMKIT_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMKIT_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAMKIT_SASL_USERNAME": "orders",
        "STREAMKIT_SASL_PASSWORD_FILE": str(tmp_path / "password"),
        "STREAMKIT_SSL_CA": str(tmp_path / "ca.crt"),
        "STREAMKIT_SSL_CERTIFICATE": str(tmp_path / "tls.crt"),
        "STREAMKIT_SSL_KEY": str(tmp_path / "tls.key"),
        "STREAMKIT_SSL_KEY_PASSWORD_FILE": str(tmp_path / "key-password"),
        "STREAMKIT_LOG_LEVEL": "debug",
        "STREAMKIT_KAFKA_DEBUG": "security,broker",
    }
    outputs = []
    for args in (
        ["dlq", "show", "orders.relay.dlq", "--brokers", "127.0.0.1:1", "--timeout", "1"],
        ["lag", "--group", "orders", "--brokers", "127.0.0.1:1", "--timeout", "1"],
    ):
        done = run_cli(env, *args, timeout=50)
        assert done.returncode != 0
        outputs.append(done.stdout + done.stderr)
    text = "\n".join(outputs)
    assert "streamkit:" in text  # the one-line error, whichever it is
    assert_clean(text)
