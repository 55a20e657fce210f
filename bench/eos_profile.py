"""Where an exactly-once worker's time goes: the checkpoint's steps, timed.

Runs the bench's exactly-once contender (``bench.contenders.streamkit_app``,
the ``def`` agent, ``processing_guarantee="exactly_once"``) on N records in a
child process whose streamkit has timers wrapped around each step of the
transactional checkpoint (``streamkit.runtime.checkpoint``): releasing the
held records (``produce()``), the flush, ``send_offsets_to_transaction`` and
``commit_transaction`` (executor thread), and the whole checkpoint, during
which the producer gate is held and no record starts. Nothing in streamkit
is changed; the wrappers only read the clock.

Usage: python -m bench.eos_profile [N]     (default 200,000)
Environment: BENCH_BROKERS (else a LocalKafka), and any STREAMKIT_* setting
for the worker (``STREAMKIT_COMMIT_INTERVAL=1.0``...). ``BENCH_CPROFILE=PATH``
also writes a cProfile of the worker's main thread (the event loop: agents
and checkpoints) to PATH and prints its top functions.

The "a partition waits for room" rows add up over the 6 partitions (each
waits on its own), so their total can pass the wall time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from bench.broker import bench_broker, stop
from bench.quick import fill
from bench.run import ROOT, CommittedCount
from streamkit.backends.kafka import ensure_topics
from streamkit.topics import Topic

PARTITIONS = 6


def child(stats_path: str) -> None:
    """The worker, with timers around the checkpoint's steps; stats go to ``stats_path``."""
    from bench import contenders
    from streamkit.runtime import checkpoint as cp
    from streamkit.runtime import transaction as tx

    times: dict[str, list[float]] = defaultdict(list)
    marks: list[tuple[float, float, int]] = []  # (start, end, records) per checkpoint

    release = cp.release

    def timed_release(tickets: Any, *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return release(tickets, *args)
        finally:
            times["release (produce held records)"].append(time.perf_counter() - t0)

    cp.release = timed_release  # type: ignore[assignment]

    commit = cp.TransactionalCheckpoints._commit
    flush = cp.TransactionalCheckpoints._flush

    async def timed_commit(self: Any, reason: str, deadline: float) -> bool:
        records = sum(
            len(w.offsets.finished_run()) for w in self._host.workers.values() if not w.discarded
        )
        t0 = time.perf_counter()
        try:
            return await commit(self, reason, deadline)
        finally:
            marks.append((t0, time.perf_counter(), records))

    async def timed_flush(self: Any, deadline: float) -> bool:
        t0 = time.perf_counter()
        try:
            return await flush(self, deadline)
        finally:
            times["flush (acks of the released records)"].append(time.perf_counter() - t0)

    cp.TransactionalCheckpoints._commit = timed_commit  # type: ignore[method-assign]
    cp.TransactionalCheckpoints._flush = timed_flush  # type: ignore[method-assign]

    retrying = tx.Transactions._retrying
    tx_commit = tx.Transactions.commit

    def timed_retrying(self: Any, call: Any, deadline: float, what: str, **kw: Any) -> None:
        t0 = time.perf_counter()
        try:
            retrying(self, call, deadline, what, **kw)
        finally:
            times[what].append(time.perf_counter() - t0)

    def timed_tx_commit(self: Any, offsets: Any, deadline: float) -> None:
        times["executor: queued before commit starts"].append(
            time.perf_counter() - getattr(self, "_bench_submitted", time.perf_counter())
        )
        tx_commit(self, offsets, deadline)

    # Why a partition starts nothing: the checkpoint holds the gate, or its
    # tickets (held records included) reached max_in_flight.
    from streamkit.runtime import partition as pw

    wait_for_room = pw.PartitionWorker._wait_for_room

    async def timed_wait_for_room(self: Any) -> None:
        capped = self.offsets.in_flight >= self._max_in_flight
        t0 = time.perf_counter()
        try:
            await wait_for_room(self)
        finally:
            what = "in-flight cap (held records)" if capped else "the checkpoint holds the gate"
            times[f"a partition waits for room: {what}"].append(time.perf_counter() - t0)

    pw.PartitionWorker._wait_for_room = timed_wait_for_room  # type: ignore[method-assign]
    tx.Transactions._retrying = timed_retrying  # type: ignore[method-assign]
    tx.Transactions.commit = timed_tx_commit  # type: ignore[method-assign]

    # The executor hand-off: stamp the submit time on the Transactions object.
    run_in_executor = asyncio.BaseEventLoop.run_in_executor

    def stamped(self: Any, executor: Any, func: Any, *args: Any) -> Any:
        owner = getattr(func, "__self__", None)
        if isinstance(owner, tx.Transactions):
            owner._bench_submitted = time.perf_counter()  # type: ignore[attr-defined]
        return run_in_executor(self, executor, func, *args)

    asyncio.BaseEventLoop.run_in_executor = stamped  # type: ignore[method-assign]

    env = os.environ
    app = contenders.streamkit_app(env["BENCH_IN"], env["BENCH_OUT"], env["BENCH_GROUP"], False)
    started = time.perf_counter()
    profile_path = env.get("BENCH_CPROFILE")
    run = {
        "brokers": env["BENCH_BROKERS"],
        "create_topics": False,
        "log_format": "json",
        "log_level": "warning",
        "processing_guarantee": "exactly_once",
    }
    if profile_path:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        app.run(**run)
        profiler.disable()
        profiler.dump_stats(profile_path)
    else:
        app.run(**run)
    Path(stats_path).write_text(
        json.dumps({"started": started, "times": times, "marks": marks}) + "\n"
    )


def summary(stats: dict[str, Any], first_at: float, done_at: float) -> str:
    """Phase table over the checkpoints that ran while records flowed."""
    marks = [m for m in stats["marks"] if first_at <= m[0] <= done_at]
    if not marks:
        return "no checkpoint between the first and the last record"
    window = done_at - first_at
    held = sum(end - start for start, end, _ in marks)
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(marks)]
    lines = [
        f"{len(marks)} checkpoints in {window:.2f} s of processing; the gate was held "
        f"{held:.2f} s ({held / window:.0%} of the time)",
        f"records per checkpoint: median {statistics.median(m[2] for m in marks):,.0f}",
        "",
        "| step | count | median ms | p90 ms | total s |",
        "|---|---:|---:|---:|---:|",
    ]

    def row(name: str, values: list[float]) -> None:
        if not values:
            return
        ordered = sorted(values)
        p90 = ordered[min(int(len(ordered) * 0.9), len(ordered) - 1)]
        lines.append(
            f"| {name} | {len(values)} | {statistics.median(values) * 1e3:.1f} "
            f"| {p90 * 1e3:.1f} | {sum(values):.2f} |"
        )

    row("whole checkpoint (gate held)", [end - start for start, end, _ in marks])
    for name, values in stats["times"].items():
        row(name, values)
    row("between checkpoints (agents run)", gaps)
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    with bench_broker(os.environ.get("BENCH_BROKERS")) as (bootstrap, _):
        admin = AdminClient({"bootstrap.servers": bootstrap})
        run_id = uuid.uuid4().hex[:6]
        source, sink = f"bench-eosprof-{run_id}", f"bench-eosprof-{run_id}-out"
        ensure_topics(admin, [Topic(t, partitions=PARTITIONS) for t in (source, sink)])
        fill(bootstrap, source, n)
        counter = CommittedCount(bootstrap, sink)
        stats_file = Path(tempfile.mkstemp(suffix=".json")[1])
        env = {
            **os.environ,
            "BENCH_BROKERS": bootstrap,
            "BENCH_IN": source,
            "BENCH_OUT": sink,
            "BENCH_GROUP": f"bench-eosprof-{run_id}",
            "PYTHONPATH": str(ROOT),
        }
        popen = subprocess.Popen(
            [sys.executable, "-m", "bench.eos_profile", "--child", str(stats_file)],
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        first_at = done_at = None
        started = time.perf_counter()
        try:
            while (seen := counter()) < n:
                if seen and first_at is None:
                    first_at = time.perf_counter()
                if popen.poll() is not None or time.perf_counter() - started > 300:
                    raise SystemExit(f"worker stopped or timed out at {seen:,}/{n:,}")
                time.sleep(0.02)
            done_at = time.perf_counter()
        finally:
            stop(popen)  # SIGTERM, as the bench does: the worker drains and writes its stats
            counter.close()
            admin.delete_topics([source, sink])
            del admin
    stats = json.loads(stats_file.read_text())
    stats_file.unlink()
    assert first_at is not None and done_at is not None
    print(f"{n:,} records, {n / (done_at - started):,.0f} records/s end to end (read_committed)")
    print(summary(stats, first_at, done_at))
    profile_path = os.environ.get("BENCH_CPROFILE")
    if profile_path:
        import pstats

        print()
        pstats.Stats(profile_path).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
