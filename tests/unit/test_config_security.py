"""Security settings: SASL and TLS, from code, the environment and mounted files."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from streamkit.config import AppConfig, secret_values
from streamkit.errors import ConfigError

BROKERS = {"brokers": "kafka-0.kafka:9093"}
PASSWORD = "pw-do-not-show-7f3a"  # grepped for in every message below
KEY_PASSWORD = "keypass-do-not-show-91c2"
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUca\n-----END CERTIFICATE-----\n"
KEY_PEM = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAkey-do-not-show-5e1\n-----END PRIVATE KEY-----\n"
SCRAM = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "orders",
    "sasl_password": PASSWORD,
}
ROLES = ("consumer", "producer", "admin")


def load(overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Any:
    return AppConfig.load("orders", {**BROKERS, **(overrides or {})}, env=env or {})


def error(overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Any:
    with pytest.raises(ConfigError) as info:
        load(overrides, env)
    for secret in (PASSWORD, KEY_PASSWORD, "key-do-not-show-5e1"):
        assert secret not in str(info.value)
    return info.value


def test_sasl_scram_over_tls_reaches_every_client() -> None:
    config = load(SCRAM)
    for role in ROLES:
        conf = config.librdkafka(role)
        assert conf["security.protocol"] == "SASL_SSL"
        assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
        assert (conf["sasl.username"], conf["sasl.password"]) == ("orders", PASSWORD)


def test_the_same_from_the_environment_case_and_dashes_as_people_write_them() -> None:
    env = {
        "STREAMKIT_SECURITY_PROTOCOL": "sasl_plaintext",
        "STREAMKIT_SASL_MECHANISM": "scram_sha_256",
        "STREAMKIT_SASL_USERNAME": "orders",
        "STREAMKIT_SASL_PASSWORD": PASSWORD,
    }
    conf = load(env=env).librdkafka("consumer")
    assert (conf["security.protocol"], conf["sasl.mechanism"]) == (
        "SASL_PLAINTEXT",
        "SCRAM-SHA-256",
    )


def test_a_password_keeps_its_spaces() -> None:
    config = load({**SCRAM, "sasl_password": f" {PASSWORD} "})
    assert config.sasl_password == f" {PASSWORD} "


def test_unset_security_leaves_librdkafka_defaults() -> None:
    conf = load().librdkafka("producer")
    assert not [k for k in conf if k.startswith(("security.", "sasl.", "ssl."))]


def test_pem_text_and_file_paths_map_to_pem_and_location(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text(CA_PEM)
    cert = tmp_path / "tls.crt"
    cert.write_text(CA_PEM)
    by_path = load(
        {
            "security_protocol": "SSL",
            "ssl_ca": str(ca),
            "ssl_certificate": str(cert),
            "ssl_key": KEY_PEM,
            "ssl_key_password": KEY_PASSWORD,
        }
    )
    for role in ROLES:
        conf = by_path.librdkafka(role)
        assert conf["ssl.ca.location"] == str(ca)
        assert conf["ssl.certificate.location"] == str(cert)
        assert conf["ssl.key.pem"] == KEY_PEM.strip()
        assert conf["ssl.key.password"] == KEY_PASSWORD
        assert "ssl.ca.pem" not in conf and "ssl.key.location" not in conf
    by_pem = load({"security_protocol": "SSL", "ssl_ca": CA_PEM})
    assert by_pem.librdkafka("admin")["ssl.ca.pem"] == CA_PEM.strip()


def test_a_pem_with_escaped_newlines_gets_real_ones() -> None:
    one_line = CA_PEM.replace("\n", "\\n")
    config = load({"security_protocol": "SSL"}, env={"STREAMKIT_SSL_CA": one_line})
    assert config.ssl_ca == CA_PEM.strip()


def test_a_missing_file_names_the_setting_and_a_key_path_is_not_quoted(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.crt")
    ca = error({"security_protocol": "SSL", "ssl_ca": missing})
    assert ca.setting == "ssl_ca=" and missing in ca.problem and "PEM" in ca.problem
    # A key pasted without its BEGIN line would be "a path": never repeat it.
    pasted = "MIGHAgEAkey-do-not-show-5e1"
    key = error({"security_protocol": "SSL", "ssl_certificate": CA_PEM, "ssl_key": pasted})
    assert key.setting == "ssl_key="


def test_secrets_come_from_mounted_files_without_their_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "username").write_text("orders\n")
    (tmp_path / "password").write_text(PASSWORD + "\r\n")
    (tmp_path / "tls.key").write_text(KEY_PEM)
    (tmp_path / "user-info").write_text(f"SRKEY:{PASSWORD}\n")
    env = {
        "STREAMKIT_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMKIT_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAMKIT_SASL_USERNAME_FILE": str(tmp_path / "username"),
        "STREAMKIT_SASL_PASSWORD_FILE": str(tmp_path / "password"),
        "STREAMKIT_SSL_CERTIFICATE": CA_PEM,
        "STREAMKIT_SSL_KEY_FILE": str(tmp_path / "tls.key"),
        "STREAMKIT_SCHEMA_REGISTRY_USER_INFO_FILE": str(tmp_path / "user-info"),
    }
    config = load(env=env)
    assert (config.sasl_username, config.sasl_password) == ("orders", PASSWORD)
    assert config.ssl_key == KEY_PEM.rstrip("\n")
    assert config.librdkafka("consumer")["ssl.key.pem"] == config.ssl_key
    assert config.schema_registry_user_info == f"SRKEY:{PASSWORD}"
    # Code still beats the environment.
    assert load({**SCRAM, "sasl_password": "from-code"}, env=env).sasl_password == "from-code"


@pytest.mark.parametrize("problem", ["missing", "directory", "empty", "binary"])
def test_an_unreadable_secret_file_names_the_variable(tmp_path: Path, problem: str) -> None:
    path = tmp_path / "password"
    if problem == "directory":
        path.mkdir()
    elif problem == "empty":
        path.write_text("\n")
    elif problem == "binary":
        path.write_bytes(b"\xff\xfe" + PASSWORD.encode())
    env = {"STREAMKIT_SASL_PASSWORD_FILE": str(path)}
    err = error({**SCRAM, "sasl_password": None}, env)
    assert err.setting == "STREAMKIT_SASL_PASSWORD_FILE"
    assert str(path) in err.problem


def test_a_value_and_a_file_for_one_secret_is_refused(tmp_path: Path) -> None:
    (tmp_path / "password").write_text(PASSWORD)
    env = {
        "STREAMKIT_SASL_PASSWORD": PASSWORD,
        "STREAMKIT_SASL_PASSWORD_FILE": str(tmp_path / "password"),
    }
    err = error({**SCRAM, "sasl_password": None}, env)
    assert err.setting == "STREAMKIT_SASL_PASSWORD_FILE"
    assert "STREAMKIT_SASL_PASSWORD is set too" in err.problem


@pytest.mark.parametrize(
    ("overrides", "env", "setting", "says"),
    [
        ({"sasl_mechanism": "PLAIN"}, {}, "sasl_mechanism=", "SASL_SSL or SASL_PLAINTEXT"),
        (
            {"security_protocol": "SSL", "sasl_password": PASSWORD},
            {},
            "sasl_password=",
            "it is SSL",
        ),
        ({}, {"STREAMKIT_SASL_USERNAME": "orders"}, "STREAMKIT_SASL_USERNAME", "unset"),
        ({**SCRAM, "sasl_mechanism": None}, {}, "sasl_mechanism (", "SCRAM-SHA-512"),
        ({**SCRAM, "sasl_password": None}, {}, "sasl_password (", "needs a username and"),
        ({**SCRAM, "sasl_username": ""}, {}, "sasl_username (", "needs a username and"),
        ({"ssl_ca": CA_PEM}, {}, "ssl_ca=", "SSL or SASL_SSL; it is unset (PLAINTEXT)"),
        (
            {"security_protocol": "PLAINTEXT"},
            {"STREAMKIT_SSL_KEY_PASSWORD": KEY_PASSWORD},
            "STREAMKIT_SSL_KEY_PASSWORD",
            "it is PLAINTEXT",
        ),
        ({**SCRAM, "security_protocol": "SASL_PLAINTEXT", "ssl_ca": CA_PEM}, {}, "ssl_ca=", ""),
        ({"security_protocol": "SSL", "ssl_certificate": CA_PEM}, {}, "ssl_key (", "private key"),
        ({"security_protocol": "SSL", "ssl_key": KEY_PEM}, {}, "ssl_certificate (", "certificate"),
        (
            {"security_protocol": "SSL", "ssl_key_password": KEY_PASSWORD},
            {},
            "ssl_key_password=",
            "no ssl_key",
        ),
        ({"security_protocol": "TLS"}, {}, "security_protocol=", "SASL_SSL"),
        ({**SCRAM, "sasl_mechanism": "GSSAPI"}, {}, "sasl_mechanism=", "PLAIN"),
        ({**SCRAM, "sasl_password": 1234}, {}, "sasl_password=", "expected a string"),
    ],
)
def test_conflicting_security_settings_name_one_setting(
    overrides: dict[str, Any], env: dict[str, str], setting: str, says: str
) -> None:
    err = error(overrides, env)
    assert err.setting.startswith(setting)
    assert says in err.problem


@pytest.mark.parametrize(
    ("overrides", "env", "origin"),
    [
        (
            {**SCRAM, "kafka": {"security.protocol": "SSL"}},
            {},
            "kafka={'security.protocol': ...}",
        ),
        (SCRAM, {"STREAMKIT_KAFKA_SASL_PASSWORD": "other"}, "STREAMKIT_KAFKA_SASL_PASSWORD"),
        (
            SCRAM,
            {"STREAMKIT_CONSUMER_SASL_MECHANISMS": "PLAIN"},
            "STREAMKIT_CONSUMER_SASL_MECHANISMS",
        ),
        (
            {"security_protocol": "SSL", "ssl_ca": CA_PEM, "producer": {"ssl.ca.location": "/x"}},
            {},
            "producer={'ssl.ca.location': ...}",
        ),
    ],
)
def test_a_setting_and_its_librdkafka_property_disagreeing_is_refused(
    overrides: dict[str, Any], env: dict[str, str], origin: str
) -> None:
    err = error(overrides, env)
    assert err.setting == origin
    assert "set it once" in err.problem


def test_a_setting_and_the_same_property_agreeing_is_fine() -> None:
    config = load({**SCRAM, "kafka": {"security.protocol": "SASL_SSL", "sasl.username": "orders"}})
    assert config.librdkafka("consumer")["security.protocol"] == "SASL_SSL"


def test_other_mechanisms_through_pass_through_need_no_password() -> None:
    config = load(
        {"security_protocol": "SASL_SSL", "kafka": {"sasl.mechanism": "OAUTHBEARER"}},
    )
    assert config.librdkafka("producer")["sasl.mechanism"] == "OAUTHBEARER"
    # Pass-through alone (the way before these settings) is still left alone.
    legacy = load(env={"STREAMKIT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    assert legacy.librdkafka("admin")["security.protocol"] == "SASL_SSL"


def test_a_pass_through_protocol_enables_first_class_credentials() -> None:
    env = {
        "STREAMKIT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMKIT_SASL_MECHANISM": "PLAIN",
        "STREAMKIT_SASL_USERNAME": "orders",
        "STREAMKIT_SASL_PASSWORD": PASSWORD,
    }
    assert load(env=env).librdkafka("consumer")["sasl.password"] == PASSWORD


def test_loaded_credentials_are_remembered_for_scrubbing_output() -> None:
    load({**SCRAM, "schema_registry_user_info": "SRKEY:sr-pw-do-not-show"})
    remembered = secret_values()
    assert {PASSWORD, "SRKEY:sr-pw-do-not-show", "sr-pw-do-not-show"} <= remembered
    assert "orders" not in remembered  # a username is no secret (librdkafka shows it too)


@pytest.mark.parametrize(
    ("name", "setting"),
    [("ssl_ca", "STREAMKIT_SSL_CA"), ("ssl_certificate", "STREAMKIT_SSL_CERTIFICATE")],
)
def test_a_file_librdkafka_cannot_read_is_blamed_on_its_setting(
    tmp_path: Path, name: str, setting: str
) -> None:
    """Not on a pass-through next to it, which is all the client factory used to know of."""
    from streamkit.backends.kafka import create_admin

    bad = tmp_path / "bad.crt"
    bad.write_text(CA_PEM)  # a PEM whose base64 is nonsense
    env = {
        "STREAMKIT_SECURITY_PROTOCOL": "SSL",
        "STREAMKIT_KAFKA_CLIENT_RACK": "use1-az1",
        "STREAMKIT_" + name.upper(): str(bad),
    }
    if name == "ssl_certificate":
        env["STREAMKIT_SSL_KEY"] = KEY_PEM
    with pytest.raises(ConfigError) as info:
        create_admin(load(env=env))
    assert info.value.setting == setting
    assert "librdkafka rejected it" in info.value.problem


@pytest.mark.parametrize("section", ["consumer", "producer"])
def test_a_protocol_passed_to_one_client_only_does_not_enable_credentials_for_all(
    section: str,
) -> None:
    # Found by test_config_fuzz: the other client (and the admin client)
    # would connect in PLAINTEXT with a password it never sends.
    problem = error({"sasl_password": PASSWORD, section: {"security.protocol": "SASL_SSL"}})
    assert problem.setting == "sasl_password="
    assert f"{section}= pass-through only" in str(problem)
