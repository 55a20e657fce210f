"""Config fuzzing: whatever goes in, a config or one ConfigError naming a setting comes out.

Never another exception type, and never a credential in the message.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamkit.config import _SETTINGS, AppConfig, is_secret
from streamkit.config_security import _FROM_FILE
from streamkit.errors import ConfigError

BROKERS = {"brokers": "127.0.0.1:9092"}
SECTIONS = ("kafka", "consumer", "producer")
NAMES = sorted(_SETTINGS)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A credential is recognisable in any message it leaks into.
secrets = st.text(string.ascii_letters + string.digits + "!#%&*+-./:;<=>?@^_~ ", min_size=6).map(
    lambda s: f"S3CR{s}"
)
anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)
# Values an experienced user might type for each security setting, right or wrong.
SECURITY_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "security_protocol": st.sampled_from(
        ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL", "sasl_ssl", "TLS", ""]
    ),
    "sasl_mechanism": st.sampled_from(
        ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN", "scram_sha_512", "GSSAPI", "OAUTHBEARER", ""]
    ),
    "sasl_username": st.sampled_from(["orders", "", " "]),
    "sasl_password": secrets,
    "ssl_ca": st.sampled_from(["-----BEGIN CERTIFICATE-----\nAA==\n", "/nonexistent/ca.crt"]),
    "ssl_certificate": st.sampled_from(["-----BEGIN CERTIFICATE-----\nAA==\n", "/no/tls.crt"]),
    "ssl_key": secrets.map(lambda s: f"-----BEGIN PRIVATE KEY-----\n{s}\n") | secrets,
    "ssl_key_password": secrets,
}
PASS_THROUGH = [
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.key.pem",
    "ssl.key.password",
]


def names_a_setting(err: ConfigError, given: Mapping[str, Any]) -> bool:
    setting = err.setting.lower()
    return (
        any(name in setting for name in [*NAMES, *given])
        or any(section in setting for section in SECTIONS)
        or "streamkit_" in setting
        or setting.startswith("app(")
    )


def outcome(
    overrides: Mapping[str, Any], env: Mapping[str, str] | None = None, hidden: tuple[str, ...] = ()
) -> ConfigError | AppConfig:
    """Load; any exception but a ConfigError fails the test, as does a shown credential."""
    try:
        return AppConfig.load("orders", overrides, env=env or {})
    except ConfigError as err:
        assert names_a_setting(err, overrides), err.setting
        for secret in hidden:
            assert secret not in str(err), (secret, str(err))
        return err


@FUZZ
@given(
    name=st.text(string.ascii_lowercase + "_.", min_size=1, max_size=20).filter(
        lambda n: n not in _SETTINGS and n not in SECTIONS
    ),
    value=secrets,
)
def test_an_unknown_key_is_named_and_a_secret_looking_ones_value_hidden(
    name: str, value: str
) -> None:
    err = outcome({**BROKERS, name: value})
    assert isinstance(err, ConfigError)
    assert err.setting.startswith(f"{name}=")
    assert "unknown setting" in err.problem
    if is_secret(name):
        assert value not in str(err)


@FUZZ
@given(name=st.sampled_from(NAMES), value=anything)
def test_a_value_of_any_type_gives_a_config_or_one_error(name: str, value: Any) -> None:
    hidden = (value,) if is_secret(name) and isinstance(value, str) and len(value) > 3 else ()
    # A cross-check may name the setting the value conflicts with, not this one.
    outcome({**BROKERS, name: value}, hidden=hidden)


@FUZZ
@given(name=st.sampled_from(NAMES), value=st.text(max_size=40))
def test_any_environment_text_gives_a_config_or_one_error(name: str, value: str) -> None:
    hidden = (value,) if is_secret(name) and len(value) > 3 else ()
    outcome(BROKERS, {f"STREAMKIT_{name.upper()}": value}, hidden=hidden)


@FUZZ
@given(section=st.sampled_from(SECTIONS), props=anything)
def test_a_pass_through_of_any_shape_gives_a_config_or_one_error(section: str, props: Any) -> None:
    outcome({**BROKERS, section: props})


@FUZZ
@given(
    brokers=st.none()
    | st.just("")
    | st.just(" , ")
    | st.text(max_size=30)
    | st.lists(st.text(max_size=5), max_size=2)
    | st.integers(),
    from_env=st.booleans(),
)
def test_empty_missing_or_garbled_brokers_name_the_brokers(brokers: Any, from_env: bool) -> None:
    if from_env and isinstance(brokers, str):
        err = outcome({}, {"STREAMKIT_BROKERS": brokers})
    else:
        err = outcome({"brokers": brokers})
    if isinstance(err, ConfigError):
        assert "brokers" in err.setting.lower()
    else:
        assert err.brokers


@FUZZ
@given(
    chosen=st.fixed_dictionaries({}, optional=SECURITY_VALUES),
    in_env=st.sets(st.sampled_from(sorted(SECURITY_VALUES))),
    passed=st.dictionaries(
        st.sampled_from(PASS_THROUGH),
        st.sampled_from(["SASL_SSL", "SSL", "PLAIN", "SCRAM-SHA-512", "orders", "/x"]),
        max_size=3,
    ).map(lambda props: {k: f"S3CR-{k}" if is_secret(k) else v for k, v in props.items()}),
    section=st.sampled_from(SECTIONS),
)
def test_any_mix_of_security_settings_gives_a_config_or_one_error_without_a_secret(
    chosen: dict[str, Any], in_env: set[str], passed: dict[str, str], section: str
) -> None:
    code = {k: v for k, v in chosen.items() if k not in in_env}
    env = {f"STREAMKIT_{k.upper()}": v for k, v in chosen.items() if k in in_env}
    hidden = tuple(
        v for k, v in chosen.items() if is_secret(k) and isinstance(v, str) and len(v) > 3
    )
    hidden += tuple(v for k, v in passed.items() if v.startswith("S3CR"))
    found = outcome({**BROKERS, **code, section: passed}, env, hidden=hidden)
    if isinstance(found, AppConfig):
        # What loads is what every client gets, and none of it contradicts itself.
        conf = found.librdkafka("consumer")
        if found.sasl_password is not None:
            assert conf["sasl.password"] == found.sasl_password
            assert conf["security.protocol"].upper().startswith("SASL_")
        for secret in hidden:
            assert secret not in repr(found)


@FUZZ
@given(
    name=st.sampled_from(_FROM_FILE),
    path=st.text(string.ascii_letters + "/._-", min_size=1, max_size=30),
)
def test_a_secret_file_that_cannot_be_read_names_its_variable(name: str, path: str) -> None:
    variable = f"STREAMKIT_{name.upper()}_FILE"
    err = outcome(BROKERS, {variable: "/nonexistent/" + path})
    assert isinstance(err, ConfigError)
    assert err.setting == variable
