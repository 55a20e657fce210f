"""Throughput over SASL_SSL against PLAINTEXT, on the same pipeline, in one run.

Two local brokers on this machine, the same settings but for the listener:
one PLAINTEXT, one secure (``LocalKafka(security=...)``: SASL_SSL with a
SCRAM-SHA-512 user, the standard authorizer and ACLs). Each gets the same N
JSON records (``bench.quick.record``, about 150 bytes, 6 partitions); then
``bench.child streamkit-sync``, the JSON pipeline of ``bench.run`` (decode,
``total = price * qty``, encode, produce, commit at least once), runs on a
fresh group and output topic, alternating between the two brokers for
``BENCH_REPEATS`` rounds, after one round that is not counted: the first
run on a fresh broker also times its JIT warming up (53,000 records/s on
PLAINTEXT where the later rounds made 88,000-92,000). The secure runs get their settings the way a
deployment passes them: ``STREAMKIT_KAFKA_*`` environment variables.

Measured as ``bench.run`` does: records/s from the output holding 10% of N
to holding N (start-up and group join apart, as start-up seconds), and the
worker's CPU seconds per million records over the same span. The medians,
and the ratio SASL_SSL / PLAINTEXT per round, go to
``bench/results/secure.md``.

Usage: python -m bench.secure
Environment: BENCH_N (default 300,000), BENCH_REPEATS (default 3),
BENCH_TIMEOUT (seconds per run, default 60 + records / 2,000).
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from bench.broker import start, stop
from bench.quick import record
from bench.run import PARTITIONS, POLL_S, RESULTS, ROOT, Marks, output_size, tail
from streamkit.backends.kafka import ensure_topics
from streamkit.localkafka import LocalKafka, free_ports
from streamkit.localkafka.security import Security
from streamkit.topics import Topic

CONTENDER = "streamkit-sync"
USER = "bench"


class _Quiet:
    """librdkafka's log lines of the bench's own clients, dropped."""

    def log(self, *_args: Any) -> None:
        pass


@dataclass
class Side:
    """One broker and how clients reach it."""

    name: str
    kafka: LocalKafka
    client: dict[str, Any]  # librdkafka properties for the bench's own clients
    env: dict[str, str]  # STREAMKIT_* for the worker
    runs: list[dict[str, float]] = field(default_factory=list)


@contextmanager
def brokers() -> Iterator[list[Side]]:
    """A PLAINTEXT and a secure broker, on free ports, removed at the end."""
    root = Path(tempfile.mkdtemp(prefix="streamkit-bench-secure-"))
    started: list[LocalKafka] = []
    try:
        sides = []
        for name in ("PLAINTEXT", "SASL_SSL"):
            port, ctrl = free_ports(2)
            secure = Security(users=(USER,)) if name == "SASL_SSL" else None
            kafka = LocalKafka(
                port, controller_port=ctrl, data_dir=root / name, heap="1g", security=secure
            )
            kafka.start()
            started.append(kafka)
            if secure is None:
                client: dict[str, Any] = {"bootstrap.servers": kafka.bootstrap}
                env = {"STREAMKIT_BROKERS": kafka.bootstrap}
            else:
                client = dict(kafka.secure_cluster.client_config(USER))
                env = kafka.secure_cluster.streamkit_env(USER)
            sides.append(Side(name, kafka, {**client, "logger": _Quiet()}, env))
        yield sides
    finally:
        for kafka in started:
            kafka.stop()
        shutil.rmtree(root, ignore_errors=True)


def fill(client: dict[str, Any], topic: str, n: int) -> None:
    producer = Producer({**client, "linger.ms": 20})
    for i in range(n):
        while True:
            try:
                producer.produce(topic, orjson.dumps(record(i)), f"k{i % 1000}".encode())
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0


def run_one(
    side: Side, admin: AdminClient, probe: Consumer, source: str, n: int
) -> dict[str, float]:
    """One run of the pipeline against one broker, on a fresh group and output topic."""
    run_id = uuid.uuid4().hex[:6]
    sink = f"{source}-out-{run_id}"
    ensure_topics(admin, [Topic(sink, partitions=PARTITIONS)])
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKIT_")}
    env = {
        **base,
        **side.env,
        "BENCH_BROKERS": side.kafka.bootstrap,
        "BENCH_IN": source,
        "BENCH_OUT": sink,
        "BENCH_GROUP": f"bench-secure-{run_id}",
        "BENCH_N": str(n),
        "PYTHONPATH": str(ROOT),
        "STREAMKIT_LOG_LEVEL": "warning",
    }
    timeout = float(os.environ.get("BENCH_TIMEOUT", 60 + n / 2000))
    log = RESULTS / f"secure-{side.name}.log.tmp"
    started = time.monotonic()
    popen = start([sys.executable, "-m", "bench.child", CONTENDER], env, log)
    marks = Marks(n, psutil.Process(popen.pid))
    try:
        while True:
            size = output_size(probe, sink)
            now = time.monotonic()
            marks.passed(size, size, now)
            if marks.done_at is not None:
                break
            if popen.poll() is not None:
                raise RuntimeError(f"{side.name}: exited with {popen.returncode}: {tail(log)}")
            if now - started > timeout:
                raise RuntimeError(f"{side.name}: timed out at {size:,}/{n:,}: {tail(log)}")
            time.sleep(POLL_S)
    finally:
        stop(popen)
        admin.delete_topics([sink])
    first_at, warm_at, done_at = marks.first_at, marks.warm_at, marks.done_at
    assert first_at is not None and warm_at is not None and done_at is not None
    counted = n - marks.warm_size
    return {
        "records_per_s": round(counted / max(done_at - warm_at, POLL_S)),
        "startup_s": round(first_at - started, 2),
        "cpu_s_per_million": round(
            (marks.cpu_at_done - marks.cpu_at_warm) / max(counted, 1) * 1e6, 1
        ),
        "peak_rss_mb": round(marks.peak_mb, 1),
        "load_1m": round(os.getloadavg()[0], 2),
    }


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def report(sides: list[Side], n: int, repeats: int, started: datetime) -> str:
    plain, secure = sides
    ratios = [
        s["records_per_s"] / p["records_per_s"]
        for p, s in zip(plain.runs, secure.runs, strict=True)
    ]
    cpu = [
        s["cpu_s_per_million"] / p["cpu_s_per_million"]
        for p, s in zip(plain.runs, secure.runs, strict=True)
    ]
    lines = [
        "# Throughput over SASL_SSL against PLAINTEXT",
        "",
        f"`python -m bench.secure`, {started:%Y-%m-%d %H:%M} UTC: {n:,} JSON records "
        f"(~150 bytes, {PARTITIONS} partitions), the `{CONTENDER}` pipeline of `bench.run`, "
        f"{repeats} rounds (after one not counted, to warm the brokers up) alternating "
        "between two local Kafka brokers on this machine "
        f"({os.cpu_count()} cores, shared): one PLAINTEXT, one SASL_SSL with SCRAM-SHA-512, "
        "the standard authorizer and ACLs. Medians; the ratio is the median of the per-round "
        "ratios.",
        "",
        "| listener | records/s | CPU s per million | start-up s | peak RSS MB | load (1 min) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for side in sides:
        lines.append(
            f"| {side.name} | {median(side.runs, 'records_per_s'):,.0f} "
            f"| {median(side.runs, 'cpu_s_per_million'):.1f} "
            f"| {median(side.runs, 'startup_s'):.2f} "
            f"| {median(side.runs, 'peak_rss_mb'):.0f} "
            f"| {median(side.runs, 'load_1m'):.2f} |"
        )
    lines += [
        "",
        f"SASL_SSL / PLAINTEXT: **{statistics.median(ratios):.2f}x** the records/s "
        f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}), "
        f"{statistics.median(cpu):.2f}x the worker's CPU per record.",
        "",
        "Per run (records/s):",
        "",
    ]
    for side in sides:
        rates = ", ".join(f"{r['records_per_s']:,}" for r in side.runs)
        lines.append(f"- {side.name}: {rates}")
    return "\n".join(lines) + "\n"


def main() -> None:
    n = int(os.environ.get("BENCH_N", "300000"))
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    started = datetime.now(UTC)
    logging.basicConfig(level=logging.WARNING)
    RESULTS.mkdir(exist_ok=True)
    with brokers() as sides:
        clients = []
        for side in sides:
            admin = AdminClient(side.client)
            source = f"bench-secure-in-{uuid.uuid4().hex[:6]}"
            ensure_topics(admin, [Topic(source, partitions=PARTITIONS)])
            print(f"{side.name}: filling {source} with {n:,} records", flush=True)
            fill(side.client, source, n)
            probe = Consumer({**side.client, "group.id": "bench-secure-probe"})
            clients.append((admin, probe, source))
        for round_no in range(repeats + 1):
            for side, (admin, probe, source) in zip(sides, clients, strict=True):
                result = run_one(side, admin, probe, source, n)
                if round_no > 0:  # round 0 warms the brokers up
                    side.runs.append(result)
                print(f"round {round_no} {side.name}: {result}", flush=True)
        for _, probe, _ in clients:
            probe.close()
    text = report(sides, n, repeats, started)
    (RESULTS / "secure.md").write_text(text)
    for side in sides:
        (RESULTS / f"secure-{side.name}.log.tmp").unlink(missing_ok=True)
    print(text)


if __name__ == "__main__":
    main()
