"""Memory of a worker whose async agent hangs on one record while records keep arriving.

The worker is the integration tests' configurable pipeline (``python -m
streamkit run tests.integration.apps.configurable:app``) with an ``async
def`` agent at ``concurrency=8`` that awaits forever on record 0, the head
of a 1-partition input topic. Records keep arriving at a steady rate (by
default 200,000 records of about 1 KB over 30 s) and the worker's RSS is
sampled every 0.5 s, next to the records it has emitted so far (the output
topic's high watermark).

Nothing behind the hung head can be committed. Since f05ad84, records
started but not committable count against ``max_buffered_records``, and one
partition holds at most a quarter of it (``_IN_FLIGHT_SHARE`` in
streamkit/runtime/worker.py): the partition stops at 2,500 records and RSS
stays flat. Before, every finished record behind the head was kept with its
input message, and RSS grew with every record that arrived.

``--compare REV`` runs the same against REV (say 4d2152b, the commit before
the fix), checked out with ``git worktree add`` in a temporary directory and
removed afterwards, so the two growths come from one run on one machine.

Record 0 has a key of its own: a record waits (holding one of the 8 slots)
for the previous record with its key, so records sharing the hung record's
key would fill every slot and stall both revisions alike.

Every sample goes to bench/results/memory_hung.csv.tmp and each worker's
log to bench/results/memory_hung-<revision>.log.tmp (git-ignored); a run
whose log shows a rebalance, a warning or a stop is flagged.

Usage: python -m bench.memory_hung [--compare REV] [--records N] [--seconds S]
Environment: BENCH_BROKERS (use this broker instead of starting a LocalKafka)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.broker import bench_broker, stop
from streamkit.backends.kafka import ensure_topics
from streamkit.topics import Topic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"  # *.tmp there is git-ignored
CSV = RESULTS / "memory_hung.csv.tmp"
APP = "tests.integration.apps.configurable:app"
KEYS = 97  # as tests/integration/helpers.py:keyed_records
PAD = "x" * 1000  # brings a record to about 1 KB
SAMPLE_S = 0.5
PRINT_EVERY = 10  # samples between printed rows (5 s)


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at the worker: seconds since it started, its RSS, records it emitted."""

    t: float
    rss_mb: float
    emitted: int


@dataclass(frozen=True, slots=True)
class Run:
    """What one revision did: the samples, and its group and lifecycle log lines."""

    samples: list[Sample]
    events: list[str]


@dataclass(frozen=True, slots=True)
class Tree:
    """Where a revision's code is imported from, and what to call it."""

    label: str
    path: Path


def value(i: int) -> bytes:
    """Record ``i``: ``{"id": i, "n": ...}`` as keyed_records makes it, plus padding."""
    n = 0 if i == 0 else (i - 1) // KEYS  # counts up per key
    return orjson.dumps({"id": i, "n": n, "pad": PAD})


def key(i: int) -> bytes:
    return b"hung" if i == 0 else f"k{(i - 1) % KEYS}".encode()


def send(producer: Producer, topic: str, i: int) -> None:
    while True:
        try:
            producer.produce(topic, value(i), key(i))
            return
        except BufferError:
            producer.poll(0.05)


def emitted(probe: Consumer, topic: str, last: int) -> int:
    try:
        return int(probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=2)[1])
    except Exception:
        return last  # the leader still settling right after creation


def rss_mb(pid: int) -> float:
    """Resident set size from ``/proc/<pid>/status`` (``VmRSS``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def events(log: Path) -> list[str]:
    """The worker's group, lifecycle, warning and error lines (a steady run has one)."""
    found = []
    for line in log.read_bytes().splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(entry, dict):
            continue
        event = str(entry.get("event", ""))
        if event.startswith(("partitions ", "stopp")) or entry.get("level") in {"warning", "error"}:
            found.append(event)
    return found


def tail(log: Path, lines: int = 3) -> str:
    text = log.read_text(errors="replace").strip().splitlines()
    return " | ".join(line[:200] for line in text[-lines:]) or "no output"


def imported_from(tree: Tree, env: dict[str, str]) -> Path:
    """Where the worker's interpreter finds streamkit, given its env and cwd."""
    out = subprocess.run(
        [sys.executable, "-c", "import streamkit; print(streamkit.__file__)"],
        env=env,
        cwd=tree.path,
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip()).resolve().parents[1]


def run(bootstrap: str, tree: Tree, records: int, seconds: float) -> Run:
    """Start a worker on fresh topics, feed it for ``seconds`` and sample it."""
    name = f"bench-hung-{uuid.uuid4().hex[:8]}"
    source, sink = f"{name}-in", f"{name}-out"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    ensure_topics(admin, [Topic(source, partitions=1), Topic(sink, partitions=1)])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMKIT_", "TEST_"))}
    env.update(
        PYTHONPATH=str(tree.path),
        TEST_APP=name,
        TEST_IN=source,
        TEST_OUT=sink,
        TEST_CONCURRENCY="8",
        TEST_STUCK_ID="0",
        STREAMKIT_BROKERS=bootstrap,
        STREAMKIT_GROUP_ID=name,
        STREAMKIT_LOG_FORMAT="json",
        # Record 0 never finishes: do not wait the default 30 s for it on SIGTERM.
        STREAMKIT_SHUTDOWN_TIMEOUT="2",
    )
    found = imported_from(tree, env)
    if found != tree.path.resolve():
        raise RuntimeError(f"{tree.label}: streamkit imports from {found}, not {tree.path}")
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{name}-probe"})
    send(producer, source, 0)  # the hung record is the partition's head
    if producer.flush(30):
        raise RuntimeError("record 0 was not acknowledged within 30 s")
    rate = (records - 1) / seconds
    log = RESULTS / f"memory_hung-{tree.label}.log.tmp"
    samples: list[Sample] = []
    popen: subprocess.Popen[bytes] | None = None
    with log.open("wb") as out:
        try:
            popen = subprocess.Popen(
                [sys.executable, "-m", "streamkit", "run", APP],
                env=env,
                cwd=tree.path,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches only this script, which stops it
            )
            started = time.monotonic()
            sent, tick = 1, 0
            while True:
                now = time.monotonic() - started
                due = min(records, 1 + int(rate * now))
                for i in range(sent, due):
                    send(producer, source, i)
                sent = due
                producer.poll(0)
                if popen.poll() is not None:
                    raise RuntimeError(f"{tree.label}: worker exited: {tail(log)}")
                last = samples[-1].emitted if samples else 0
                samples.append(Sample(now, rss_mb(popen.pid), emitted(probe, sink, last)))
                if tick % PRINT_EVERY == 0:
                    s = samples[-1]
                    print(
                        f"  {s.t:5.1f} s {s.rss_mb:7.1f} MB {s.emitted:9,} emitted {sent:9,} sent",
                        flush=True,
                    )
                tick += 1
                if now >= seconds:
                    break
                time.sleep(max(0.0, started + tick * SAMPLE_S - time.monotonic()))
            if popen.poll() is not None:
                raise RuntimeError(f"{tree.label}: worker exited: {tail(log)}")
            out.flush()
            seen = events(log)  # before SIGTERM: a "stopping" here was not ours
        finally:
            if popen is not None:
                stop(popen)
            producer.flush(10)
            probe.close()
            admin.delete_topics([source, sink])
    return Run(samples, seen)


def near(samples: list[Sample], t: float) -> float:
    """Median RSS of the three samples nearest ``t`` (one sample is too noisy to subtract)."""
    closest = sorted(samples, key=lambda s: abs(s.t - t))[:3]
    return statistics.median(s.rss_mb for s in closest)


def growth(samples: list[Sample]) -> tuple[float, float, float]:
    """RSS at the middle and at the end of the run, and the growth between them, in MB."""
    end = samples[-1].t
    mid, last = near(samples, end / 2), near(samples, end)
    return mid, last, last - mid


def table(runs: dict[str, list[Sample]]) -> str:
    """Every PRINT_EVERY-th sample and the last, the revisions side by side (markdown)."""
    names = list(runs)
    head = "| t s | " + " | ".join(f"{n}: RSS MB | {n}: emitted" for n in names) + " |"
    rule = "|---:|" + "---:|---:|" * len(names)
    rows = [head, rule]
    length = min(len(s) for s in runs.values())
    for k in [*range(0, length - 1, PRINT_EVERY), length - 1]:
        cells = " | ".join(f"{runs[n][k].rss_mb:.0f} | {runs[n][k].emitted:,}" for n in names)
        rows.append(f"| {runs[names[0]][k].t:.1f} | {cells} |")
    return "\n".join(rows)


@contextmanager
def checkout(rev: str) -> Iterator[Tree]:
    """REV checked out in a temporary git worktree, removed afterwards."""
    short = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="streamkit-memory-hung-"))
    path = tmp / short
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--quiet", "--detach", str(path), short],
        check=True,
    )
    try:
        yield Tree(short, path)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)])
        shutil.rmtree(tmp, ignore_errors=True)


def this_tree() -> Tree:
    """This checkout; "+dirty" when streamkit/ or tests/ have uncommitted changes."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no", "--", "streamkit", "tests"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Tree(f"{head}+dirty" if dirty else head, ROOT)


def terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C: every finally runs


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_hung", description=__doc__)
    parser.add_argument("--compare", metavar="REV", help="also run an older revision")
    parser.add_argument("--records", type=int, default=200_000, help="records fed over the run")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each run")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, terminate)
    runs: dict[str, Run] = {}
    rate = (args.records - 1) / args.seconds
    print(
        f"async agent, concurrency=8, record 0 hung; 1 partition; {args.records:,} records"
        f" of ~1 KB at {rate:,.0f}/s for {args.seconds:.0f} s"
    )
    with ExitStack() as stack:
        bootstrap, _ = stack.enter_context(bench_broker(os.environ.get("BENCH_BROKERS")))
        RESULTS.mkdir(parents=True, exist_ok=True)
        trees = [this_tree()]
        if args.compare:
            trees.append(stack.enter_context(checkout(args.compare)))
        for tree in trees:
            print(f"{tree.label} ({tree.path}):", flush=True)
            runs[tree.label] = run(bootstrap, tree, args.records, args.seconds)
    print()
    print(table({label: r.samples for label, r in runs.items()}))
    print()
    with CSV.open("w") as f:
        f.write("revision,t_s,rss_mb,emitted\n")
        for label, r in runs.items():
            f.writelines(f"{label},{s.t:.2f},{s.rss_mb:.1f},{s.emitted}\n" for s in r.samples)
    for label, r in runs.items():
        samples = r.samples
        mid, last, grew = growth(samples)
        print(
            f"{label}: RSS {mid:.0f} MB at {samples[-1].t / 2:.0f} s, {last:.0f} MB at"
            f" {samples[-1].t:.0f} s: {grew:+.1f} MB over the second half,"
            f" {samples[-1].emitted:,} records emitted"
        )
        if r.events != ["partitions assigned"]:
            print(f"  not one steady assignment, read it with care: {r.events}")
    print(
        f"every sample: {CSV.relative_to(ROOT)}; worker logs: bench/results/memory_hung-*.log.tmp"
    )


if __name__ == "__main__":
    main()
