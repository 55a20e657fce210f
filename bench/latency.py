"""End-to-end latency at a fixed input rate: the hand-written loop vs streamkit agents.

For each contender, on a fresh 6-partition input topic, output topic and
consumer group: start it (``python -m bench.child <name>``), wait until one
record per input partition has come back, then produce keyed JSON records
(~150 bytes: ``bench.quick.fill``'s fields plus ``sent_ns``) at a fixed rate
and read the output topic in this process. Latency = wall clock when our
reader hands a record over minus the ``sent_ns`` taken just before
``produce()``: producer, broker, contender, broker again and our own fetch,
which adds up to its ``fetch.wait.max.ms`` (10 ms). Sender and reader share
one machine and one clock. "floor" runs first with no contender (the reader
reads the input topic): what the harness and broker alone add.

Exactly once (``streamkit-eos``, default checkpoint: every 0.1 s), the reader
is ``read_committed``, as a downstream consumer of an exactly-once pipeline
must be: a record counts when its transaction has committed, so the
checkpoint's wait (up to one interval), its flush and the two coordinator
round trips are all in the number. A record that arrives twice fails the
exactly-once contender's run. The ``-500ms`` and ``-1s`` variants (the same
with ``STREAMKIT_COMMIT_INTERVAL`` 0.5 and 1.0) run only when named.

Usage: python -m bench.latency      target: p99 under 50 ms
Environment:
    BENCH_RATE              records/s produced (default 5,000)
    BENCH_LATENCY_SECONDS   measured seconds, after 3 s of unmeasured warm-up (default 20)
    BENCH_LATENCY_ROUNDS    rounds, contenders alternating within each (default 1);
                            each figure is then the median over the rounds
    BENCH_BROKERS           use this broker instead of starting a LocalKafka
    BENCH_CONTENDERS        comma-separated subset of: floor, raw, streamkit-sync,
                            streamkit-eos, streamkit-eos-500ms, streamkit-eos-1s
                            (default: the first four)
Output: bench/results/latency.json and bench/results/latency.md.

Why one thread: sending and reading interleave (send what the schedule says
is due, then poll the output until the next 10 ms tick), so no GIL hand-off
delays a receive time. The schedule is "record i is due at t0 + i / rate":
a late tick sends its backlog at once instead of drifting the rate.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.broker import bench_broker, start, stop
from bench.quick import record
from streamkit.backends.kafka import ensure_topics
from streamkit.topics import Topic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PARTITIONS = 6
CONTENDERS = {
    "floor": "no contender: producer -> broker -> reader, what the harness itself measures",
    "raw": "hand-written confluent-kafka loop",
    "streamkit-sync": "streamkit `def` agent",
    "streamkit-eos": "streamkit `def` agent, exactly once, read_committed (checkpoint every 0.1 s)",
    "streamkit-eos-500ms": "the same, STREAMKIT_COMMIT_INTERVAL=0.5",
    "streamkit-eos-1s": "the same, STREAMKIT_COMMIT_INTERVAL=1.0",
}
DEFAULT = ("floor", "raw", "streamkit-sync", "streamkit-eos")
# Exactly-once contenders: read read_committed; extra environment for the variants.
TRANSACTIONAL = {
    "streamkit-eos": {},
    "streamkit-eos-500ms": {"STREAMKIT_COMMIT_INTERVAL": "0.5"},
    "streamkit-eos-1s": {"STREAMKIT_COMMIT_INTERVAL": "1.0"},
}
TARGET_P99_MS = 50.0
TICK_S = 0.01  # 5,000/s arrives as batches of 50: small enough not to add latency of its own
WARMUP_S = 3.0  # first fetches, connections, contender's first batches: not counted
# A LocalKafka we just started is a cold JVM: for ~10 s its latencies run to
# hundreds of ms (seen as p99 0.5-1.6 s for whichever contender ran first), so
# the first run on it warms up this long instead.
COLD_WARMUP_S = 15.0
READY_TIMEOUT_S = 90.0  # imports + group join of a cold process on a busy 2-core machine
DRAIN_TIMEOUT_S = 15.0  # after the last send; records still missing then count as lost
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def value(i: int) -> dict[str, Any]:
    return {**record(i), "sent_ns": time.time_ns()}


class Run:
    """Our producer, our reader of the output topic, and what arrived."""

    def __init__(self, bootstrap: str, sink: str, committed: bool = False) -> None:
        # linger.ms=0: every produce() goes out at once; batching is the
        # contender's business, not a delay we add to its numbers.
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all"})
        self.reader = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-latency-reader-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # The broker answers an empty fetch after at most 10 ms, which
                # bounds what our own fetch adds to a record's latency.
                "fetch.wait.max.ms": 10,
                # Exactly once: only what a downstream consumer may see.
                "isolation.level": "read_committed" if committed else "read_uncommitted",
            }
        )
        # assign(), not subscribe(): no group join, so no rebalance delay on the reader.
        self.reader.assign([TopicPartition(sink, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        self.latency_ns: dict[int, int] = {}  # record id -> latency of its first arrival
        self.duplicates = 0  # arrivals of a record id already seen

    def pump(self, until: float) -> None:
        """Read the output until the monotonic deadline; poll() returns at the first record."""
        while (left := until - time.monotonic()) > 0:
            self.producer.poll(0)  # serve delivery reports without blocking
            msg = self.reader.poll(left)
            now = time.time_ns()  # read before decoding: decode time is ours, not theirs
            if msg is None or msg.error():
                continue
            out = orjson.loads(msg.value() or b"{}")
            i = int(out["id"])
            if i in self.latency_ns:
                self.duplicates += 1
            else:
                self.latency_ns[i] = now - int(out["sent_ns"])

    def close(self) -> None:
        self.producer.flush(10)
        self.reader.close()


def alive(popen: subprocess.Popen[bytes] | None, log: Path) -> None:
    if popen is not None and popen.poll() is not None:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"exited with {popen.returncode}: {tail[0][:200]}")


def measure(
    name: str, bootstrap: str, admin: AdminClient, rate: int, seconds: float, warmup: float
) -> dict[str, Any]:
    """One contender on fresh topics and a fresh group. Raises RuntimeError if it never answers.

    "floor" starts no process and reads the input topic itself.
    """
    run_id = uuid.uuid4().hex[:6]
    source = f"bench-lat-{run_id}"
    sink = source if name == "floor" else f"{source}-{name}"
    ensure_topics(admin, [Topic(t, partitions=PARTITIONS) for t in {source, sink}])
    env = {
        **os.environ,
        "BENCH_BROKERS": bootstrap,
        "BENCH_IN": source,
        "BENCH_OUT": sink,
        "BENCH_GROUP": f"bench-lat-{name}-{run_id}",
        # raw leaves its loop after BENCH_N records; never, here: we stop it.
        "BENCH_N": str(10**12),
        "PYTHONPATH": str(ROOT),
        "STREAMKIT_LOG_LEVEL": "warning",
        **TRANSACTIONAL.get(name, {}),
    }
    log = RESULTS / f"{name}-latency.log.tmp"
    run = Run(bootstrap, sink, committed=name in TRANSACTIONAL)
    started = time.monotonic()
    popen = None
    if name != "floor":
        popen = start([sys.executable, "-m", "bench.child", name], env, log)
    try:
        # Ready = one record sent to each input partition came back: the
        # contender owns all partitions and our producer and reader are warm.
        for p in range(PARTITIONS):
            run.producer.produce(source, orjson.dumps(value(-1 - p)), b"ready", partition=p)
        while any(-1 - p not in run.latency_ns for p in range(PARTITIONS)):
            alive(popen, log)
            if time.monotonic() - started > READY_TIMEOUT_S:
                raise RuntimeError(f"no answer within {READY_TIMEOUT_S:.0f}s")
            run.pump(time.monotonic() + 0.1)
        startup_s = time.monotonic() - started

        warm, total = round(warmup * rate), round((warmup + seconds) * rate)
        sent, worst_lag = 0, 0.0
        t0 = time.monotonic()
        while sent < total:
            elapsed = time.monotonic() - t0
            due = min(total, math.floor(elapsed * rate) + 1)  # record i is due at t0 + i / rate
            worst_lag = max(worst_lag, elapsed - sent / rate)
            for i in range(sent, due):
                run.producer.produce(source, orjson.dumps(value(i)), f"k{i % 1000}".encode())
            sent = due
            run.producer.poll(0)
            run.pump(t0 + (math.floor(elapsed / TICK_S) + 1) * TICK_S)
        alive(popen, log)
        drain_until = time.monotonic() + DRAIN_TIMEOUT_S
        measured = range(warm, total)
        while time.monotonic() < drain_until and any(i not in run.latency_ns for i in measured):
            run.pump(time.monotonic() + 0.1)
    finally:
        if popen is not None:
            stop(popen)
        run.close()
        admin.delete_topics(sorted({source, sink}))

    ms = sorted(run.latency_ns[i] / 1e6 for i in measured if i in run.latency_ns)
    missing = len(measured) - len(ms)
    status = "ok" if not missing else f"failed: {missing:,} of {len(measured):,} missing"
    if run.duplicates and name in TRANSACTIONAL:
        status = f"failed: {run.duplicates:,} records arrived twice, read_committed"
    row: dict[str, Any] = {
        "what": CONTENDERS[name],
        "status": status,
        "measured": len(measured),
        "arrived": len(ms),
        "duplicates": run.duplicates,
        "read_committed": name in TRANSACTIONAL,
        "startup_s": round(startup_s, 2),
        "warmup_s": warmup,
        # Noise gauges: how far our sender fell behind its schedule, and the
        # machine's load; a busy 2-core box shows up in both before the percentiles.
        "worst_send_lag_ms": round(worst_lag * 1e3, 1),
        "load_1m": round(os.getloadavg()[0], 2),
    }
    for q in PERCENTILES:  # nearest rank: the smallest value with q% of records at or below
        row[f"p{q:g}_ms"] = round(ms[max(math.ceil(q / 100 * len(ms)) - 1, 0)], 2) if ms else None
    row["max_ms"] = round(ms[-1], 2) if ms else None
    return row


def markdown(meta: dict[str, Any], table: dict[str, dict[str, Any]]) -> str:
    header = (
        f"End-to-end latency from `produce()` into the input topic to arrival in this process's "
        f"reader of the output topic, at {meta['rate']:,} records/s for {meta['seconds']:g} s "
        + (
            f"in each of {meta['rounds']} rounds (contenders alternating; each figure the "
            "median over the rounds, records summed) "
            if meta.get("rounds", 1) > 1
            else ""
        )
        + f"after {WARMUP_S:g} s of unmeasured warm-up ({COLD_WARMUP_S:g} s for the first run on a "
        "freshly started LocalKafka); 6 partitions, ~150-byte keyed JSON records, "
        f"{meta['started']}, {meta['machine']}. The reader's own fetch adds up to 10 ms; `floor` "
        "is producer to broker to reader with no contender, what the harness alone adds. "
        "Exactly-once rows (`streamkit-eos*`) are read `read_committed`: a record counts once "
        "its checkpoint's transaction has committed. "
        "Sender lag: how far the sender fell behind its schedule; load: 1-minute load average "
        f"after the run. Target: p99 under {TARGET_P99_MS:g} ms. "
        "Written by `python -m bench.latency`."
    )
    lines = [
        "# Latency",
        "",
        header,
        "",
        "| contender | records | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | p99 < 50 ms "
        "| sender lag ms | load | status |",
        "|---|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---|",
    ]
    for name, row in table.items():
        if row.get("p99_ms") is None:
            lines.append(f"| {name} | | | | | | | | | | {row['status']} |")
            continue
        cells = " | ".join(f"{row[k]:.1f}" for k in ("p50_ms", "p90_ms", "p99_ms", "p99.9_ms"))
        ok = "yes" if row["p99_ms"] < TARGET_P99_MS and row["status"] == "ok" else "no"
        lines.append(
            f"| {name} | {row['arrived']:,} | {cells} | {row['max_ms']:.1f} | {ok} "
            f"| {row['worst_send_lag_ms']:.0f} | {row['load_1m']:.1f} | {row['status']} |"
        )
    return "\n".join(lines) + "\n"


def combine(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from a contender's rounds: each figure the median over the rounds.

    With ``BENCH_LATENCY_ROUNDS`` above 1 the contenders alternate, like the
    throughput bench's, so a burst of load on a shared machine hits one
    round of each rather than all of one contender; the rounds are kept.
    """
    if len(rows) == 1:
        return rows[0]
    ok = [r for r in rows if r.get("p99_ms") is not None]
    failed = [str(r["status"]) for r in rows if r.get("status") != "ok"]
    out: dict[str, Any] = {**rows[0], "rounds": rows}
    if ok:
        for key in ("startup_s", "worst_send_lag_ms", "load_1m"):
            out[key] = statistics.median(r[key] for r in ok)
        out["arrived"] = sum(r["arrived"] for r in ok)
        out["duplicates"] = sum(r["duplicates"] for r in ok)
        for q in (*PERCENTILES, "max"):
            key = "max_ms" if q == "max" else f"p{q:g}_ms"
            out[key] = round(statistics.median(r[key] for r in ok), 2)
    out["status"] = "ok" if not failed else "; ".join(failed)
    return out


def main() -> None:
    rate = int(os.environ.get("BENCH_RATE", "5000"))
    seconds = float(os.environ.get("BENCH_LATENCY_SECONDS", "20"))
    chosen = os.environ.get("BENCH_CONTENDERS")
    names = [n for n in CONTENDERS if n in (chosen.split(",") if chosen else DEFAULT)]
    RESULTS.mkdir(parents=True, exist_ok=True)
    rounds = int(os.environ.get("BENCH_LATENCY_ROUNDS", "1"))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with bench_broker(os.environ.get("BENCH_BROKERS")) as (bootstrap, fresh):
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for r in range(rounds):
            for k, name in enumerate(names):
                warmup = COLD_WARMUP_S if fresh and r == 0 and k == 0 else WARMUP_S
                try:
                    row = measure(name, bootstrap, admin, rate, seconds, warmup)
                except RuntimeError as e:
                    row = {"what": CONTENDERS[name], "status": f"did not run: {e}"}
                runs[name].append(row)
                print(f"[{r + 1}/{rounds}] {name:16} {row}", flush=True)
        del admin  # no client left retrying against a stopped broker
    table = {name: combine(rows) for name, rows in runs.items()}
    meta = {
        "started": started,
        "rate": rate,
        "seconds": seconds,
        "rounds": rounds,
        "warmup_seconds": WARMUP_S,
        "cold_broker_warmup_seconds": COLD_WARMUP_S if fresh else None,
        "target_p99_ms": TARGET_P99_MS,
        "machine": f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
    }
    (RESULTS / "latency.json").write_text(
        json.dumps({**meta, "contenders": table}, indent=1) + "\n"
    )
    text = markdown(meta, table)
    (RESULTS / "latency.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
