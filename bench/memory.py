"""Peak memory of a worker behind a 1,000,000-record backlog with a slow agent.

Runs the same slow pipeline twice in one go against the local broker: with
streamkit's default buffer bounds, and with the bounds lifted (what a
runtime without backpressure does). The ratio is the point; absolute numbers
vary by machine.

Usage: python -m bench.memory [BOOTSTRAP] (default: starts a LocalKafka)
Environment: BENCH_N (records, default 1,000,000), BENCH_SECONDS (per run, default 30).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient

from bench.quick import fill
from streamkit.backends.kafka import ensure_topics
from streamkit.localkafka import LocalKafka, free_ports
from streamkit.topics import Topic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "memory.json"

VARIANTS = {
    "bounded (defaults)": {},
    "unbounded": {
        "STREAMKIT_MAX_BUFFERED_RECORDS": "100000000",
        "STREAMKIT_MAX_BUFFERED_BYTES": "100000000000",
        "STREAMKIT_CONSUMER_QUEUED_MAX_MESSAGES_KBYTES": "2000000",
    },
}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_variant(
    bootstrap: str, topic: str, env_extra: dict[str, str], seconds: float
) -> dict[str, float]:
    group = f"bench-mem-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "STREAMKIT_BROKERS": bootstrap,
        "STREAMKIT_LOG_LEVEL": "warning",
        "STREAMKIT_CREATE_TOPICS": "false",
        "BENCH_APP": group,
        "BENCH_IN": topic,
        "BENCH_OUT": f"{topic}-out",
        "PYTHONPATH": str(ROOT),
        **env_extra,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamkit", "run", "bench.slow_app:app"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    samples: list[float] = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            if proc.poll() is not None:
                raise SystemExit(f"worker exited with {proc.returncode}")
            samples.append(rss_mb(proc.pid))
            time.sleep(0.25)
    finally:
        proc.terminate()
        proc.wait(60)
    half = len(samples) // 2
    return {
        "peak_rss_mb": round(max(samples), 1),
        "rss_at_half_mb": round(samples[half], 1),
        "rss_at_end_mb": round(samples[-1], 1),
    }


def main() -> None:
    n = int(os.environ.get("BENCH_N", "1000000"))
    seconds = float(os.environ.get("BENCH_SECONDS", "30"))
    broker = None
    if len(sys.argv) > 1:
        bootstrap = sys.argv[1]
    else:
        port, ctrl = free_ports(2)
        broker = LocalKafka(
            port, controller_port=ctrl, data_dir=Path(f"/tmp/streamkit-bench-{port}")
        )
        broker.start()
        bootstrap = broker.bootstrap
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        topic = f"bench-mem-{uuid.uuid4().hex[:6]}"
        ensure_topics(admin, [Topic(topic, partitions=6), Topic(f"{topic}-out", partitions=6)])
        t0 = time.monotonic()
        fill(bootstrap, topic, n)
        print(f"backlog: {n:,} records in {time.monotonic() - t0:.1f}s")
        results = {}
        for name, extra in VARIANTS.items():
            results[name] = run_variant(bootstrap, topic, extra, seconds)
            print(f"{name:20} {results[name]}")
        bounded = results["bounded (defaults)"]["peak_rss_mb"]
        unbounded = results["unbounded"]["peak_rss_mb"]
        print(f"unbounded / bounded peak RSS: {unbounded / bounded:.1f}x")
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            json.dumps({"records": n, "seconds_per_run": seconds, "results": results}, indent=2)
            + "\n"
        )
        admin.delete_topics([topic, f"{topic}-out"])
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
