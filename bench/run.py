"""Throughput side by side: the hand-written loop, streamkit, and peer frameworks.

Fills a 6-partition topic with N JSON records (~150 bytes, keyed), then runs
each contender as its own process on a fresh consumer group and a fresh
output topic: decode, add ``total = price * qty``, encode, produce, commit
at least once. A run ends when the output topic holds N records. Contenders
alternate, and the whole round repeats, so slow drifts in machine load hit
everyone alike; the medians and the ratio to the hand-written loop are what
to read, not the absolute numbers.

Exactly-once contenders (``transactional=True``): records/s is timed on
what they produce, like everyone's (the output's high watermarks), but the
run ends only once a ``read_committed`` reader in this process has counted
all N, so end-to-end records/s and start-up are what a downstream consumer
sees, the last checkpoint included. After every run, of every contender, the output is read
back from the start and checked: an exactly-once contender whose committed
output is short, doubled or not transactional at all fails, with no number
(and the bench exits 1); for at-least-once contenders, duplicates and
missing records are only reported.

Usage: python -m bench.run   (``make bench``)
Environment:
    BENCH_N            records (default 1,000,000)
    BENCH_REPEATS      rounds (default 3)
    BENCH_BROKERS      use this broker instead of starting a LocalKafka
    BENCH_CONTENDERS   comma-separated subset of the names in CONTENDERS (default:
                       all but the optional ones, the exactly-once variants)
    BENCH_IO_N         records for the I/O-bound workload (default N / 10)
    BENCH_TIMEOUT      seconds per run before giving up (default: 60 + records / 2,000)

Peers run in virtual environments under bench/.venvs/<name>, created here on
first use with ``python3 -m venv`` + pip; a peer that cannot be installed or
does not run is recorded as "did not run: <reason>" and the bench goes on.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.broker import bench_broker, start, stop
from bench.contenders import avro_codec
from bench.quick import fill
from streamkit.backends.kafka import ensure_topics
from streamkit.topics import Topic

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
VENVS = BENCH / ".venvs"
RESULTS = BENCH / "results"
PARTITIONS = 6
POLL_S = 0.05
# Throughput and CPU are counted from the moment the output holds 10% of N to
# the moment it holds N: start-up, group join and a contender's first batches
# stay out of the rate (they are reported apart, as start-up seconds).
WARM = 0.10
# What a run's median row holds; the output check's counts stay per run.
MEASURES = (
    "records",
    "commit_wait_s",
    "records_per_s",
    "end_to_end_records_per_s",
    "startup_s",
    "cpu_s_per_million",
    "peak_rss_mb",
)


@dataclass(frozen=True, slots=True)
class Contender:
    """How to start one contender: a module in the streamkit venv, or a script in a peer venv."""

    name: str
    module: str | None = None  # ``python -m bench.child <name>`` in the streamkit venv
    script: str | None = None  # path under bench/peers, run by the peer venv's python
    requirements: tuple[str, ...] = ()
    note: str = ""
    venv: str = ""  # share another contender's venv (same requirements)
    workload: str = "json"  # json | avro | io (bench/contenders.py)
    env: tuple[tuple[str, str], ...] = ()  # extra environment for a peer script
    # Peers two orders of magnitude slower would need an hour for 1M records
    # three times; they get at most this many (their rate is steady by then).
    max_n: int | None = None
    # Exactly once: timed by a read_committed count of the output, and the
    # run fails unless that output is exactly the N input records, committed
    # in transactions.
    transactional: bool = False
    # Runs only when BENCH_CONTENDERS names it (the commit_interval sweep:
    # at 1,000,000 records its slow variants alone would add ten minutes).
    optional: bool = False
    # A peer at N processes (bench.copies): N of its processes in one group,
    # as its users run it on N cores, next to streamkit run --processes N.
    copies: int = 1


# Each workload's ratios are to its own baseline: the hand-written loop for
# the CPU-bound ones, streamkit with concurrency=1 for the I/O-bound one.
BASELINE = {
    "json": "raw",
    "avro": "raw-avro",
    "io": "streamkit-io-c1",
    "cpu": "streamkit-p1-cpu",
}
# Ratios the exactly-once work is judged by: (contender, against, what, goal).
# Each is the median of the per-round ratios, like the "vs" column.
COMPARISONS = [
    ("streamkit-eos", "streamkit-sync", "streamkit: exactly once / at least once", 0.8),
    (
        "streamkit-eos",
        "quix-eos",
        "exactly once: streamkit (0.1 s checkpoint) / Quix Streams (its default 5 s)",
        2.0,
    ),
    (
        "streamkit-eos",
        "quix-eos-100ms",
        "exactly once: streamkit / Quix Streams, both checkpointing every 0.1 s",
        2.0,
    ),
    ("streamkit-sync", "quix", "at least once: streamkit / Quix Streams", 2.0),
    ("streamkit-p2", "streamkit-p1", "streamkit JSON: --processes 2 / --processes 1", None),
    (
        "streamkit-p2-cpu",
        "streamkit-p1-cpu",
        "streamkit CPU-bound: --processes 2 / --processes 1",
        1.7,
    ),
    ("quix-x2", "quix", "Quix Streams: 2 processes / 1", None),
    ("streamkit-p2", "quix-x2", "2 processes: streamkit / Quix Streams", None),
    ("quix-eos", "quix", "Quix Streams: exactly once / at least once", None),
    ("streamkit-eos-500ms", "streamkit-eos", "streamkit exactly once: 0.5 s / 0.1 s", None),
    ("streamkit-eos-1s", "streamkit-eos", "streamkit exactly once: 1 s / 0.1 s", None),
    (
        "streamkit-eos-1s-timeonly",
        "streamkit-eos",
        "streamkit exactly once: 1 s, no record count / 0.1 s",
        None,
    ),
    (
        "streamkit-eos-1s-timeonly-bigbuf",
        "streamkit-eos",
        "the same with max_buffered_records=400,000 / 0.1 s",
        None,
    ),
]
WORKLOAD_TITLE = {
    "json": "JSON: decode, add a field, encode",
    "avro": "Avro: the same transform on single-object-encoded Avro records",
    "io": "I/O-bound: JSON plus a simulated 1 ms await per record (N/10 records)",
    # 600,000 at most: enough that the second process's join is a small part.
    "cpu": "CPU-bound: JSON plus about 40 us of Python per record (at most 600,000 records)",
}


CONTENDERS = [
    Contender("raw", module="bench.child", note="hand-written confluent-kafka loop"),
    Contender("streamkit-sync", module="bench.child", note="streamkit `def` agent"),
    Contender("streamkit-async", module="bench.child", note="streamkit `async def` agent"),
    # Scaling (issue 18): the same `def` agent under `streamkit run --processes N`.
    Contender(
        "streamkit-p1",
        module="bench.child",
        note="`streamkit run --processes 1` (the worker in the command's process)",
    ),
    Contender(
        "streamkit-p2",
        module="bench.child",
        note="`streamkit run --processes 2`: a supervisor and two workers in the group",
    ),
    Contender(
        "streamkit-eos",
        module="bench.child",
        note="streamkit `def` agent, exactly once (default checkpoint: 0.1 s or 10,000 records)",
        transactional=True,
    ),
    # The checkpoint interval's trade-off (bench/README.md, "Exactly once").
    # With the default commit_every (10,000 records) a longer interval only
    # matters below ~100,000 records/s; the "-timeonly" variants lift it so
    # the interval alone decides, and "-bigbuf" also lifts max_buffered_records,
    # which bounds what a partition may hold between two checkpoints.
    Contender(
        "streamkit-eos-500ms",
        optional=True,
        module="bench.child",
        note="exactly once, STREAMKIT_COMMIT_INTERVAL=0.5",
        transactional=True,
        env=(("STREAMKIT_COMMIT_INTERVAL", "0.5"),),
    ),
    Contender(
        "streamkit-eos-1s",
        optional=True,
        module="bench.child",
        note="exactly once, STREAMKIT_COMMIT_INTERVAL=1.0",
        transactional=True,
        env=(("STREAMKIT_COMMIT_INTERVAL", "1.0"),),
    ),
    Contender(
        "streamkit-eos-1s-timeonly",
        optional=True,
        module="bench.child",
        note="exactly once, STREAMKIT_COMMIT_INTERVAL=1.0, STREAMKIT_COMMIT_EVERY=100,000,000",
        transactional=True,
        env=(("STREAMKIT_COMMIT_INTERVAL", "1.0"), ("STREAMKIT_COMMIT_EVERY", "100000000")),
    ),
    Contender(
        "streamkit-eos-1s-timeonly-bigbuf",
        optional=True,
        module="bench.child",
        note="the same with STREAMKIT_MAX_BUFFERED_RECORDS=400,000",
        transactional=True,
        env=(
            ("STREAMKIT_COMMIT_INTERVAL", "1.0"),
            ("STREAMKIT_COMMIT_EVERY", "100000000"),
            ("STREAMKIT_MAX_BUFFERED_RECORDS", "400000"),
        ),
    ),
    Contender(
        "quix",
        script="quix_app.py",
        requirements=("quixstreams",),
        note="Quix Streams StreamingDataFrame",
    ),
    # What --processes is for: an agent bound by its own CPU, where the
    # broker and librdkafka leave the second core free (the JSON workload's
    # streamkit-p2 shares it with them).
    *(
        Contender(
            f"streamkit-p{n}-cpu",
            module="bench.child",
            max_n=600_000,
            note=f"`--processes {n}`, ~40 us of Python per record",
            workload="cpu",
            env=(("BENCH_WORKLOAD", "cpu"),),
        )
        for n in (1, 2)
    ),
    Contender(
        "quix-x2",
        script="quix_app.py",
        requirements=("quixstreams",),
        note="two Quix Streams processes in the group (bench.copies), next to streamkit-p2",
        venv="quix",
        copies=2,
    ),
    Contender(
        "faust-x2",
        optional=True,
        max_n=100_000,
        script="faust_app.py",
        requirements=("faust-streaming",),
        note="two faust-streaming workers in the group (bench.copies)",
        venv="faust",
        copies=2,
    ),
    Contender(
        "quix-eos",
        script="quix_app.py",
        requirements=("quixstreams",),
        note='Quix Streams, processing_guarantee="exactly-once" (its default 5 s checkpoint)',
        venv="quix",
        transactional=True,
        env=(("BENCH_GUARANTEE", "exactly-once"),),
    ),
    Contender(
        "quix-eos-100ms",
        optional=True,
        script="quix_app.py",
        requirements=("quixstreams",),
        note="Quix Streams, exactly once, commit_interval=0.1 (streamkit's default)",
        venv="quix",
        transactional=True,
        env=(("BENCH_GUARANTEE", "exactly-once"), ("BENCH_COMMIT_INTERVAL", "0.1")),
    ),
    Contender(
        "faststream",
        max_n=100_000,
        script="faststream_app.py",
        requirements=("faststream[confluent]",),
        note="FastStream subscriber + publisher (confluent)",
    ),
    Contender(
        "faststream-batch",
        max_n=200_000,
        script="faststream_batch_app.py",
        requirements=("faststream[confluent]",),
        note="FastStream batch subscriber + publish_batch (confluent)",
        venv="faststream",
    ),
    Contender(
        "faust",
        max_n=100_000,
        script="faust_app.py",
        requirements=("faust-streaming",),
        note="faust-streaming agent (aiokafka)",
    ),
    Contender(
        "raw-avro", module="bench.child", note="hand-written loop, fastavro", workload="avro"
    ),
    Contender(
        "streamkit-avro",
        module="bench.child",
        note="streamkit `def` agent, `avro:` serde",
        workload="avro",
    ),
    Contender(
        "streamkit-io-c1", module="bench.child", note="`async def`, concurrency=1", workload="io"
    ),
    Contender(
        "streamkit-io-c32", module="bench.child", note="`async def`, concurrency=32", workload="io"
    ),
    Contender(
        "faust-io-c32",
        max_n=20_000,
        script="faust_app.py",
        requirements=("faust-streaming",),
        note="faust agent, concurrency=32",
        venv="faust",
        workload="io",
        env=(("BENCH_IO_MS", "1"), ("BENCH_CONCURRENCY", "32")),
    ),
]


def ensure_venv(c: Contender) -> Path:
    """Return the peer's python, creating its venv on first use. Raises RuntimeError."""
    venv = VENVS / (c.venv or c.name)
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = " ".join(c.requirements)
    if stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    print(f"[{c.name}] creating {venv.relative_to(ROOT)} with pip install {wanted}", flush=True)
    try:
        subprocess.run(
            ["python3", "-m", "venv", str(venv)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *c.requirements],
            check=True,
            capture_output=True,
            text=True,
            timeout=900,
        )
    except subprocess.CalledProcessError as e:
        tail = (e.stderr or "").strip().splitlines()[-1:] or ["pip failed"]
        raise RuntimeError(f"install failed: {tail[0]}") from e
    except subprocess.TimeoutExpired as e:
        raise RuntimeError("install timed out") from e
    stamp.write_text(wanted + "\n")
    return python


def output_size(probe: Consumer, topic: str) -> int:
    """The output's high watermarks added up; 0 if the broker did not answer in time."""
    total = 0
    for p in range(PARTITIONS):
        try:
            total += probe.get_watermark_offsets(TopicPartition(topic, p), timeout=2)[1]
        except Exception:
            return 0  # leaders still settling right after creation
    return total


class OutputError(Exception):
    """A contender's output is wrong (short, doubled, not transactional): no number for it."""


def reader(bootstrap: str, topic: str, committed: bool, eof: bool = False) -> Consumer:
    """A group-less reader of every partition of ``topic`` from the start."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if committed else "read_uncommitted",
            # The broker answers an empty fetch within 10 ms: a commit is seen
            # that soon after it happens.
            "fetch.wait.max.ms": 10,
            "enable.partition.eof": eof,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    return consumer


class CommittedCount:
    """How many records of the output a ``read_committed`` reader has seen so far.

    What an exactly-once contender has produced counts only once its
    transaction commits; a high watermark would count open transactions and
    the commit markers too. Only counted, not decoded, while the run is timed.
    """

    BATCH = 10_000

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = reader(bootstrap, topic, committed=True)
        self.count = 0

    def __call__(self) -> int:
        while True:
            msgs = self.consumer.consume(self.BATCH, timeout=0)
            self.count += sum(1 for m in msgs if m.error() is None)
            if len(msgs) < self.BATCH:
                return self.count

    def close(self) -> None:
        self.consumer.close()


def read_back(
    bootstrap: str, topic: str, n: int, committed: bool, ids: bool, timeout: float = 60.0
) -> tuple[int, int, int]:
    """Read the whole output once: (records, distinct ids in 0..n-1, duplicates).

    Stops when every partition reported its end (the last stable offset, read
    committed), or at ``timeout``. With ``ids=False`` only the records are counted.
    """
    consumer = reader(bootstrap, topic, committed, eof=True)
    seen = bytearray(n)
    records = distinct = duplicates = 0
    decode = None
    ended: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(ended) < PARTITIONS and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        ended.add(msg.partition() or 0)
                    continue
                records += 1
                if not ids:
                    continue
                data = msg.value() or b""
                if decode is None:
                    decode = orjson.loads if data[:1] == b"{" else avro_codec(data[:10])[0]
                i = int(decode(data)["id"])
                if not 0 <= i < n:
                    raise OutputError(f"record id {i} is not one of the {n:,} input records")
                if seen[i]:
                    duplicates += 1
                else:
                    seen[i] = 1
                    distinct += 1
    finally:
        consumer.close()
    if len(ended) < PARTITIONS:
        raise OutputError(f"reading the output back did not reach its end in {timeout:.0f}s")
    return records, distinct, duplicates


def verify(c: Contender, bootstrap: str, probe: Consumer, sink: str, n: int) -> dict[str, int]:
    """Read a stopped contender's output back and check it; raises OutputError (exactly once)."""
    committed, distinct, duplicates = read_back(bootstrap, sink, n, committed=True, ids=True)
    high = output_size(probe, sink)
    check = {
        "committed": committed,
        "distinct": distinct,
        "duplicates": duplicates,
        "missing": n - distinct,
        "offsets_not_committed_records": high - committed,
    }
    if not c.transactional:
        return check
    # Read uncommitted too: every offset is a committed record, an aborted
    # record, or a transaction marker (one per partition per transaction).
    everything, _, _ = read_back(bootstrap, sink, n, committed=False, ids=False)
    check["aborted_records"] = everything - committed
    check["transaction_markers"] = high - everything
    if committed != n or distinct != n:
        raise OutputError(
            f"read_committed output has {committed:,} records, {distinct:,} distinct, "
            f"{duplicates:,} duplicates; expected exactly the {n:,} input records"
        )
    if check["transaction_markers"] <= 0:
        raise OutputError("no transaction markers in the output: not written transactionally")
    return check


def sample(proc: psutil.Process) -> tuple[float, float]:
    """CPU seconds and peak RSS in MB of ``proc`` and its children, reaped or running.

    A supervisor's (``--processes N``) children do the work: their CPU and
    peak RSS add up to what the contender costs.
    """
    t = proc.cpu_times()
    cpu = t.user + t.system + t.children_user + t.children_system
    hwm = 0.0
    for one in (proc, *proc.children(recursive=True)):
        try:
            if one is not proc:
                ct = one.cpu_times()
                cpu += ct.user + ct.system
            for line in Path(f"/proc/{one.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm += int(line.split()[1]) / 1024
        except (psutil.NoSuchProcess, FileNotFoundError):  # exited meanwhile
            continue
    return cpu, hwm


@dataclass
class Marks:
    """When a run's output passed its marks, and the contender's CPU and peak RSS then.

    Timed on what the contender produced (``size``, the high watermarks) and
    what a reader can see of it (``visible``: the same but for exactly once).
    """

    n: int
    proc: psutil.Process
    first_at: float | None = None  # the first record visible: start-up is over
    # The output holds WARM of N: start-up and first batches are behind us.
    warm_at: float | None = None
    warm_size: int = 0
    cpu_at_warm: float = 0.0
    done_at: float | None = None  # all N produced
    cpu_at_done: float = 0.0
    peak_mb: float = 0.0

    def passed(self, size: int, visible: int, now: float) -> None:
        """Note each mark that ``size`` and ``visible``, polled at ``now``, pass first."""
        if visible > 0 and self.first_at is None:
            self.first_at = now
        if size >= self.n * WARM and self.warm_at is None:
            self.warm_at, self.warm_size = now, size
            self.cpu_at_warm, _ = sample(self.proc)
        if size >= self.n and self.done_at is None:
            self.done_at = now
            self.cpu_at_done, self.peak_mb = sample(self.proc)


def tail(path: Path, lines: int = 3) -> str:
    """The last lines of a contender's log, ANSI colours stripped, for a one-line reason."""
    text = path.read_text(errors="replace") if path.exists() else ""
    found = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).strip().splitlines()
    return " | ".join(line.strip()[:160] for line in found[-lines:])


def run_one(
    c: Contender,
    python: Path,
    bootstrap: str,
    admin: AdminClient,
    probe: Consumer,
    source: str,
    n: int,
    timeout: float,
) -> dict[str, float]:
    """One run of one contender on a fresh group and output topic.

    Raises:
        RuntimeError: It exited, or did not reach N in time.
        OutputError: Its output, read back after the stop, is wrong (exactly once).
    """
    run_id = uuid.uuid4().hex[:6]
    sink = f"{source}-{c.name}-{run_id}"
    ensure_topics(admin, [Topic(sink, partitions=PARTITIONS)])
    env = {
        **os.environ,
        "BENCH_BROKERS": bootstrap,
        "BENCH_IN": source,
        "BENCH_OUT": sink,
        "BENCH_GROUP": f"bench-{c.name}-{run_id}",
        "BENCH_N": str(n),
        "PYTHONPATH": str(ROOT) if c.module else "",
        "STREAMKIT_LOG_LEVEL": "warning",
        **dict(c.env),
    }
    if c.module:
        argv = [str(python), "-m", c.module, c.name]
    else:
        argv = [str(python), str(BENCH / "peers" / str(c.script))]
    if c.copies > 1:
        argv = [sys.executable, "-m", "bench.copies", str(c.copies), *argv]
    log = RESULTS / f"{c.name}.log.tmp"
    started = time.monotonic()
    popen = start(argv, env, log)
    marks = Marks(n, psutil.Process(popen.pid))
    # Every contender is timed on what it has produced (the high watermarks).
    # Exactly once, the run ends only when a read_committed reader has seen
    # all N too: the last checkpoint's wait is in end-to-end, not in the rate,
    # which a 5 s checkpoint would otherwise turn into one 5 s step.
    counter = CommittedCount(bootstrap, sink) if c.transactional else None
    try:
        while True:
            size = output_size(probe, sink)
            visible = size if counter is None else counter()
            now = time.monotonic()
            marks.passed(size, visible, now)
            if visible >= n:
                visible_at = now
                if marks.done_at is None:  # the watermark query failed this time (a busy broker)
                    marks.done_at = now
                    marks.cpu_at_done, _ = sample(marks.proc)
                _, marks.peak_mb = sample(marks.proc)
                break
            if popen.poll() is not None:
                raise RuntimeError(
                    f"exited with {popen.returncode} at {visible:,}/{n:,}: {tail(log)}"
                )
            if now - started > timeout:
                raise RuntimeError(
                    f"timed out after {timeout:.0f}s at {visible:,}/{n:,}: {tail(log)}"
                )
            time.sleep(POLL_S)
    except BaseException:
        stop(popen)
        if counter is not None:
            counter.close()
        admin.delete_topics([sink])
        raise
    stop(popen)  # SIGTERM: a last checkpoint may commit more (it must not, exactly once)
    try:
        if counter is not None:
            counter.close()
        check = verify(c, bootstrap, probe, sink, n)
    finally:
        admin.delete_topics([sink])
    first_at, done_at = marks.first_at, marks.done_at
    assert first_at is not None and done_at is not None
    warm_at, warm_size, cpu_at_warm = marks.warm_at, marks.warm_size, marks.cpu_at_warm
    if warm_at is None:  # see above: no watermark answer until the end
        warm_at, warm_size, cpu_at_warm = started, 0, 0.0
    counted = n - warm_size
    if counted <= 0:  # everything arrived between two polls (tiny N): use end-to-end
        counted, warm_at, cpu_at_warm = n, started, 0.0
    result = {
        "records": n,
        "records_per_s": round(counted / max(done_at - warm_at, POLL_S)),
        "end_to_end_records_per_s": round(n / (visible_at - started)),
        "startup_s": round(first_at - started, 2),
        "cpu_s_per_million": round((marks.cpu_at_done - cpu_at_warm) / max(counted, 1) * 1e6, 1),
        "peak_rss_mb": round(marks.peak_mb, 1),
        # Others' work on a shared machine shows here first.
        "load_1m": round(os.getloadavg()[0], 2),
    }
    if counter is not None:
        # From all N produced to all N committed: the last checkpoint.
        result["commit_wait_s"] = round(visible_at - done_at, 2)
    return {**result, **check}


def summarize(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in runs[0] if k in MEASURES]
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def vs_base(runs: list[dict[str, float]], base_runs: list[dict[str, float]]) -> str:
    """Median of the per-round ratios to the baseline: a round's load hits both alike."""
    if (
        not base_runs
        or len(runs) != len(base_runs)
        or not all(b["records_per_s"] for b in base_runs)
    ):
        return "-"
    ratios = [r["records_per_s"] / b["records_per_s"] for r, b in zip(runs, base_runs, strict=True)]
    return f"{statistics.median(ratios):.2f}x"


def comparisons(table: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The COMPARISONS whose both sides ran: per-round ratios, their median, the goal."""
    out = []
    for name, other, what, goal in COMPARISONS:
        a, b = table.get(name, {}).get("runs", []), table.get(other, {}).get("runs", [])
        if not a or len(a) != len(b) or not all(r["records_per_s"] for r in b):
            continue
        ratios = [x["records_per_s"] / y["records_per_s"] for x, y in zip(a, b, strict=True)]
        median = statistics.median(ratios)
        out.append(
            {
                "contender": name,
                "against": other,
                "what": what,
                "per_round": [round(r, 2) for r in ratios],
                "median": round(median, 2),
                "goal": goal,
                "met": None if goal is None else median >= goal,
            }
        )
    return out


def carried_over(table: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Earlier runs' rows of the contenders this run left out, newest first.

    A run of a few contenders (``BENCH_CONTENDERS``) would otherwise drop the
    others from RESULTS.md. Each earlier run keeps its own header (date,
    records, rounds) and its own baselines, so no ratio mixes two runs.
    """
    latest = RESULTS / "latest.json"
    if not latest.exists():
        return []
    previous = json.loads(latest.read_text())
    groups = [previous, *previous.pop("earlier", [])]
    taken = set(table)
    out = []
    for group in groups:
        rows = group.get("contenders", {})
        keep = [k for k in rows if k not in taken]
        if not keep:
            continue
        taken.update(keep)
        workloads = {rows[k].get("workload", "json") for k in keep}
        bases = [BASELINE[w] for w in workloads if BASELINE[w] in rows and BASELINE[w] not in keep]
        chosen = {k: v for k, v in rows.items() if k in keep or k in bases}
        meta = {k: v for k, v in group.items() if k not in ("contenders", "earlier", "comparisons")}
        out.append({**meta, "contenders": chosen})
    return out


def tables(meta: dict[str, Any], table: dict[str, dict[str, Any]], level: str) -> list[str]:
    """One markdown table per workload that ran, ratios to that workload's baseline."""
    lines: list[str] = []
    for workload, title in WORKLOAD_TITLE.items():
        rows = {k: v for k, v in table.items() if v.get("workload", "json") == workload}
        if not rows:
            continue
        base = BASELINE[workload]
        base_runs = table.get(base, {}).get("runs", [])
        lines += [
            "",
            f"{level} {title}",
            "",
            f"| contender | records/s | vs {base} | end-to-end records/s | CPU s / 1M records "
            "| peak RSS MB | start-up s |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, row in rows.items():
            med = row.get("median")
            if not med:
                status = str(row["status"]).replace("|", "/")[:200]
                lines.append(f"| {name} | {status} | | | | | |")
                continue
            label = name
            expected = meta.get("io_records") if workload == "io" else meta["records"]
            if med.get("records", expected) != expected:
                label = f"{name} ({med['records']:,.0f} records)"
            lines.append(
                f"| {label} | {med['records_per_s']:,.0f} | {vs_base(row['runs'], base_runs)} "
                f"| {med['end_to_end_records_per_s']:,.0f} | {med['cpu_s_per_million']:.1f} "
                f"| {med['peak_rss_mb']:.0f} | {med['startup_s']:.1f} |"
            )
    return lines


def header(meta: dict[str, Any]) -> str:
    return (
        f"{meta['records']:,} records ({meta.get('io_records', meta['records']):,} for the "
        f"I/O-bound workload), {meta['repeats']} repeats, {meta['started']}, {meta['machine']}"
    )


def checks(table: dict[str, dict[str, Any]]) -> list[str]:
    """The output check of every run of the exactly-once contenders, read back read_committed."""
    rows = []
    for name, row in table.items():
        runs = row.get("runs", [])
        if not row.get("transactional") or not runs:
            continue
        cells = [
            f"{sum(r['committed'] for r in runs):,}",
            f"{sum(r['duplicates'] for r in runs):,}",
            f"{sum(r['missing'] for r in runs):,}",
            f"{sum(r['aborted_records'] for r in runs):,}",
            " / ".join(f"{r['transaction_markers']:,}" for r in runs),
        ]
        rows.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [
        "",
        "## Exactly once: the output, read back `read_committed` after each run",
        "",
        "A run counts only if its committed output is exactly the N input records (each id "
        "once) and carries transaction markers; otherwise it fails and has no number above. "
        "Markers: one per partition per committed or aborted transaction, per run.",
        "",
        "| contender | runs | records committed | duplicates | missing | aborted records "
        "| transaction markers per run |",
        "|---|---:|---:|---:|---:|---:|---|",
        *rows,
    ]


def write_results(
    meta: dict[str, Any],
    table: dict[str, dict[str, Any]],
    earlier: list[dict[str, Any]] | None = None,
) -> str:
    RESULTS.mkdir(parents=True, exist_ok=True)
    earlier = carried_over(table) if earlier is None else earlier
    ratios = comparisons(table)
    run = {**meta, "contenders": table, "comparisons": ratios}
    stamp = str(meta["started"]).replace(":", "").replace("-", "")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(run, indent=1) + "\n")
    (RESULTS / "latest.json").write_text(json.dumps({**run, "earlier": earlier}, indent=1) + "\n")
    lines = [
        "# Benchmark results",
        "",
        f"{header(meta)}. Medians. records/s and CPU are counted from 10% to 100% of the "
        "output (start-up and group join excluded; end-to-end includes them); the ratio is "
        "the median of the per-round ratios to the workload's baseline (named in the "
        "header). Exactly-once contenders: records/s is timed on what they produce, as for "
        "everyone; end-to-end and start-up on what a `read_committed` reader sees. "
        "Written by `make bench`.",
        *tables(meta, table, "##"),
    ]
    if ratios:
        lines += [
            "",
            "## Ratios",
            "",
            "Median of the per-round ratios of records/s (same round, same input).",
            "",
            "| ratio | contender / against | per round | median | goal | met |",
            "|---|---|---|---:|---:|:---:|",
        ]
        for r in ratios:
            goal = "" if r["goal"] is None else f"{r['goal']:g}x"
            met = "" if r["met"] is None else ("yes" if r["met"] else "no")
            per_round = ", ".join(f"{x:.2f}" for x in r["per_round"])
            lines.append(
                f"| {r['what']} | {r['contender']} / {r['against']} | {per_round} "
                f"| {r['median']:.2f}x | {goal} | {met} |"
            )
    lines += checks(table)
    if earlier:
        lines += [
            "",
            "## Earlier runs: the contenders this run left out",
            "",
            "Carried over from `results/latest.json` by a run with `BENCH_CONTENDERS`; "
            "each table is from the run named above it, with that run's own baseline row "
            "for its ratio column, never compared with the run above.",
        ]
        for group in earlier:
            lines += ["", f"### From the run of {group['started']}", "", header(group) + "."]
            lines += tables(group, group["contenders"], "####")
    lines += other_reports()
    markdown = "\n".join(lines) + "\n"
    (BENCH / "RESULTS.md").write_text(markdown)
    return markdown


# What the other benches wrote, each a side-by-side run of its own: shown in
# RESULTS.md after this run's tables, headings one level down, header and
# date as their run wrote them.
OTHER_REPORTS = (
    ("tables-after.md", "Tables: throughput and CPU", "python -m bench.tables"),
    ("tables-restore-after.md", "Tables: restore", "python -m bench.tables"),
    ("tables-memcheck.md", "Tables: memory", "python -m bench.tables"),
    ("windows.md", "Windows", "python -m bench.windows"),
    ("client.md", "Client: send and ask", "python -m bench.client"),
    ("secure.md", "Secure clusters: SASL_SSL against PLAINTEXT", "python -m bench.secure"),
)


def other_reports() -> list[str]:
    """The other benches' latest results, for RESULTS.md."""
    out: list[str] = []
    for name, title, command in OTHER_REPORTS:
        path = RESULTS / name
        if not path.exists():
            continue
        body = path.read_text().rstrip("\n").splitlines()[1:]  # their own title goes
        out += ["", f"## {title}", "", f"From `{command}`, `bench/results/{name}`."]
        out += [("#" + line) if line.startswith("#") else line for line in body]
    return out


def redraw() -> None:
    """Write RESULTS.md again from results/latest.json (another bench's results changed)."""
    data = json.loads((RESULTS / "latest.json").read_text())
    data.pop("comparisons", None)
    write_results(data, data.pop("contenders"), data.pop("earlier", []))


PLOT = """
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
data = json.load(open(sys.argv[1]))
rows = [(k, v["median"]["records_per_s"]) for k, v in data["contenders"].items()
        if v.get("median") and v.get("workload", "json") == "json"]
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.barh([r[0] for r in rows][::-1], [r[1] for r in rows][::-1], color="#4477aa")
for y, (_, v) in enumerate(rows[::-1]):
    ax.text(v, y, f" {v:,.0f}", va="center", fontsize=8)
ax.set_xlabel("records/s (median, higher is better)")
ax.set_title(f"JSON workload, {data['records']:,} records, {data['repeats']} repeats")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
"""


def plot() -> str:
    """Draw results/throughput.png with matplotlib from bench/.venvs/plot; return a status."""
    try:
        python = ensure_venv(Contender("plot", requirements=("matplotlib",)))
        subprocess.run(
            [
                str(python),
                "-c",
                PLOT,
                str(RESULTS / "latest.json"),
                str(RESULTS / "throughput.png"),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    except (RuntimeError, subprocess.SubprocessError) as e:
        return f"no chart: {e}"
    return "chart: bench/results/throughput.png"


def main() -> None:
    if sys.argv[1:] == ["--report"]:
        # Redraw RESULTS.md and the chart from results/latest.json, without running.
        redraw()
        print((BENCH / "RESULTS.md").read_text())
        print(plot())
        return
    n = int(os.environ.get("BENCH_N", "1000000"))
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    # The I/O-bound workload waits 1 ms per record: at concurrency=1 that is
    # ~1,000 records/s per partition, so it gets a tenth of the records.
    io_n = int(os.environ.get("BENCH_IO_N", str(max(n // 10, 1000))))
    fixed_timeout = os.environ.get("BENCH_TIMEOUT")
    chosen = os.environ.get("BENCH_CONTENDERS")
    contenders = [
        c for c in CONTENDERS if (c.name in chosen.split(",") if chosen else not c.optional)
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)

    pythons: dict[str, Path] = {}
    table: dict[str, dict[str, Any]] = {}
    for c in contenders:
        table[c.name] = {"what": c.note, "workload": c.workload, "runs": []}
        if c.transactional:
            table[c.name]["transactional"] = True
        if c.module:
            pythons[c.name] = Path(sys.executable)
            continue
        try:
            pythons[c.name] = ensure_venv(c)
        except RuntimeError as e:
            table[c.name]["status"] = f"did not run: {e}"
            print(f"[{c.name}] did not run: {e}", flush=True)

    with bench_broker(os.environ.get("BENCH_BROKERS")) as (bootstrap, _):
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        admin = AdminClient({"bootstrap.servers": bootstrap})
        # read_uncommitted: librdkafka's default, read_committed, would make the
        # "high watermarks" the last stable offsets, and time an exactly-once
        # contender on its commits instead of on what it has produced.
        probe = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "bench-probe",
                "isolation.level": "read_uncommitted",
            }
        )
        run_id = uuid.uuid4().hex[:6]
        # JSON input serves the json, io and cpu workloads; Avro input only if asked for.
        sources = {"json": f"bench-{run_id}", "io": f"bench-{run_id}", "cpu": f"bench-{run_id}"}
        if any(c.workload == "avro" for c in contenders):
            sources["avro"] = f"bench-{run_id}-avro"
        sizes = {"json": n, "avro": n, "io": io_n, "cpu": n}
        for workload, source in sorted(
            set((w, s) for w, s in sources.items() if w in ("json", "avro"))
        ):
            ensure_topics(admin, [Topic(source, partitions=PARTITIONS)])
            t0 = time.monotonic()
            fill(bootstrap, source, n, avro=workload == "avro")
            print(f"{workload} input: {n:,} records in {time.monotonic() - t0:.1f}s", flush=True)
        for rep in range(repeats):
            for c in contenders:
                row = table[c.name]
                if c.name not in pythons or "status" in row:
                    continue
                run_n = min(sizes[c.workload], c.max_n or sizes[c.workload])
                timeout = float(fixed_timeout or 60 + run_n / 2000)
                try:
                    result = run_one(
                        c,
                        pythons[c.name],
                        bootstrap,
                        admin,
                        probe,
                        sources[c.workload],
                        run_n,
                        timeout,
                    )
                except RuntimeError as e:
                    row["status"] = f"did not run: {e}"
                    print(f"[{c.name}] did not run: {e}", flush=True)
                    continue
                except OutputError as e:
                    row["status"] = f"failed: wrong output in round {rep + 1}: {e}"
                    print(f"[{c.name}] FAILED: {e}", flush=True)
                    continue
                row["runs"].append(result)
                print(f"[{rep + 1}/{repeats}] {c.name:16} {result}", flush=True)
        admin.delete_topics(sorted(set(sources.values())))
        probe.close()
        del admin, probe  # no client left retrying against a stopped broker

    for row in table.values():
        runs = row["runs"]
        # A failed output check voids the contender's other rounds too.
        if runs and not str(row.get("status", "")).startswith("failed"):
            row["median"] = summarize(runs)
            row.setdefault("status", "ok")
    meta = {
        "started": started,
        "records": n,
        "io_records": io_n,
        "repeats": repeats,
        "machine": f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
    }
    print(write_results(meta, table))
    print(plot())
    failed = [k for k, v in table.items() if str(v.get("status", "")).startswith("failed")]
    if failed:
        raise SystemExit(f"wrong output from {', '.join(failed)}: see bench/RESULTS.md")


if __name__ == "__main__":
    main()
