"""Throughput side by side: the hand-written loop, streamkit, and peer frameworks.

Fills a 6-partition topic with N JSON records (~150 bytes, keyed), then runs
each contender as its own process on a fresh consumer group and a fresh
output topic: decode, add ``total = price * qty``, encode, produce, commit
at least once. A run ends when the output topic holds N records. Contenders
alternate, and the whole round repeats, so slow drifts in machine load hit
everyone alike; the medians and the ratio to the hand-written loop are what
to read, not the absolute numbers.

Usage: python -m bench.run   (``make bench``)
Environment:
    BENCH_N            records (default 1,000,000)
    BENCH_REPEATS      rounds (default 3)
    BENCH_BROKERS      use this broker instead of starting a LocalKafka
    BENCH_CONTENDERS   comma-separated subset of the names in CONTENDERS
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

import psutil
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.broker import bench_broker, stop
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


# Each workload's ratios are to its own baseline: the hand-written loop for
# the CPU-bound ones, streamkit with concurrency=1 for the I/O-bound one.
BASELINE = {"json": "raw", "avro": "raw-avro", "io": "streamkit-io-c1"}
WORKLOAD_TITLE = {
    "json": "JSON: decode, add a field, encode",
    "avro": "Avro: the same transform on single-object-encoded Avro records",
    "io": "I/O-bound: JSON plus a simulated 1 ms await per record (N/10 records)",
}


CONTENDERS = [
    Contender("raw", module="bench.child", note="hand-written confluent-kafka loop"),
    Contender("streamkit-sync", module="bench.child", note="streamkit `def` agent"),
    Contender("streamkit-async", module="bench.child", note="streamkit `async def` agent"),
    Contender(
        "quix",
        script="quix_app.py",
        requirements=("quixstreams",),
        note="Quix Streams StreamingDataFrame",
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
    total = 0
    for p in range(PARTITIONS):
        try:
            total += probe.get_watermark_offsets(TopicPartition(topic, p), timeout=2)[1]
        except Exception:
            return 0  # leaders still settling right after creation
    return total


def sample(proc: psutil.Process) -> tuple[float, float]:
    """CPU seconds (user + system, with reaped children) and peak RSS in MB."""
    t = proc.cpu_times()
    cpu = t.user + t.system + t.children_user + t.children_system
    hwm = 0.0
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return cpu, hwm


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
    """One run of one contender on a fresh group and output topic. Raises RuntimeError."""
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
    log = RESULTS / f"{c.name}.log.tmp"
    with log.open("wb") as err:
        started = time.monotonic()
        popen = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=err, stderr=subprocess.STDOUT, start_new_session=True
        )
    proc = psutil.Process(popen.pid)
    first_at = None
    warm_at = None  # the output holds WARM of N: start-up and first batches are behind us
    cpu_at_warm = 0.0
    try:
        while True:
            size = output_size(probe, sink)
            now = time.monotonic()
            if size > 0 and first_at is None:
                first_at = now
            if size >= n * WARM and warm_at is None:
                warm_at, warm_size = now, size
                cpu_at_warm, _ = sample(proc)
            if size >= n:
                done_at = now
                cpu_at_done, peak_mb = sample(proc)
                break
            if popen.poll() is not None:
                raise RuntimeError(f"exited with {popen.returncode} at {size:,}/{n:,}: {tail(log)}")
            if now - started > timeout:
                raise RuntimeError(f"timed out after {timeout:.0f}s at {size:,}/{n:,}: {tail(log)}")
            time.sleep(POLL_S)
    finally:
        stop(popen)
        admin.delete_topics([sink])
    assert first_at is not None and warm_at is not None
    counted = n - warm_size
    if counted <= 0:  # everything arrived between two polls (tiny N): use end-to-end
        counted, warm_at, cpu_at_warm = n, started, 0.0
    return {
        "records": n,
        "records_per_s": round(counted / max(done_at - warm_at, POLL_S)),
        "end_to_end_records_per_s": round(n / (done_at - started)),
        "startup_s": round(first_at - started, 2),
        "cpu_s_per_million": round((cpu_at_done - cpu_at_warm) / max(counted, 1) * 1e6, 1),
        "peak_rss_mb": round(peak_mb, 1),
    }


def summarize(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = runs[0].keys()
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


def write_results(meta: dict[str, object], table: dict[str, dict[str, Any]]) -> str:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({**meta, "contenders": table}, indent=1) + "\n"
    stamp = str(meta["started"]).replace(":", "").replace("-", "")
    (RESULTS / f"{stamp}.json").write_text(payload)
    (RESULTS / "latest.json").write_text(payload)
    lines = [
        "# Benchmark results",
        "",
        f"{meta['records']:,} records ({meta.get('io_records', meta['records']):,} for the "
        f"I/O-bound workload), {meta['repeats']} repeats, {meta['started']}, "
        f"{meta['machine']}. Medians. records/s and CPU are counted from 10% to 100% of the "
        "output (start-up and group join excluded; end-to-end includes them); the ratio is "
        "the median of the per-round ratios to the workload's baseline (named in the "
        "header). Written by `make bench`.",
    ]
    for workload, title in WORKLOAD_TITLE.items():
        rows = {k: v for k, v in table.items() if v.get("workload", "json") == workload}
        if not rows:
            continue
        base = BASELINE[workload]
        base_runs = table.get(base, {}).get("runs", [])
        lines += [
            "",
            f"## {title}",
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
    markdown = "\n".join(lines) + "\n"
    (BENCH / "RESULTS.md").write_text(markdown)
    return markdown


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
        data = json.loads((RESULTS / "latest.json").read_text())
        write_results(data, data.pop("contenders"))
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
    contenders = [c for c in CONTENDERS if not chosen or c.name in chosen.split(",")]
    RESULTS.mkdir(parents=True, exist_ok=True)

    pythons: dict[str, Path] = {}
    table: dict[str, dict[str, Any]] = {}
    for c in contenders:
        table[c.name] = {"what": c.note, "workload": c.workload, "runs": []}
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
        probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-probe"})
        run_id = uuid.uuid4().hex[:6]
        # JSON input serves the json and io workloads; Avro input only if asked for.
        sources = {"json": f"bench-{run_id}", "io": f"bench-{run_id}"}
        if any(c.workload == "avro" for c in contenders):
            sources["avro"] = f"bench-{run_id}-avro"
        sizes = {"json": n, "avro": n, "io": io_n}
        for workload, source in sorted(set((w, s) for w, s in sources.items() if w != "io")):
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
                row["runs"].append(result)
                print(f"[{rep + 1}/{repeats}] {c.name:16} {result}", flush=True)
        admin.delete_topics(sorted(set(sources.values())))
        probe.close()
        del admin, probe  # no client left retrying against a stopped broker

    for row in table.values():
        runs = row["runs"]
        if runs:
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


if __name__ == "__main__":
    main()
