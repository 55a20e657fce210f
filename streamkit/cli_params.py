"""How the ``streamkit`` command reads its arguments: targets, times, rates, partitions.

Each parser turns one kind of argument into a value or a usage error that
names the option and shows an example, so a typo never becomes a traceback
(or, worse, a replay of the wrong range). :mod:`streamkit.cli` declares the
commands with them.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any

import click

from streamkit.app import App

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

    from streamkit.config import AppConfig

BROKER_TIMEOUT_S = 30.0
# What getattr returns for a missing attribute, so `app = None` is told apart.
_MISSING = object()

# Every command that talks to Kafka, except `run` (a worker waits for the
# broker for ever, so a pod started during an outage does not crash-loop).
broker_timeout = click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=BROKER_TIMEOUT_S,
    show_default=True,
    metavar="SECONDS",
    help="Give up (exit 1) when Kafka does not answer within this many seconds.",
)


def load_app(target: str) -> App:
    """Import ``module:attribute`` and return the :class:`App` it names.

    The current directory is put on ``sys.path`` first, so ``pipelines.orders:app``
    works from a project checkout without installing it.

    Raises:
        click.BadParameter: The target is malformed, its module cannot be
            imported, or the attribute is missing or not an ``App``; the
            message names the module's Apps, if it has any.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise click.BadParameter(f"expected MODULE:APP, e.g. pipelines.example:app; got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise click.BadParameter(f"cannot import {module_name}: {exc}") from None
    except Exception as exc:
        # The user's module raised: its traceback is where the fix is. A
        # usage error (exit 2), not a crash: a supervisor or a restart
        # policy starting it again would fail the same way.
        traceback.print_exc()
        raise click.BadParameter(
            f"importing {module_name} failed: {type(exc).__name__}: {exc}"
        ) from None
    app = getattr(module, attr, _MISSING)
    if isinstance(app, App):
        return app
    if app is _MISSING:
        problem = f"module {module_name} has no attribute {attr}"
    else:
        problem = f"{target} is {type(app).__name__}, not a streamkit App"
    # A typo is the usual cause, so name what the module does hold.
    apps = sorted(name for name, value in vars(module).items() if isinstance(value, App))
    if apps:
        problem += f"; its streamkit Apps: {', '.join(f'{module_name}:{a}' for a in apps)}"
    else:
        problem += "; it has no streamkit App"
    raise click.BadParameter(problem)


class Seconds(click.FloatRange):
    """A positive number of seconds, with a hint for ``--watch MODULE:APP``.

    ``--watch`` takes an optional value, so click reads the word after it as
    the value: ``lag --watch pipelines.orders:app`` would otherwise fail
    with a bare "not a valid float".
    """

    name = "seconds"

    def __init__(self) -> None:
        super().__init__(min=0, min_open=True)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The number of seconds, or a usage error that says where ``--watch`` goes."""
        try:
            float(value)
        except (TypeError, ValueError):
            self.fail(
                f"expected seconds, got {value!r}; "
                "put --watch after MODULE:APP or write --watch=SECONDS",
                param,
                ctx,
            )
        return super().convert(value, param, ctx)


def parse_rate(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    """``--rate 500``, ``--rate 500/s`` (the form the chart's backfill Job renders), or ``none``."""
    if value is None or value.strip().lower() == "none":
        return None
    try:
        rate = float(value.strip().removesuffix("/s"))
    except ValueError:
        rate = math.nan
    # 0 and negative rates used to mean "unlimited" by accident: `none` says it.
    if not (rate > 0 and math.isfinite(rate)):
        raise click.BadParameter(
            f"expected records per second above 0, e.g. 500 or 500/s, or none; got {value!r}"
        )
    return rate


rate_option = click.option(
    "--rate",
    default=None,
    callback=parse_rate,
    metavar="N[/s]|none",
    help="At most N records per second (N above 0; default: no limit).",
)

REDRIVE_RATE = 100.0
"""The default ``dlq redrive --rate``. Redriven records reach the live
pipeline mixed with its own traffic; if they fail again (the fix is not
deployed yet, or does not cover them), the pipeline's dead-letter limit
(100 in a row, or 20% of the last 1,000 records, by default) stops it. At
100/s, 10,000 dead letters take 100 s: time to watch ``dlq show`` or the
lag and press Ctrl-C (the redrive resumes), and a pipeline with 400 healthy
records/s or more stays under 20% even if every redriven record fails."""

redrive_rate_option = click.option(
    "--rate",
    default=f"{REDRIVE_RATE:g}",
    callback=parse_rate,
    metavar="N[/s]|none",
    show_default=True,
    help="At most N records per second back into the live pipeline; none: no limit.",
)

NOTHING_DONE = 4
"""The exit code of a command that would act but was not confirmed: without
``--yes`` and with no terminal to ask on (a Job, a script, ``kubectl exec``
without ``-t``), or answered no. It only looked: nothing was written or
committed. Not 0, so a script cannot mistake the preview for the work."""

yes_option = click.option(
    "--yes",
    is_flag=True,
    help="Act without asking. Without it the command shows what it would do and asks "
    f"on a terminal; elsewhere it stops there, exit {NOTHING_DONE}.",
)


def _interactive() -> bool:
    """Whether there is someone to ask: the answer comes from stdin."""
    return sys.stdin.isatty()


def confirm(question: str, yes: bool) -> None:
    """Go on with ``--yes`` or a yes on the terminal; otherwise stop, exit :data:`NOTHING_DONE`.

    The caller has shown the preview already. The question and the line
    that says nothing was done go to stderr, with the preview.
    """
    if yes:
        return
    if not _interactive():
        click.echo("streamkit: nothing done: pass --yes to run it", err=True)
        sys.exit(NOTHING_DONE)
    try:
        agreed = click.confirm(question, default=False, err=True)
    except click.Abort:  # Ctrl-C or end of input at the prompt
        agreed = False
        click.echo("", err=True)
    if not agreed:
        click.echo("streamkit: nothing done", err=True)
        sys.exit(NOTHING_DONE)


guarantee_option = click.option(
    "--processing-guarantee",
    "guarantee",
    type=click.Choice(["at_least_once", "exactly_once"]),
    default=None,
    help="at_least_once or exactly_once (transactions, read_committed) for this run "
    "(default: the app's setting or STREAMKIT_PROCESSING_GUARANTEE).",
)


def time_ms(value: str | None, option: str) -> int | None:
    """An ISO-8601 time (UTC when it names no zone) in ms since the epoch; ``None`` passes."""
    if value is None:
        return None
    from datetime import UTC, datetime

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"expected an ISO-8601 time; got {value!r}", param_hint=option
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def parse_partitions(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> list[int] | None:
    """``--partitions 0,3``: partition numbers, sorted and without repeats."""
    if value is None:
        return None
    try:
        numbers = {int(part) for part in value.split(",")}
    except ValueError:
        numbers = set()
    if not numbers or min(numbers) < 0:
        raise click.BadParameter(
            f"expected partition numbers separated by commas, e.g. 0,3; got {value!r}"
        )
    return sorted(numbers)


def connect(config: AppConfig, timeout: float) -> AdminClient:
    """Send logs to stderr and wait for the cluster to answer; the admin client stays open.

    Raises:
        BrokerError: No answer within ``timeout`` seconds (one line, exit 1).
    """
    from streamkit.backends.kafka import create_admin, wait_for_broker
    from streamkit.logs import configure_logging

    configure_logging(config.log_format, config.log_level)  # logs to stderr, not stdout
    admin = create_admin(config)
    wait_for_broker(admin, config.brokers, timeout=timeout)
    return admin
