"""``streamkit tables``: read an app's tables from their changelogs (no worker needed).

Its own module to keep :mod:`streamkit.cli` under 600 lines; :mod:`streamkit.cli`
registers the group on ``main``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from streamkit.cli_params import broker_timeout, connect, guarantee_option, load_app


@click.group()
def tables() -> None:
    """Read an app's tables from their changelog topics (no worker needed)."""


@tables.command("get")
@click.argument("target", metavar="MODULE:APP")
@click.argument("table")
@click.argument("key")
@click.option("--brokers", default=None, help="Bootstrap servers (default: STREAMKIT_BROKERS).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@guarantee_option
@broker_timeout
def tables_get(
    target: str,
    table: str,
    key: str,
    brokers: str | None,
    as_json: bool,
    guarantee: str | None,
    timeout: float,
) -> None:
    """Print KEY's value in TABLE; exit 1 if the key has none.

    Reads the key's partition of the table's compacted changelog to its end
    (as a restore does), so it answers with no worker up, at the cost of
    reading that partition. A worker's GET /tables/TABLE/KEY answers faster
    for the keys it owns.
    """
    from streamkit.ops.tables import table_get

    app = load_app(target)
    overrides: dict[str, Any] = {"brokers": brokers}
    if guarantee is not None:
        overrides["processing_guarantee"] = guarantee
    config = app.config(**overrides)
    connect(config, timeout)
    found = table_get(app, config, table, key)
    if as_json:
        click.echo(json.dumps(found.to_json()))
    elif found.found:
        click.echo(json.dumps(found.value))
    else:
        click.echo(f"{table}: no value for key {key!r} (partition {found.partition})", err=True)
    sys.exit(0 if found.found else 1)
