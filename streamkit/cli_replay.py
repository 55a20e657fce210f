"""What ``streamkit replay`` prints: the preview it asks about, progress, and the summary.

The command itself (its options, the checks, the order of the steps) is in
:mod:`streamkit.cli`; everything here only renders to the console it is
given (stderr, so stdout stays free for scripts).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from streamkit.ops.replay import ReplayResult
from streamkit.types import TopicPartition

Ranges = Mapping[TopicPartition, tuple[int, int]]


def print_preview(
    console: Console,
    title: str,
    ranges: Ranges,
    todo: Ranges,
    writable: Iterable[str],
    redirect: Mapping[str, str],
) -> int:
    """The range per partition and where each output goes; returns the records still to do.

    ``writable``: the topics the agent writes to (outputs, then dead letters),
    each shown redirected or as a LIVE topic.
    """
    table = Table(title=title, title_justify="left")
    for column in ("partition", "from", "to", "records", "to do"):
        table.add_column(column, justify="right")
    for tp, (first, last) in sorted(ranges.items()):
        table.add_row(
            str(tp), str(first), str(last), f"{last - first:,}", f"{last - todo[tp][0]:,}"
        )
    console.print(table)
    writes = [
        f"{name} -> {redirect[name]} (redirected)" if name in redirect else f"{name} (LIVE topic)"
        for name in writable
    ]
    # Not wrapped at the console width (80 in a Job's log): one topic a line, greppable.
    console.print(
        "writes to:" if writes else "writes to no topic",
        *writes,
        sep="\n  ",
        soft_wrap=True,
        markup=False,
        highlight=False,
    )
    return sum(last - todo[tp][0] for tp, (_, last) in ranges.items())


def run_with_progress(
    console: Console,
    label: str,
    ranges: Ranges,
    todo: Ranges,
    run: Callable[[Callable[[dict[TopicPartition, int]], None]], ReplayResult],
) -> ReplayResult:
    """Call ``run(on_progress)``: a bar per partition on a terminal, a line every 5 s elsewhere."""
    tty = console.is_terminal
    last_line = [0.0]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TimeRemainingColumn(),
        console=console,
        disable=not tty,
    ) as bar:
        tasks: dict[TopicPartition, TaskID] = {
            tp: bar.add_task(str(tp), total=last - first, completed=todo[tp][0] - first)
            for tp, (first, last) in sorted(ranges.items())
        }

        def show(done: dict[TopicPartition, int]) -> None:
            for tp, position in done.items():
                bar.update(tasks[tp], completed=position - ranges[tp][0])
            if not tty and time.monotonic() - last_line[0] >= 5:
                last_line[0] = time.monotonic()
                left = sum(ranges[tp][1] - p for tp, p in done.items())
                console.print(f"{label}: {left:,} records to go")

        return run(show)


def print_summary(console: Console, result: ReplayResult) -> None:
    """Records processed, dead-lettered, time, rate, and whether the range is done."""
    summary = Table(title="replay summary", title_justify="left")
    for column in ("records processed", "dead-lettered", "seconds", "records/s", "complete"):
        summary.add_column(column, justify="right")
    summary.add_row(
        f"{result.processed:,}",
        f"{result.dead_lettered:,}",
        f"{result.seconds:.1f}",
        f"{result.processed / max(result.seconds, 1e-9):,.0f}",
        "yes" if result.complete else "no (run again to resume)",
    )
    console.print(summary)
