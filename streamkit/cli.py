"""The ``streamkit`` command: run workers and operate topics.

Errors a user can fix (a bad setting, a wrong declaration, a missing module)
print one line naming the problem and exit with status 2; no traceback wall.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from streamkit.app import App
from streamkit.errors import ConfigError, DeclarationError, StreamkitError

EXIT_USAGE = 2


def load_app(target: str) -> App:
    """Import ``module:attribute`` and return the :class:`App` it names.

    The current directory is put on ``sys.path`` first, so ``pipelines.orders:app``
    works from a project checkout without installing it.
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
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise click.BadParameter(f"{target} is {type(app).__name__}, not a streamkit App")
    return app


class _Group(click.Group):
    """Turns the errors a user can fix into one clear line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ConfigError, DeclarationError) as exc:
            click.echo(f"streamkit: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except StreamkitError as exc:
            click.echo(f"streamkit: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(package_name="streamkit")
def main() -> None:
    """streamkit: Kafka stream processing with agents."""


@main.command()
@click.argument("target", metavar="MODULE:APP")
@click.option("--agent", "agents", multiple=True, help="Run only this agent (repeatable).")
@click.option("--brokers", default=None, help="Bootstrap servers (default: STREAMKIT_BROKERS).")
def run(target: str, agents: tuple[str, ...], brokers: str | None) -> None:
    """Run the app's agents as one member of its consumer group.

    Stops cleanly on SIGTERM or SIGINT: in-flight records finish, the producer
    is flushed, offsets are committed, then the worker leaves the group.
    """
    app = load_app(target)
    sys.exit(app.run(agents=agents, brokers=brokers))


@main.group()
def topics() -> None:
    """Create and inspect the topics an app declares."""


@topics.command("create")
@click.argument("target", metavar="MODULE:APP")
@click.option("--brokers", default=None, help="Bootstrap servers (default: STREAMKIT_BROKERS).")
def topics_create(target: str, brokers: str | None) -> None:
    """Create every declared topic that does not exist yet (idempotent)."""
    from streamkit.backends.kafka import create_admin, ensure_topics, wait_for_broker

    app = load_app(target)
    config = app.config(brokers=brokers)
    admin = create_admin(config)
    wait_for_broker(admin, config.brokers, timeout=30)
    created = ensure_topics(admin, app.topics.values())
    for name in sorted(app.topics):
        click.echo(f"{name}: {'created' if name in created else 'exists'}")
