"""``streamkit dlq``: inspect dead-letter topics and send their records back.

Its own module to keep :mod:`streamkit.cli` under 600 lines; :mod:`streamkit.cli`
registers the group on ``main``.
"""

from __future__ import annotations

import json

import click

from streamkit.cli_params import (
    broker_timeout,
    confirm,
    connect,
    guarantee_option,
    redrive_rate_option,
    time_ms,
    yes_option,
)
from streamkit.config import AppConfig


@click.group()
def dlq() -> None:
    """Inspect dead-letter topics and send their records back after a fix."""


def _ops_config(brokers: str | None, guarantee: str | None = None) -> AppConfig:
    """Settings for commands that take no app: STREAMKIT_* and pass-through properties apply."""
    return AppConfig.load("streamkit", {"brokers": brokers, "processing_guarantee": guarantee})


@dlq.command("show")
@click.argument("topic")
@click.option("--brokers", default=None, help="Bootstrap servers (default: STREAMKIT_BROKERS).")
@click.option("--samples", default=3, show_default=True, help="Sample records to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of tables.")
@click.option(
    "--no-values",
    is_flag=True,
    help="Samples without key, value or the record's own headers (topics with personal data).",
)
@broker_timeout
def dlq_show(
    topic: str, brokers: str | None, samples: int, as_json: bool, no_values: bool, timeout: float
) -> None:
    """Count a dead-letter topic's records by exception, agent and hour, with samples.

    The samples show each record's key and value, which may be personal
    data; --no-values leaves them out (and the record's own headers), and
    keeps what failed, where, and the exception's message.
    """
    from rich.console import Console
    from rich.table import Table

    from streamkit.ops.dlq import summarize

    config = _ops_config(brokers)
    connect(config, timeout)
    summary = summarize(config, topic, samples=samples, timeout=timeout)
    document = summary.as_json(values=not no_values)
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    console = Console()
    console.print(f"[bold]{topic}[/]: {summary.total:,} dead letters")
    for title, counts in (
        ("exception", summary.by_exception),
        ("agent", summary.by_agent),
        ("source topic", summary.by_source),
        ("hour (UTC)", dict(sorted(summary.by_hour.items()))),
    ):
        table = Table(title=f"by {title}", title_justify="left")
        table.add_column(title)
        table.add_column("records", justify="right")
        for name, count in counts.items():
            table.add_row(name, f"{count:,}")
        console.print(table)
    for sample in document["samples"]:
        data = "" if no_values else f"\n  key={sample['key']!r} value={sample['value']!r}"
        console.print(
            f"[bold]{sample['source']}[/] {sample['exception']} ({sample['stage']}): "
            f"{sample['message']}{data}"
        )


@dlq.command("redrive")
@click.argument("topic")
@click.option("--brokers", default=None, help="Bootstrap servers (default: STREAMKIT_BROKERS).")
@click.option("--exception", default=None, help="Only this exception type (e.g. TimeoutError).")
@click.option("--since", default=None, help="Only dead letters written at or after this ISO time.")
@click.option("--until", default=None, help="Only dead letters written before this ISO time.")
@redrive_rate_option
@click.option(
    "--max-redrives", default=3, show_default=True, help="Skip records sent back this often."
)
@yes_option
@click.option(
    "--dry-run",
    is_flag=True,
    help="Count what the same command would send now (from the same place); send nothing.",
)
@guarantee_option
@broker_timeout
def dlq_redrive(
    topic: str,
    brokers: str | None,
    exception: str | None,
    since: str | None,
    until: str | None,
    rate: float | None,
    max_redrives: int,
    yes: bool,
    dry_run: bool,
    guarantee: str | None,
    timeout: float,
) -> None:
    """Send dead letters back to the topic they came from (resumable).

    Each record goes back with its original key, value and headers and a
    streamkit.redrive.count header one higher; records sent back
    --max-redrives times already are skipped, so a record that keeps failing
    is not looped for ever. First it counts what it would send per target
    and asks (--yes: it does not ask; no terminal: it stops there, exit 4);
    then it sends those records, none that arrived since, at --rate.
    Progress is committed every 500 records sent: running the same command
    again after an interruption continues where it stopped, and sends again
    the up to 500 records sent since the last commit (with the same redrive
    count). Exactly once, each batch and its progress commit in one
    transaction, so none is sent twice. Without a terminal it prints a
    progress line to stderr every 5 s.
    """
    from rich.console import Console
    from rich.progress import Progress

    from streamkit.ops import render
    from streamkit.ops.dlq import RedriveFilter, RedriveResult, redrive

    selection = RedriveFilter(
        exception=exception,
        since_ms=time_ms(since, "--since"),
        until_ms=time_ms(until, "--until"),
        max_redrives=max_redrives,
    )
    config = _ops_config(brokers, guarantee)
    connect(config, timeout)

    read = [0]  # dead letters the last run read: the preview's is the real run's total

    def run(
        dry: bool, stop_at: dict[int, int] | None = None, total: int | None = None
    ) -> RedriveResult:
        # A bar on a terminal; elsewhere (a Job, `kubectl exec` without -t) a
        # line every few seconds, as replay prints, on stderr like the bar.
        console = Console(stderr=True)
        label = f"{'counting' if dry else 'redriving'} {topic}"
        of = "" if total is None else f" of {total:,}"
        every = render.Every(render.PROGRESS_LINE_EVERY_S)
        read[0] = 0
        with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task(label, total=total)

            def advance(n: int) -> None:
                read[0] += n
                bar.advance(task, n)
                if not console.is_terminal and every.due():
                    click.echo(f"{label}: {read[0]:,}{of} dead letters read", err=True)

            result = redrive(
                config,
                topic,
                selection,
                rate=rate,
                dry_run=dry,
                progress=advance,
                timeout=timeout,
                stop_at=stop_at,
            )
        verb = "would send" if dry else "sent"
        sent = sum(result.by_target.values()) if dry else result.sent
        click.echo(
            f"{topic}: {result.matched:,} matched, {verb} {sent:,}; skipped "
            f"{result.skipped_filter:,} by filter, {result.skipped_loop:,} at the redrive limit, "
            f"{result.already_sent:,} sent by an earlier filtered redrive"
        )
        for target, count in sorted(result.by_target.items()):
            click.echo(f"  -> {target}: {count:,}")
        return result

    if yes and not dry_run:
        run(dry=False)
        return
    preview = run(dry=True)
    if dry_run:
        return
    count = sum(preview.by_target.values())
    pace = f"at most {rate:g}/s, about {count / rate:,.0f} s" if rate else "no rate limit"
    confirm(f"Send these {count:,} dead letters back ({pace})?", yes)
    run(dry=False, stop_at=preview.ends, total=read[0])
