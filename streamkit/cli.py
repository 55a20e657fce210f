"""The ``streamkit`` command: run workers and operate topics.

Errors a user can fix (a bad setting, a wrong declaration, a missing module)
print one line naming the problem and exit with status 2; no traceback wall.
A broker that does not answer within ``--timeout`` seconds (30 by default)
is one line too, with status 1.

The ``dlq`` and ``tables`` groups live in :mod:`streamkit.cli_dlq` and
:mod:`streamkit.cli_tables`, registered on ``main`` at the bottom of this module.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from streamkit.cli_dlq import dlq
from streamkit.cli_params import (
    Seconds,
    broker_timeout,
    confirm,
    connect,
    guarantee_option,
    load_app,
    parse_partitions,
    rate_option,
    yes_option,
)
from streamkit.cli_tables import tables
from streamkit.config import AppConfig
from streamkit.errors import ConfigError, DeclarationError, StreamkitError

EXIT_USAGE = 2


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
@click.option(
    "--http-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve /livez, /readyz and /metrics on this port "
    "(default: STREAMKIT_HTTP_PORT; off when unset).",
)
@click.option(
    "--processes",
    default=None,
    metavar="N|auto",
    help="Worker processes in the group, under one supervisor; auto: the usable cores "
    "(default: STREAMKIT_PROCESSES, else 1).",
)
@guarantee_option
def run(
    target: str,
    agents: tuple[str, ...],
    brokers: str | None,
    http_port: int | None,
    processes: str | None,
    guarantee: str | None,
) -> None:
    """Run the app's agents as one member of its consumer group.

    Stops cleanly on SIGTERM or SIGINT: in-flight records finish, the producer
    is flushed, offsets are committed, then the worker leaves the group; a
    static member (STREAMKIT_GROUP_INSTANCE_ID) stays in it until its session
    times out, so a restart within that time gets its partitions back
    without a rebalance.
    With --http-port, probes and Prometheus metrics are served on
    STREAMKIT_HTTP_HOST (127.0.0.1 unless set).
    With --processes N, a supervisor runs N such workers, restarts one that
    crashes, forwards SIGTERM to all, and serves one endpoint for them.
    """
    from streamkit.processes import run_command

    app = load_app(target)
    overrides = {
        "brokers": brokers,
        "http_port": http_port,
        "processing_guarantee": guarantee,
        "processes": processes,
    }
    sys.exit(run_command(app, target, agents, overrides))


@main.group()
def topics() -> None:
    """Create and inspect the topics an app declares."""


@topics.command("create")
@click.argument("target", metavar="MODULE:APP")
@click.option("--brokers", default=None, help="Bootstrap servers (default: STREAMKIT_BROKERS).")
@broker_timeout
def topics_create(target: str, brokers: str | None, timeout: float) -> None:
    """Create every declared topic that does not exist yet (idempotent).

    A topic that declares no replication gets STREAMKIT_REPLICATION, or the
    broker's default.replication.factor when that is unset.
    """
    from streamkit.backends.kafka import ensure_topics
    from streamkit.runtime.changelogs import ensure_changelogs
    from streamkit.runtime.run import sized_like_sources

    app = load_app(target)
    config = app.config(brokers=brokers)
    admin = connect(config, timeout)
    # Changelogs after their sources: they take the source's actual count.
    changelogs = {t.changelog_name for t in app.tables.values()}
    plain = {n: t for n, t in app.topics.items() if n not in changelogs}
    created = ensure_topics(
        admin,
        [t for n, t in plain.items() if n not in app.repartitions],
        replication=config.replication,
    )
    # Repartition topics after theirs, for the same reason.
    moved = {n: t for n, t in plain.items() if n in app.repartitions}
    created += ensure_topics(
        admin, sized_like_sources(admin, moved, app.repartitions), replication=config.replication
    )
    created += ensure_changelogs(
        admin, list(app.agents.values()), create=True, replication=config.replication
    )
    for name in sorted(app.topics):
        click.echo(f"{name}: {'created' if name in created else 'exists'}")


@topics.command("describe")
@click.argument("target", metavar="MODULE:APP")
@click.option("--brokers", default=None, help="Bootstrap servers (default: STREAMKIT_BROKERS).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")
@broker_timeout
def topics_describe(target: str, brokers: str | None, as_json: bool, timeout: float) -> None:
    """Compare every declared topic with the cluster; exit 1 on any difference.

    Shows partitions, replication, retention.ms, cleanup.policy and every
    declared config. A missing topic, or one whose partition count,
    replication or declared configs differ from the declaration, or that has
    fewer replicas than STREAMKIT_REPLICATION, is flagged and makes the exit
    status 1, so CI can run it before a deploy. Partitions with fewer
    in-sync replicas than replicas are flagged as under-replicated but keep
    the status 0: that is the brokers' health, not drift.
    """
    from streamkit.ops import render
    from streamkit.ops.describe import check_topics, fetch_observed

    app = load_app(target)
    config = app.config(brokers=brokers)
    admin = connect(config, timeout)
    observed = fetch_observed(admin, app.topics)
    report = check_topics(app.name, app.topics.values(), observed, replication=config.replication)
    if as_json:
        click.echo(render.to_json(report.to_json()))
    else:
        render.console().print(render.describe_table(report))
    sys.exit(0 if report.ok else 1)


@main.command()
@click.argument("target", metavar="[MODULE:APP]", required=False)
@click.option("--group", default=None, help="Consumer group (default: the app's group id).")
@click.option("--brokers", default=None, help="Bootstrap servers (default: STREAMKIT_BROKERS).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")
@click.option(
    "--watch",
    type=Seconds(),
    is_flag=False,
    flag_value=2.0,
    default=None,
    metavar="[SECONDS]",
    help="Refresh every SECONDS (default 2) until Ctrl-C.",
)
@broker_timeout
def lag(
    target: str | None,
    group: str | None,
    brokers: str | None,
    as_json: bool,
    watch: float | None,
    timeout: float,
) -> None:
    """Show a consumer group's committed offset, end offset, lag and owner per partition.

    With MODULE:APP: every topic the app's agents read (sources and retry
    tiers), for the app's group (or --group). With --group alone: every topic the group has
    committed offsets for. A partition without a commit counts its lag from
    the log start offset, where auto.offset.reset=earliest (the default)
    makes the group begin.
    """
    from streamkit.backends.kafka import create_consumer
    from streamkit.ops import render
    from streamkit.ops.lag import LagReport, fetch_lag_report, reset_policy
    from streamkit.ops.topology import build_graph, consumed_topics

    if target is None and group is None:
        raise click.UsageError("give MODULE:APP, or --group NAME")
    topic_names: list[str] | None = None
    if target is not None:
        app = load_app(target)
        config = app.config(brokers=brokers, group_id=group)
        app.select()  # an app without agents has no lag to show: say so
        topic_names = list(consumed_topics(build_graph(app)))
    else:
        config = AppConfig.load("streamkit", {"brokers": brokers, "group_id": group})
    reset = reset_policy(config.librdkafka("consumer")["auto.offset.reset"])
    admin = connect(config, timeout)
    # Reads committed offsets only: it never subscribes, so it never joins the group.
    consumer = create_consumer(config)

    def fetch() -> LagReport:
        return fetch_lag_report(admin, consumer, config.group_id, topic_names, reset=reset)

    def warn(exc: StreamkitError) -> None:
        click.echo(f"streamkit: {exc}", err=True)

    console = render.console()
    try:
        if watch is None:
            report = fetch()
            if as_json:
                click.echo(render.to_json(report.to_json()))
            else:
                console.print(render.lag_table(report))
        elif as_json:
            # One compact document per refresh: JSON Lines, for `| jq` and scripts.
            render.repeat(
                lambda: click.echo(render.to_json(fetch().to_json(), compact=True)),
                watch,
                on_error=warn,
            )
        elif console.is_terminal:
            from rich.live import Live

            with Live(console=console, auto_refresh=False) as live:
                render.repeat(
                    lambda: live.update(render.lag_table(fetch()), refresh=True),
                    watch,
                    on_error=warn,
                )
        else:
            render.repeat(lambda: console.print(render.lag_table(fetch())), watch, on_error=warn)
    finally:
        consumer.close()


@main.command()
@click.argument("target", metavar="MODULE:APP")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot"]),
    default="mermaid",
    show_default=True,
    help="Mermaid (renders in GitHub markdown) or Graphviz DOT.",
)
def graph(target: str, fmt: str) -> None:
    """Print the pipeline: topics (with serdes), agents, and their edges.

    Needs no broker. The output is sorted, so it is stable enough to commit
    to docs and diff in review.
    """
    from streamkit.ops.topology import build_graph, render_dot, render_mermaid

    rendered = build_graph(load_app(target))
    click.echo(render_dot(rendered) if fmt == "dot" else render_mermaid(rendered), nl=False)


@main.command()
@click.argument("target", metavar="MODULE:APP")
@click.option("--agent", "agent_name", required=True, help="The agent to replay.")
@click.option(
    "--from",
    "start",
    default=None,
    help="ISO time, OFFSET (offset:N), or P:OFFSET,... (default: log start).",
)
@click.option(
    "--to",
    "end",
    default=None,
    help="ISO time, OFFSET (offset:N), or P:OFFSET,... (default: log end now).",
)
@click.option(
    "--whole-topic",
    is_flag=True,
    help="Replay every retained record: needed when neither --from nor --to is given.",
)
@click.option(
    "--partitions", default=None, callback=parse_partitions, help="Only these partitions, e.g. 0,3."
)
@click.option(
    "--redirect", multiple=True, help="Send emits for SRC to DST instead (SRC=DST, repeatable)."
)
@click.option(
    "--to-live-topics",
    is_flag=True,
    help="Emit to the agent's live output topics: needed for any output not moved by --redirect.",
)
@click.option(
    "--group",
    default=None,
    help="Consumer group (default: derived from the app and these arguments); not the live one.",
)
@rate_option
@yes_option
@click.option("--dry-run", is_flag=True, help="Show what a run would do, then exit 0.")
@click.option("--brokers", default=None, help="Bootstrap servers (default: STREAMKIT_BROKERS).")
@guarantee_option
@broker_timeout
def replay(
    target: str,
    agent_name: str,
    start: str | None,
    end: str | None,
    whole_topic: bool,
    partitions: list[int] | None,
    redirect: tuple[str, ...],
    to_live_topics: bool,
    group: str | None,
    rate: float | None,
    yes: bool,
    dry_run: bool,
    brokers: str | None,
    guarantee: str | None,
    timeout: float,
) -> None:
    """Replay one agent over a time or offset range, in its own consumer group.

    The live group keeps running. End offsets are fixed at start, so the
    replay finishes while producers keep writing. First it shows the range
    per partition and where each output goes, and asks (--yes: it does not
    ask; no terminal: it stops there, exit 4). Emitting to a live output
    topic needs --to-live-topics, and a replay without --from or --to
    (every retained record) needs --whole-topic. SIGTERM or Ctrl-C commits
    what finished and exits 3 (interrupted: run the same command again to
    resume); 0 means the whole range is done.
    """
    from rich.console import Console

    from streamkit.backends.kafka import create_consumer
    from streamkit.cli_replay import print_preview, print_summary, run_with_progress
    from streamkit.ops.replay import (
        check_order,
        check_redirect,
        fixed_ranges,
        live_outputs,
        outputs,
        parse_point,
        range_group,
        refuse_busy_group,
        refuse_live_group,
        replay_group,
        replay_key,
        resolve_ranges,
        resume_from,
        run_replay,
        store_ranges,
        stored_ranges,
    )

    app = load_app(target)
    [agent] = app.select([agent_name])
    moves = {}
    for spec in redirect:
        src, sep, dst = spec.partition("=")
        if not sep or not src or not dst:
            raise ConfigError("--redirect", f"expected SRC=DST; got {spec!r}")
        moves[src] = dst
    config = app.config(brokers=brokers, processing_guarantee=guarantee)
    if group is not None:
        refuse_live_group(group, config.group_id)
    writable = outputs(app, agent)
    check_redirect(agent, writable, moves)
    live = live_outputs(app, agent, moves)
    # Refused before connecting: one missing option must not replay seven
    # days into a live topic. A dry run only looks, so it needs neither.
    needed: dict[str, str] = {}
    if live and not to_live_topics:
        needed["--to-live-topics"] = (
            f"it would emit to the live topic(s) {', '.join(live)}: pass --to-live-topics "
            f"to mean it, or --redirect {live[0]}=DST"
        )
    if start is None and end is None and not whole_topic:
        needed["--whole-topic"] = (
            "without --from or --to it replays every retained record: pass --whole-topic "
            "to mean it, or give --from/--to"
        )
    if needed and not dry_run:
        raise click.UsageError("; ".join(needed.values()))
    admin = connect(config, timeout)
    probe = create_consumer(config)
    first_point = parse_point(start, "--from") if start else None
    end_point = parse_point(end, "--to") if end else None
    check_order(first_point, end_point)
    try:
        resolved = resolve_ranges(
            probe, agent.source.name, first_point, end_point, partitions, timeout=timeout
        )
    finally:
        probe.close()
    key = replay_key(agent.name, first_point, end_point, partitions, moves)
    group_id = group or replay_group(app, agent.name, key)
    refuse_busy_group(admin, group_id, timeout=timeout)
    # The range fixed by the first run with these arguments, if any: a rerun
    # resumes that window even after producers wrote or retention deleted.
    keeper_config = app.config(brokers=brokers, group_id=range_group(group_id))
    keeper = create_consumer(keeper_config)
    try:
        stored = stored_ranges(keeper, sorted(resolved), timeout=timeout)
    finally:
        keeper.close()
    ranges = fixed_ranges(resolved, stored, key, group_id)
    probe = create_consumer(app.config(brokers=brokers, group_id=group_id))
    try:
        todo = resume_from(probe, ranges, timeout=timeout, own=stored)
    finally:
        probe.close()
    console = Console(stderr=True)
    title = f"replay {agent.name}: {agent.source.name} in group {group_id}"
    left = print_preview(console, title, ranges, todo, writable, moves)
    for flag in needed:  # a dry run: say what the real run needs
        console.print(f"a run needs {flag}", soft_wrap=True)
    if dry_run:
        return
    question = f"Replay {left:,} records"
    if start is None and end is None:
        question += " (every retained record)"
    if live:
        question += f", emitting to the LIVE topic(s) {', '.join(live)}"
    confirm(question + "?", yes)
    new = {tp: r for tp, r in ranges.items() if tp not in stored}
    if new:
        keeper = create_consumer(keeper_config)
        try:
            store_ranges(keeper, new, key, timeout)
        finally:
            keeper.close()
    result = run_with_progress(
        console,
        f"replay {agent.name}",
        ranges,
        todo,
        lambda show: run_replay(
            app,
            agent.name,
            todo,
            group_id,
            moves,
            rate=rate,
            on_progress=show,
            brokers=brokers,
            processing_guarantee=guarantee,
        ),
    )
    print_summary(console, result)
    sys.exit(result.exit_code)


main.add_command(dlq)
main.add_command(tables)
