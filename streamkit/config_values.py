"""How one raw setting value is read: the scalar parsers of the settings table.

Each parser takes what the user gave (a value in code, or the text of an
environment variable) and returns the setting's value, or raises
``ValueError`` with a message that says what was expected; the caller
names the setting. They are strict about types on purpose: a ``True`` or a
list read as a number or a string hides the mistake.

Its own module to keep :mod:`streamkit.config` under 600 lines, and below
both :mod:`streamkit.config_security` (whose credential parsers build on
:func:`_text`) and :mod:`streamkit.config`; it imports neither.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


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


def _processes(raw: Any) -> int | str:
    if isinstance(raw, str) and raw.strip().lower() == "auto":
        return "auto"
    try:
        return _positive_int(raw)
    except ValueError:
        raise ValueError(
            f"expected a positive integer or 'auto' (the usable cores); got {raw!r}"
        ) from None


def _host(raw: Any) -> str:
    text = str(raw).strip()
    if not text:
        raise ValueError("expected a host name or IP address to listen on")
    return text


def _reason(exc: Exception, raw: Any) -> str:
    text = str(exc)
    if "invalid literal" in text or "could not convert" in text:
        return f"expected a number; got {raw!r}"
    return text
