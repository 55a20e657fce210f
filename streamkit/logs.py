"""Logging setup: readable on a terminal, JSON lines in production.

Every lifecycle line carries the same keys (app, group, agent, topic,
partition) so an operator can grep one partition's story across workers.
Nothing is logged per record at INFO: that is what metrics are for.

No credential reaches a log line: values under secret-looking names
(``sasl_password=``, a dict's ``sasl.password``) are masked, and the rendered
line is scrubbed of every credential a config in this process was loaded with
(:func:`streamkit.config.secret_values`), whatever a library printed it under.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

import structlog

from streamkit.config import is_secret, secret_values

_MASK = "***"
# Fields on every line of this process, from any thread: contextvars reach
# only the thread (and tasks) that bound them, not librdkafka's callbacks
# on the poll thread. Set once, at start (a supervisor's child, its index).
_PROCESS_FIELDS: dict[str, Any] = {}


def bind_process_fields(**fields: Any) -> None:
    """Put ``fields`` on every log line this process writes from now on, in every thread."""
    _PROCESS_FIELDS.update(fields)


def _process_fields(logger: Any, method: str, event: Any) -> Any:
    for key, value in _PROCESS_FIELDS.items():
        event.setdefault(key, value)
    return event


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog once per process.

    Args:
        fmt: ``console``, ``json``, or ``auto`` (console when stderr is a terminal).
        level: Minimum level name.
    """
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        _process_fields,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        mask_secret_fields,
    ]
    if fmt == "json":
        processors += [
            structlog.processors.dict_tracebacks,
            Scrubbed(structlog.processors.JSONRenderer()),
        ]
    else:
        processors.append(Scrubbed(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def mask_secret_fields(logger: Any, method: str, event: Any) -> Any:
    """A structlog processor: values under secret-looking keys become ``***``.

    One level into dicts too, so ``log.info("conf", conf=config.librdkafka(...))``
    shows the properties and not ``sasl.password``.
    """
    for key, value in event.items():
        if value is not None and is_secret(str(key)):
            event[key] = _MASK
        elif isinstance(value, Mapping):
            event[key] = {
                k: (_MASK if v is not None and is_secret(str(k)) else v) for k, v in value.items()
            }
    return event


class Scrubbed:
    """Wraps a structlog renderer; its line comes out without any loaded credential.

    The last resort, for a secret printed under a name no rule recognises:
    an exception's message, a client library's error text. A credential
    appears in a line as itself, JSON-escaped, or inside a ``repr``.
    """

    def __init__(self, renderer: Any) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, method: str, event: Any) -> Any:
        """Render ``event``, then scrub the line."""
        line = self._renderer(logger, method, event)
        return scrub(line) if isinstance(line, str) else line


def scrub(text: str) -> str:
    """``text`` with every credential loaded in this process replaced by ``***``."""
    # Longest first: a password that contains another one is masked whole.
    for secret in sorted(secret_values(), key=len, reverse=True):
        for form in {secret, json.dumps(secret)[1:-1], repr(secret)[1:-1]}:
            if form in text:
                text = text.replace(form, _MASK)
    return text
