"""Turning ops reports into rich tables, JSON, and refreshing views.

Kept apart from the reports so that :mod:`streamkit.ops.lag` and
:mod:`streamkit.ops.describe` stay plain data that tests compare directly,
and apart from the CLI so that ``cli.py`` only wires options to calls.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from streamkit.errors import BrokerError
from streamkit.ops.describe import DescribeReport, TopicCheck
from streamkit.ops.lag import LagReport

_DASH = "-"


def to_json(document: dict[str, Any], *, compact: bool = False) -> str:
    """JSON text for ``--json``: indented for people, one line per document when watching."""
    if compact:
        return json.dumps(document, separators=(",", ":"))
    return json.dumps(document, indent=2)


def lag_table(report: LagReport) -> RenderableType:
    """The lag report as a table, with per-topic subtotals and a total row.

    A partition without a committed offset shows ``-``; so does one no live
    member owns.
    """
    state = report.state or "unknown to the coordinator"
    members = f"{report.members} member" + ("" if report.members == 1 else "s")
    title = f"group {report.group} ({state}, {members})"
    parts: list[RenderableType] = []
    if not report.partitions:
        what = "committed offsets" if not report.missing_topics else "partitions"
        parts.append(Text(f"{title}: no {what} to report"))
    else:
        table = Table(title=title, title_justify="left", show_footer=True)
        table.add_column("topic", footer="total")
        table.add_column("partition", justify="right")
        table.add_column("committed", justify="right")
        table.add_column("end", justify="right")
        table.add_column("lag", justify="right", footer=str(report.total_lag))
        table.add_column("owner")
        per_topic = report.topic_lag()
        for index, row in enumerate(report.partitions):
            last_of_topic = (
                index + 1 == len(report.partitions)
                or report.partitions[index + 1].topic != row.topic
            )
            table.add_row(
                row.topic,
                str(row.partition),
                _DASH if row.committed is None else str(row.committed),
                str(row.end),
                Text(str(row.lag), style="bold yellow" if row.lag else ""),
                _DASH if row.owner is None else str(row.owner),
                end_section=last_of_topic and len(per_topic) > 1,
            )
            if last_of_topic and len(per_topic) > 1:
                table.add_row(
                    Text(f"{row.topic} total", style="dim"),
                    "",
                    "",
                    "",
                    Text(str(per_topic[row.topic]), style="dim"),
                    "",
                    end_section=True,
                )
        parts.append(table)
        if any(p.committed is None for p in report.partitions):
            start = "log start" if report.reset == "earliest" else "end"
            parts.append(
                Text(f"no commit: lag counted from the {start} (auto.offset.reset={report.reset})")
            )
    for topic in report.missing_topics:
        parts.append(Text(f"topic {topic} does not exist", style="bold red"))
    return Group(*parts)


def describe_table(report: DescribeReport) -> RenderableType:
    """Declared topics against the cluster; disagreements in red, listed below.

    A topic short of replicas is ``under-replicated`` in red (it fails the
    check); one whose partitions are only short of in-sync replicas is
    ``under-replicated`` in yellow, with its smallest in-sync count in the
    ``in sync`` column.
    """
    expected = "broker default" if report.replication is None else str(report.replication)
    table = Table(
        title=f"topics of app {report.app} (replication setting: {expected})",
        title_justify="left",
    )
    table.add_column("topic")
    table.add_column("status")
    table.add_column("partitions", justify="right")
    table.add_column("replication", justify="right")
    table.add_column("in sync", justify="right")
    table.add_column("configs")
    for check in report.topics:
        differs = {m.setting for m in check.mismatches}
        observed = check.observed
        configs = Text()
        for key, value in check.shown_configs().items():
            if configs:
                configs.append("\n")
            configs.append(f"{key}={value}", style="bold red" if key in differs else "")
        short_in_sync = bool(observed and observed.under_replicated_partitions)
        table.add_row(
            check.name,
            _status(check),
            _cell(None if observed is None else observed.partitions, "partitions" in differs),
            _cell(
                None if observed is None else observed.replication,
                "replication" in differs or check.replication_short,
            ),
            _cell(None if observed is None else observed.in_sync, short_in_sync, "bold yellow"),
            configs,
        )
    problems = [
        Text(line, style="red" if not check.ok else "yellow")
        for check in report.topics
        for line in check.problems()
    ]
    return Group(table, *problems)


def _status(check: TopicCheck) -> Text:
    if check.observed is None:
        return Text("missing", style="bold red")
    words = []
    # A factor below the declared one is a mismatch too; "under-replicated" says more.
    if any(not (m.setting == "replication" and check.replication_short) for m in check.mismatches):
        words.append("mismatch")
    if check.under_replicated:
        words.append("under-replicated")
    if not words:
        return Text("ok", style="green")
    return Text("\n".join(words), style="bold red" if not check.ok else "bold yellow")


def _cell(value: int | None, differs: bool, style: str = "bold red") -> Text:
    return Text(_DASH if value is None else str(value), style=style if differs else "")


def repeat(
    tick: Callable[[], None],
    interval: float,
    *,
    stop: threading.Event | None = None,
    on_error: Callable[[BrokerError], None] | None = None,
) -> None:
    """Call ``tick`` now and every ``interval`` seconds until Ctrl-C or ``stop``.

    Ctrl-C is how a person ends ``--watch``, so it returns normally (the CLI
    exits 0) instead of propagating. A broker error in one tick is reported
    through ``on_error`` and the next tick tries again: a watch outlives a
    broker restart.
    """
    stop = stop or threading.Event()
    try:
        while True:
            try:
                tick()
            except BrokerError as exc:
                if on_error is None:
                    raise
                on_error(exc)
            if stop.wait(interval):
                return
    except KeyboardInterrupt:
        return


# How often a long command prints a progress line where it cannot draw a bar.
PROGRESS_LINE_EVERY_S = 5.0


class Every:
    """Says when ``seconds`` have passed since it last said so; the first ask is due.

    For progress lines where no bar can be drawn (a Job's log, ``kubectl exec``
    without ``-t``): a long command then shows it is alive, without a line
    per record.

    Args:
        seconds: The shortest time between two due answers.
        clock: Monotonic seconds (a fake one in tests).
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._seconds = seconds
        self._clock = clock
        self._last = -float("inf")

    def due(self) -> bool:
        """Whether a line is due now; if so, the next one is ``seconds`` away."""
        now = self._clock()
        if now - self._last < self._seconds:
            return False
        self._last = now
        return True


def console() -> Console:
    """The console the CLI prints tables to.

    Rich wraps to 80 columns when stdout is not a terminal; piped into a log
    or ``less``, a lag table with long topic names would then fold every row,
    so non-terminals get 200 columns (``COLUMNS`` still wins when set).
    """
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console()
    return Console(width=200)
