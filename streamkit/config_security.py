"""The security settings: how they are read, checked and kept out of sight.

SASL and TLS settings (``security_protocol``, ``sasl_*``, ``ssl_*``) and the
schema registry's credentials: their parsers, the settings that may come
from a mounted file (``STREAMKIT_<NAME>_FILE``), the librdkafka properties
each becomes, the checks that refuse contradicting ones at start, and the
record of every credential loaded, so logs can be scrubbed of them.

Its own module to keep :mod:`streamkit.config` under 600 lines. Dependencies
run one way: :mod:`streamkit.config` builds its settings table and
:class:`~streamkit.config.AppConfig` on what is here, and this module
imports nothing from it (only the plain parsers of
:mod:`streamkit.config_values`). Users import :func:`is_secret` and
:func:`secret_values` from :mod:`streamkit.config`, which re-exports them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from streamkit.config_values import _optional_str, _text
from streamkit.errors import ConfigError

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


def is_secret(key: str) -> bool:
    """Whether a librdkafka property or a setting holds a credential that must not be shown."""
    return bool(_SECRET.search(key))


def _env_name(setting: str) -> str:
    """The environment variable a setting is read from."""
    return "STREAMKIT_" + setting.upper()


# -- the schema registry's credentials ---------------------------------------


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


# -- SASL and TLS ------------------------------------------------------------

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


# The security settings' rows of the settings table, in the table's order.
# All are unset by default: librdkafka's PLAINTEXT and no credentials,
# unless a pass-through sets them.
_SECURITY_SETTINGS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("security_protocol", _upper_choice(*_PROTOCOLS)),
    ("sasl_mechanism", _upper_choice(*_MECHANISMS)),
    ("sasl_username", _optional_str),
    ("sasl_password", _secret),
    ("ssl_ca", _pem_or_path("CA")),
    ("ssl_certificate", _pem_or_path("certificate")),
    ("ssl_key", _pem_or_path("private key", secret=True)),
    ("ssl_key_password", _secret),
)


def _from_file(name: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """``(STREAMKIT_<NAME>_FILE, the file's text)`` when that variable is set, else ``None``.

    Given both ways, the setting is refused: which of the two wins would be
    a guess.
    """
    if name not in _FROM_FILE:
        return None
    file_var = _env_name(name) + "_FILE"
    if file_var not in env:
        return None
    if _env_name(name) in env:
        raise ConfigError(file_var, f"{_env_name(name)} is set too; keep one of the two")
    return file_var, _read_secret_file(file_var, env[file_var])


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
    # Only a protocol every client gets counts: one passed to the consumer
    # or the producer alone leaves the other (and the admin client) in
    # PLAINTEXT, holding credentials it never sends.
    common = str(sections.get("kafka", {}).get("security.protocol", ""))
    protocol = values["security_protocol"] or common.upper()
    shown = protocol or "unset (PLAINTEXT)"
    partial = [s for s, props in sections.items() if s != "kafka" and "security.protocol" in props]
    if not protocol and partial:
        shown = f"set by the {partial[0]}= pass-through only, not for every client"
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


def _blame_tls_files(
    values: Mapping[str, Any], sources: Mapping[str, str], origins: dict[str, str]
) -> None:
    """Record where each ``ssl_*`` setting came from under its librdkafka property.

    So a file librdkafka cannot load is blamed on its setting (the protocol
    stays in the base the culprit search tries them on).
    """
    for name in _SSL_SETTINGS:
        if values[name] is not None:
            key, _ = _security_property(name, values[name])
            origins.setdefault(key, sources[name])


# -- scrubbing ---------------------------------------------------------------

# Every credential value a config in this process was loaded with, so log
# output can be scrubbed of them (streamkit.logs) even where a library
# prints one under a name nobody would guess. Shorter values would mask
# ordinary words in every log line.
_MIN_SCRUBBED = 4
_secret_values: set[str] = set()


def _remember_secrets(fields: Iterable[tuple[str, Any]]) -> None:
    """Add the credentials among a loaded config's ``(field, value)`` pairs to the record."""
    found: list[str] = []
    for name, value in fields:
        if isinstance(value, Mapping):
            found += [str(v) for k, v in value.items() if is_secret(k)]
        elif isinstance(value, str) and is_secret(name):
            found.append(value)
            if name == "schema_registry_user_info":
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
