"""Tables (stateful agents): restore, warm restart, throughput and memory, in one run.

Usage: python -m bench.tables
Environment:
    BENCH_N               keyed records for the throughput runs (default 200,000)
    BENCH_KEYS            distinct keys among them (default 10,000)
    BENCH_RESTORE_KEYS    changelog records for the restore (default 1,000,000)
    BENCH_WARM_RECORDS    changelog records added before the warm restart (default 1,000)
    BENCH_MEMORY_KEYS     changelog records for the memory run (default 5,000,000)
    BENCH_MEMORY_RECORDS  records processed after that restore (default 100,000)
    BENCH_REPEATS         throughput rounds, contenders alternating (default 2)
    BENCH_BROKERS         use this broker instead of starting a LocalKafka
    BENCH_TABLES_PHASES   comma-separated subset of restore,throughput,memory (default all)
    BENCH_TABLES_BACKENDS comma-separated stores for the restore (default: sqlite,
                          rocksdb if rocksdict and streamkit.state.stores.rocksdb import, memory)
    BENCH_TABLES_OUT      results name under bench/results (default ``tables``: tables.md, .json)
    BENCH_TABLES_TIMING   stores that also get a diagnostic restore through bench.tables_timing
                          (default sqlite,rocksdb; empty: none)

``python -m bench.tables --report`` redraws tables.md from tables.json.

Every streamkit worker is ``python -m streamkit run bench.tables_app:app`` with
``STREAMKIT_LOG_FORMAT=json`` at info level; its output is read line by line on
a thread, each line stamped when it arrives, and kept in
``bench/results/tables-<label>.log.tmp``. What is measured (bench/README.md,
"Tables (stateful agents)"):

1. **Restore.** Per store backend, its own app (so its own changelog,
   ``<app>.counts.changelog``, 6 partitions, compacted) is filled directly with
   BENCH_RESTORE_KEYS distinct keys, JSON int values, without the
   ``streamkit-src`` header (a restore always applies those). A worker starts
   on an empty state dir; timed from process start to the last of the six
   ``table partition restored`` lines, next to the sum of their ``seconds``.
   Then 600 input records over restored keys are processed and every output's
   ``n`` checked against the changelog's value + 1, and the worker gets SIGTERM.
2. **Warm restart.** BENCH_WARM_RECORDS more changelog records (updates of
   restored keys), then the same worker again: same state dir, same
   ``STREAMKIT_GROUP_INSTANCE_ID``. Timed the same way, and checked the same
   way on keys of the tail and of the old part. (The memory store keeps
   nothing on disk: its "warm" restart is a full restore again.)
3. **Throughput.** BENCH_N records over BENCH_KEYS keys in a 6-partition
   topic; each contender counts per key (streamkit with the table per store
   and guarantee; streamkit without the table; Quix Streams' stateful
   ``apply``, both guarantees) on a fresh group, app, state dir and output.
   records/s and CPU from 10% to 100% of the output (as ``bench.run``); the
   output is read back afterwards and each key's counts checked.
4. **Memory.** A BENCH_MEMORY_KEYS-key changelog restored by one worker
   (rocksdb if available, else sqlite), RSS sampled every 0.1 s; then
   BENCH_MEMORY_RECORDS records over those keys, checked like (1).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient

from bench.broker import bench_broker, stop
from bench.run import (
    WARM,
    CommittedCount,
    Contender,
    ensure_venv,
    output_size,
    reader,
    sample,
)
from streamkit.backends.kafka import ensure_topics
from streamkit.state.table import Table
from streamkit.topics import Topic

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
PARTITIONS = 6
APP = "bench.tables_app:app"
POLL_S = 0.05
CHECKS = 600  # input records checked after a restore
GOALS = {
    "restore_s": 10.0,
    "warm_s": 1.0,
    "vs_quix": 2.0,
    "cpu_vs_no_table": 1.5,
    "rss_mb": 300.0,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def partition_of(key: bytes) -> int:
    """librdkafka's default partitioner (consistent_random: CRC32), as streamkit's tables use."""
    return zlib.crc32(key) % PARTITIONS


# -- the backends -------------------------------------------------------------


def backends() -> list[str]:
    """sqlite, rocksdb if it imports (waiting a few minutes for its module), memory."""
    chosen = os.environ.get("BENCH_TABLES_BACKENDS")
    if chosen:
        return chosen.split(",")
    found = ["sqlite"]
    try:
        importlib.import_module("rocksdict")
    except ImportError:
        log("rocksdict is not installed: no rocksdb store")
    else:
        for attempt in range(5):
            try:
                importlib.import_module("streamkit.state.stores.rocksdb")
                found.append("rocksdb")
                break
            except ImportError as e:
                log(f"streamkit.state.stores.rocksdb does not import yet ({e}); retry in 60 s")
                if attempt < 4:
                    time.sleep(60)
    return [*found, "memory"]


# -- processes ------------------------------------------------------------------


class Proc:
    """A worker process: its output read on a thread, each line stamped on arrival.

    JSON lines (streamkit's ``log_format=json``) are parsed into ``events``;
    everything goes to ``log_path``. Optionally samples VmRSS every 0.1 s.
    """

    def __init__(
        self, argv: list[str], env: dict[str, str], log_path: Path, rss: bool = False
    ) -> None:
        self.log_path = log_path
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.other: list[str] = []  # non-JSON lines (librdkafka, tracebacks)
        self.cond = threading.Condition()
        self.rss_samples: list[tuple[float, float]] = []
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            argv,
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.proc = psutil.Process(self.popen.pid)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._sampling = rss
        if rss:
            threading.Thread(target=self._sample, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        with self.log_path.open("wb") as out:
            for raw in self.popen.stdout:
                now = time.monotonic()
                out.write(raw)
                line = raw.decode(errors="replace").strip()
                event = None
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        event = orjson.loads(line)
                with self.cond:
                    if isinstance(event, dict):
                        self.events.append((now, event))
                    elif line:
                        self.other.append(line)
                    self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def _sample(self) -> None:
        path = Path(f"/proc/{self.popen.pid}/status")
        while self._sampling and self.popen.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                for line in path.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.rss_samples.append((time.monotonic(), int(line.split()[1]) / 1024))
            time.sleep(0.1)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def named(self, name: str) -> list[tuple[float, dict[str, Any]]]:
        with self.cond:
            return [(t, e) for t, e in self.events if e.get("event") == name]

    def restored(self) -> dict[int, tuple[float, dict[str, Any]]]:
        """The first ``table partition restored`` line of each partition."""
        found: dict[int, tuple[float, dict[str, Any]]] = {}
        for t, e in self.named("table partition restored"):
            found.setdefault(int(e["partition"]), (t, e))
        return found

    def wait_restored(self, timeout: float) -> dict[int, tuple[float, dict[str, Any]]]:
        """Wait until every partition's table slice is restored; raises RuntimeError."""
        deadline = self.started + timeout
        while True:
            found = self.restored()
            if len(found) >= PARTITIONS:
                return found
            if self.popen.poll() is not None:
                raise RuntimeError(f"exited with {self.popen.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{len(found)} of {PARTITIONS} partitions restored after {timeout:.0f}s: "
                    f"{self.tail()}"
                )
            with self.cond:
                self.cond.wait(0.2)

    def problems(self) -> list[str]:
        """Warnings and errors the worker logged (JSON), and librdkafka's errors."""
        out = []
        with self.cond:
            for _, e in self.events:
                if e.get("level") in ("warning", "error", "critical"):
                    out.append(orjson.dumps(e).decode()[:400])
            for line in self.other:
                if line.startswith("%3|") or "Traceback" in line or "Error" in line[:40]:
                    out.append(line[:400])
        return out

    def check(self, timeout: float, progress: str) -> None:
        """Raise if the worker exited or ran past ``timeout`` s; ``progress``: how far it got."""
        if self.popen.poll() is not None:
            raise RuntimeError(f"exited with {self.popen.returncode} at {progress}: {self.tail()}")
        if time.monotonic() - self.started > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f}s at {progress}: {self.tail()}")

    def tail(self, n: int = 3) -> str:
        with self.cond:
            lines = [orjson.dumps(e).decode() for _, e in self.events[-n:]] + self.other[-n:]
        return " | ".join(x[:240] for x in lines)

    def stop(self) -> float:
        """SIGTERM, wait (SIGKILL after 30 s); the seconds it took."""
        t0 = time.monotonic()
        stop(self.popen)
        self._sampling = False
        self._reader.join(10)
        return time.monotonic() - t0


def streamkit_env(
    bootstrap: str,
    app: str,
    source: str,
    sink: str,
    state_dir: Path,
    store: str,
    guarantee: str = "at_least_once",
    table: bool = True,
    instance: str | None = None,
    level: str = "info",
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMKIT_", "BENCH_"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "BENCH_APP": app,
            "BENCH_IN": source,
            "BENCH_OUT": sink,
            "BENCH_TABLE": "1" if table else "0",
            "STREAMKIT_BROKERS": bootstrap,
            "STREAMKIT_GROUP_ID": app,
            "STREAMKIT_STATE_DIR": str(state_dir),
            "STREAMKIT_STATE_STORE": store,
            "STREAMKIT_PROCESSING_GUARANTEE": guarantee,
            "STREAMKIT_LOG_FORMAT": "json",
            "STREAMKIT_LOG_LEVEL": level,
        }
    )
    if instance:
        env["STREAMKIT_GROUP_INSTANCE_ID"] = instance
    return env


def worker_argv() -> list[str]:
    return [sys.executable, "-m", "streamkit", "run", APP]


# -- topics and records -------------------------------------------------------------


def changelog_topic(app: str) -> Topic:
    """The table's changelog as streamkit declares it (compacted, 6 partitions)."""
    return Table(app, "counts", default=0).changelog(PARTITIONS)


def producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
        }
    )


def produce_all(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]]) -> int:
    """Produce ``(key, value)`` pairs, each to its key's partition; returns how many."""
    p = producer(bootstrap)
    produce, poll = p.produce, p.poll
    crc = zlib.crc32
    n = 0
    for key, value in records:
        part = crc(key) % PARTITIONS
        while True:
            try:
                produce(topic, value, key, part)
                break
            except BufferError:
                poll(0.05)
        n += 1
        if n % 20_000 == 0:
            poll(0)
    if p.flush(120) != 0:
        raise RuntimeError(f"{topic}: records left unsent after 120 s")
    return n


def changelog_value(i: int, version: int = 0) -> bytes:
    """The changelog's value (a JSON int, the count) of key index ``i``."""
    return b"%d" % ((i * 7 + version * 13) % 1000 + 1)


def read_output(
    bootstrap: str, topic: str, committed: bool, want: int | None = None, timeout: float = 60
) -> list[tuple[str, int]]:
    """Every output record ``(key, n)``, from the start to each partition's end.

    With ``want``, waits (up to ``timeout``) until that many records arrived.
    """
    consumer = reader(bootstrap, topic, committed, eof=True)
    out: list[tuple[str, int]] = []
    ended: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        ended.add(int(msg.partition() or 0))
                    continue
                ended.discard(int(msg.partition() or 0))
                v = orjson.loads(msg.value() or b"null")
                out.append((v["key"], v["n"]))
            if want is not None:
                if len(out) >= want:
                    break
            elif len(ended) >= PARTITIONS:
                break
    finally:
        consumer.close()
    return out


def check_outputs(
    bootstrap: str,
    app: str,
    source: str,
    sink: str,
    keys: list[bytes],
    expected: Callable[[bytes], int],
    proc: Proc,
    timeout: float = 90,
) -> dict[str, Any]:
    """Send one record per key; each output's ``n`` must be the restored value + 1."""
    t0 = time.monotonic()
    produce_all(bootstrap, source, ((k, b'{"check":1}') for k in keys))
    got = read_output(bootstrap, sink, committed=True, want=len(keys), timeout=timeout)
    by_key: dict[str, list[int]] = defaultdict(list)
    for key, n in got:
        by_key[key].append(n)
    wrong = []
    for k in keys:
        want = expected(k) + 1
        ns = by_key.get(k.decode(), [])
        if ns != [want]:
            wrong.append(f"{k.decode()}: n={ns} expected [{want}]")
    result = {
        "checked": len(keys),
        "outputs": len(got),
        "wrong": len(wrong),
        "examples": wrong[:5],
        "seconds": round(time.monotonic() - t0, 2),
    }
    if proc.popen.poll() is not None:
        result["exited"] = proc.popen.returncode
    return result


# -- 1 and 2: restore and warm restart ---------------------------------------------


def measure_restore(proc: Proc, timeout: float) -> dict[str, Any]:
    found = proc.wait_restored(timeout)
    last_at = max(t for t, _ in found.values())
    cpu, hwm = sample(proc.proc)
    events = [e for _, e in sorted(found.values(), key=lambda x: x[1]["partition"])]
    assigned = proc.named("partitions assigned")
    started = proc.named("started")
    progress = proc.named("restoring table partition")
    return {
        "wall_s": round(last_at - proc.started, 2),
        "seconds_sum": round(sum(float(e["seconds"]) for e in events), 3),
        "seconds_max": round(max(float(e["seconds"]) for e in events), 3),
        "records": sum(int(e["records"]) for e in events),
        "skipped_uncommitted": sum(int(e.get("skipped_uncommitted", 0)) for e in events),
        "sources": sorted({str(e["source"]) for e in events}),
        "per_partition": [
            {k: e.get(k) for k in ("partition", "records", "seconds", "source")} for e in events
        ],
        "started_s": round(started[0][0] - proc.started, 2) if started else None,
        "assigned_s": round(assigned[0][0] - proc.started, 2) if assigned else None,
        "assigned_to_restored_s": (round(last_at - assigned[0][0], 2) if assigned else None),
        "progress_lines": [
            {k: e.get(k) for k in ("partition", "records", "of", "per_s")} for _, e in progress
        ],
        "cpu_s": round(cpu, 2),
        "peak_rss_mb": round(hwm, 1),
    }


def restore_phase(bootstrap: str, admin: AdminClient, tag: str, work: Path) -> dict[str, Any]:
    keys_n = env_int("BENCH_RESTORE_KEYS", 1_000_000)
    warm_n = env_int("BENCH_WARM_RECORDS", 1_000)
    timeout = 120 + keys_n / 5_000
    out: dict[str, Any] = {"keys": keys_n, "warm_records": warm_n, "backends": {}}
    rng = random.Random(7)
    for store in backends():
        app = f"bt{tag}-restore-{store}"
        # Each run its own output topic, so a check reads only what that run emitted.
        source, sink, warm_sink = f"{app}-in", f"{app}-out-cold", f"{app}-out-warm"
        changelog = changelog_topic(app)
        ensure_topics(
            admin,
            [Topic(t, partitions=PARTITIONS) for t in (source, sink, warm_sink)] + [changelog],
        )
        t0 = time.monotonic()
        produce_all(
            bootstrap,
            changelog.name,
            ((b"key%d" % i, changelog_value(i)) for i in range(keys_n)),
        )
        log(f"restore[{store}]: {keys_n:,} changelog records in {time.monotonic() - t0:.1f}s")
        state = work / f"restore-{store}"
        shutil.rmtree(state, ignore_errors=True)
        instance = f"{app}-0"
        row: dict[str, Any] = {}
        out["backends"][store] = row
        env = streamkit_env(bootstrap, app, source, sink, state, store, instance=instance)

        # 1. Cold: an empty state dir.
        proc = Proc(worker_argv(), env, RESULTS / f"tables-restore-{store}-cold.log.tmp")
        try:
            cold = measure_restore(proc, timeout)
            log(
                f"restore[{store}] cold: {cold['records']:,} records, wall {cold['wall_s']}s, "
                f"sum of seconds {cold['seconds_sum']}s, peak RSS {cold['peak_rss_mb']:.0f} MB"
            )
            sample_ix = rng.sample(range(keys_n), min(CHECKS, keys_n))
            cold["check"] = check_outputs(
                bootstrap,
                app,
                source,
                sink,
                [b"key%d" % i for i in sample_ix],
                lambda k: int(changelog_value(int(k[3:]))),
                proc,
            )
            log(f"restore[{store}] cold check: {cold['check']}")
        except RuntimeError as e:
            cold = {"error": str(e)}
            log(f"restore[{store}] cold FAILED: {e}")
        cold["stop_s"] = round(proc.stop(), 2)
        cold["exit_code"] = proc.popen.returncode
        cold["problems"] = proc.problems()
        row["cold"] = cold
        if "error" in cold:
            continue
        checked = set(sample_ix)

        # 2. Warm: more changelog records (updates of restored keys), same dir and instance id.
        warm_ix = rng.sample([i for i in range(keys_n) if i not in checked], min(warm_n, keys_n))
        produce_all(
            bootstrap,
            changelog.name,
            ((b"key%d" % i, changelog_value(i, version=1)) for i in warm_ix),
        )
        updated = set(warm_ix)
        env = streamkit_env(bootstrap, app, source, warm_sink, state, store, instance=instance)
        proc = Proc(worker_argv(), env, RESULTS / f"tables-restore-{store}-warm.log.tmp")
        try:
            warm = measure_restore(proc, timeout)
            log(
                f"restore[{store}] warm: {warm['records']:,} records, wall {warm['wall_s']}s, "
                f"sum of seconds {warm['seconds_sum']}s, sources {warm['sources']}"
            )
            # Keys of the tail, and keys checked in the cold run (now one higher).
            picks = warm_ix[: CHECKS // 2] + sample_ix[: CHECKS // 2]

            def expected(k: bytes, updated: set[int] = updated, checked: set[int] = checked) -> int:
                i = int(k[3:])
                if i in updated:
                    return int(changelog_value(i, version=1))
                return int(changelog_value(i)) + (1 if i in checked else 0)

            warm["check"] = check_outputs(
                bootstrap, app, source, warm_sink, [b"key%d" % i for i in picks], expected, proc
            )
            log(f"restore[{store}] warm check: {warm['check']}")
        except RuntimeError as e:
            warm = {"error": str(e)}
            log(f"restore[{store}] warm FAILED: {e}")
        warm["stop_s"] = round(proc.stop(), 2)
        warm["exit_code"] = proc.popen.returncode
        warm["problems"] = proc.problems()
        row["warm"] = warm
        if store in timing_stores():
            row["timing"] = timing_runs(
                bootstrap,
                admin,
                app,
                source,
                changelog.name,
                work / f"timing-{store}",
                store,
                instance,
                warm_n,
            )
        delete_topics(admin, app)
        shutil.rmtree(state, ignore_errors=True)
    return out


def timing_stores() -> list[str]:
    return [s for s in os.environ.get("BENCH_TABLES_TIMING", "sqlite,rocksdb").split(",") if s]


def timing_runs(
    bootstrap: str,
    admin: AdminClient,
    app: str,
    source: str,
    changelog: str,
    state: Path,
    store: str,
    instance: str,
    warm_n: int,
) -> dict[str, Any]:
    """A diagnostic cold + warm restore through bench.tables_timing: where the time goes.

    Not the measured figures (every step logs a line): same app, group and
    instance id (a new id would wait for the old static member's session to
    expire), a fresh state dir.
    """
    sink = f"{app}-out-timing"
    ensure_topics(admin, [Topic(sink, partitions=PARTITIONS)])
    shutil.rmtree(state, ignore_errors=True)
    env = streamkit_env(bootstrap, app, source, sink, state, store, instance=instance)
    argv = [sys.executable, "-m", "bench.tables_timing", "run", APP]
    out: dict[str, Any] = {}
    for run in ("cold", "warm"):
        if run == "warm":
            produce_all(bootstrap, changelog, ((b"key%d" % i, b"1") for i in range(warm_n)))
        proc = Proc(argv, env, RESULTS / f"tables-timing-{store}-{run}.log.tmp")
        try:
            m = measure_restore(proc, 120 + env_int("BENCH_RESTORE_KEYS", 1_000_000) / 5_000)
            out[run] = {
                "wall_s": m["wall_s"],
                "seconds_sum": m["seconds_sum"],
                "records": m["records"],
                "steps": step_summary(proc),
            }
            log(f"timing[{store}] {run}: wall {m['wall_s']}s, sum {m['seconds_sum']}s")
        except RuntimeError as e:
            out[run] = {"error": str(e)}
        time.sleep(1)  # the last slice's step lines come after its restored line
        proc.stop()
    shutil.rmtree(state, ignore_errors=True)
    return out


def step_summary(proc: Proc) -> list[dict[str, Any]]:
    """The ``restore step`` lines of bench.tables_timing, added up per step."""
    agg: dict[str, dict[str, Any]] = {}
    for _, e in proc.named("restore step"):
        label = str(e["step"])
        if label == "read batch":
            full = int(e["records"]) >= 10_000
            label = "read batch: a full one (10,000)" if full else "read batch: the last, partial"
        a = agg.setdefault(label, {"step": label, "calls": 0, "total_ms": 0.0, "max_ms": 0.0})
        a["calls"] += 1
        a["total_ms"] = round(a["total_ms"] + float(e["ms"]), 1)
        a["max_ms"] = max(a["max_ms"], float(e["ms"]))
        if "records" in e:
            a["records"] = a.get("records", 0) + int(e["records"])
    return sorted(agg.values(), key=lambda a: -a["total_ms"])


# -- 3: throughput -------------------------------------------------------------------


def contenders(stores: list[str]) -> list[dict[str, Any]]:
    out = []
    for store in [s for s in stores if s != "memory"]:
        for g, short in (("at_least_once", "alo"), ("exactly_once", "eos")):
            out.append(
                {
                    "name": f"sk-table-{store}-{short}",
                    "kind": "streamkit",
                    "store": store,
                    "guarantee": g,
                    "table": True,
                }
            )
    for g, short in (("at_least_once", "alo"), ("exactly_once", "eos")):
        out.append(
            {
                "name": f"sk-no-table-{short}",
                "kind": "streamkit",
                "store": "sqlite",
                "guarantee": g,
                "table": False,
            }
        )
    for g, short in (("at-least-once", "alo"), ("exactly-once", "eos")):
        out.append({"name": f"quix-{short}", "kind": "quix", "guarantee": g, "table": True})
    return out


def run_throughput(
    c: dict[str, Any],
    python: Path | None,
    bootstrap: str,
    admin: AdminClient,
    probe: Consumer,
    source: str,
    n: int,
    per_key: Counter[str],
    tag: str,
    work: Path,
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:6]
    app = f"bt{tag}-{c['name']}-{run_id}"
    sink = f"{app}-out"
    state = work / app
    transactional = c["guarantee"].replace("-", "_") == "exactly_once"
    topics = [Topic(sink, partitions=PARTITIONS)]
    if c["kind"] == "streamkit" and c["table"]:
        topics.append(changelog_topic(app))
    ensure_topics(admin, topics)
    log_path = RESULTS / f"tables-{c['name']}.log.tmp"
    if c["kind"] == "streamkit":
        env = streamkit_env(
            bootstrap, app, source, sink, state, c["store"], c["guarantee"], c["table"]
        )
        argv = worker_argv()
    else:
        assert python is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMKIT_", "BENCH_"))}
        env.update(
            {
                "BENCH_BROKERS": bootstrap,
                "BENCH_IN": source,
                "BENCH_OUT": sink,
                "BENCH_GROUP": app,
                "BENCH_STATE_DIR": str(state),
                "BENCH_GUARANTEE": c["guarantee"],
                "PYTHONPATH": "",
            }
        )
        argv = [str(python), str(BENCH / "peers" / "quix_count_app.py")]
    timeout = 60 + n / 1_000
    proc = Proc(argv, env, log_path)
    counter = CommittedCount(bootstrap, sink) if transactional else None
    first_at = warm_at = done_at = visible_at = None
    cpu_warm = cpu_done = peak = 0.0
    warm_size = 0
    try:
        while True:
            size = output_size(probe, sink)
            visible = size if counter is None else counter()
            now = time.monotonic()
            if visible > 0 and first_at is None:
                first_at = now
            if size >= n * WARM and warm_at is None:
                warm_at, warm_size = now, size
                cpu_warm, _ = sample(proc.proc)
            if size >= n and done_at is None:
                done_at = now
                cpu_done, peak = sample(proc.proc)
            if visible >= n:
                visible_at = now
                if done_at is None:
                    done_at = now
                    cpu_done, _ = sample(proc.proc)
                _, peak = sample(proc.proc)
                break
            proc.check(timeout, f"{visible:,}/{n:,}")
            time.sleep(POLL_S)
    except BaseException:
        proc.stop()
        if counter is not None:
            counter.close()
        delete_topics(admin, app)
        shutil.rmtree(state, ignore_errors=True)
        raise
    stop_s = proc.stop()
    if counter is not None:
        counter.close()
    try:
        check = verify_counts(bootstrap, sink, n, per_key, c["table"], transactional)
    finally:
        delete_topics(admin, app)
        shutil.rmtree(state, ignore_errors=True)
    assert first_at is not None and done_at is not None and visible_at is not None
    if warm_at is None:
        warm_at, warm_size, cpu_warm = proc.started, 0, 0.0
    counted = n - warm_size
    if counted <= 0:
        counted, warm_at, cpu_warm = n, proc.started, 0.0
    result = {
        "records_per_s": round(counted / max(done_at - warm_at, POLL_S)),
        "end_to_end_records_per_s": round(n / (visible_at - proc.started)),
        "startup_s": round(first_at - proc.started, 2),
        "cpu_s_per_million": round((cpu_done - cpu_warm) / max(counted, 1) * 1e6, 1),
        "peak_rss_mb": round(peak, 1),
        "stop_s": round(stop_s, 2),
        "load_1m": round(os.getloadavg()[0], 2),
        **check,
    }
    if c["kind"] == "streamkit":
        result["problems"] = proc.problems()[:10]
    return result


def verify_counts(
    bootstrap: str,
    sink: str,
    n: int,
    per_key: Counter[str],
    table: bool,
    transactional: bool,
) -> dict[str, Any]:
    """Read the output back (read_committed): per key, the counts 1..c (or all 1s)."""
    got = read_output(bootstrap, sink, committed=True, timeout=90)
    by_key: dict[str, list[int]] = defaultdict(list)
    for k, v in got:
        by_key[k].append(v)
    wrong = []
    for k, count in per_key.items():
        ns = by_key.get(k, [])
        if not table:
            ok = len(ns) >= count and set(ns) == {1}
        elif transactional:
            ok = sorted(ns) == list(range(1, count + 1))
        else:  # at least once: every count up to c at least once, none above
            ok = set(ns) == set(range(1, count + 1))
        if not ok:
            seen = Counter(ns)
            repeated = sorted(v for v, c in seen.items() if c > 1)
            missing = sorted(set(range(1, count + 1)) - set(ns))
            wrong.append(
                f"{k}: {len(ns)} outputs, highest n {max(ns, default=0)} (expected {count}); "
                f"n repeated: {repeated[:5]}; never emitted: {missing[:5]}"
            )
    return {
        "output_records": len(got),
        "duplicates": len(got) - n,
        "wrong_keys": len(wrong),
        "wrong_examples": wrong[:3],
    }


def throughput_phase(
    bootstrap: str, admin: AdminClient, tag: str, work: Path, stores: list[str]
) -> dict[str, Any]:
    n = env_int("BENCH_N", 200_000)
    keys = env_int("BENCH_KEYS", 10_000)
    repeats = env_int("BENCH_REPEATS", 2)
    source = f"bt{tag}-count-in"
    ensure_topics(admin, [Topic(source, partitions=PARTITIONS)])
    t0 = time.monotonic()

    def records() -> Iterable[tuple[bytes, bytes]]:
        for i in range(n):
            value = {
                "id": i,
                "sku": f"sku-{i % 1000:05d}",
                "price": 19.99,
                "qty": i % 7 + 1,
                "note": "x" * 40,
            }
            yield b"k%d" % (i % keys), orjson.dumps(value)

    produce_all(bootstrap, source, records())
    per_key = Counter(f"k{i % keys}" for i in range(n))
    log(f"throughput: {n:,} records over {keys:,} keys in {time.monotonic() - t0:.1f}s")
    chosen = contenders(stores)
    quix_python: Path | None = None
    table: dict[str, dict[str, Any]] = {c["name"]: {**c, "runs": []} for c in chosen}
    try:
        quix_python = ensure_venv(Contender("quix", requirements=("quixstreams",)))
    except RuntimeError as e:
        for c in chosen:
            if c["kind"] == "quix":
                table[c["name"]]["status"] = f"did not run: {e}"
    probe = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-probe",
            "isolation.level": "read_uncommitted",
        }
    )
    for rep in range(repeats):
        for c in chosen:
            row = table[c["name"]]
            if "status" in row:
                continue
            try:
                result = run_throughput(
                    c, quix_python, bootstrap, admin, probe, source, n, per_key, tag, work
                )
            except RuntimeError as e:
                row["status"] = f"did not run: {e}"
                log(f"[{c['name']}] did not run: {e}")
                continue
            row["runs"].append(result)
            log(
                f"[{rep + 1}/{repeats}] {c['name']:20} {result['records_per_s']:>7,}/s  "
                f"cpu {result['cpu_s_per_million']:5.1f} s/M  rss {result['peak_rss_mb']:.0f} MB  "
                f"wrong keys {result['wrong_keys']}  dup {result['duplicates']}"
            )
    probe.close()
    delete_topics(admin, source)
    for row in table.values():
        if row["runs"]:
            row["median"] = {
                k: statistics.median(r[k] for r in row["runs"])
                for k in (
                    "records_per_s",
                    "end_to_end_records_per_s",
                    "startup_s",
                    "cpu_s_per_million",
                    "peak_rss_mb",
                )
            }
            row.setdefault("status", "ok")
    return {
        "records": n,
        "keys": keys,
        "repeats": repeats,
        "contenders": table,
        "ratios": ratios(table, stores),
    }


def ratios(table: dict[str, dict[str, Any]], stores: list[str]) -> list[dict[str, Any]]:
    """Per-round ratios and their median: table vs Quix (records/s), table vs no table (CPU)."""
    out = []

    def add(a: str, b: str, measure: str, what: str, goal: float, higher: bool) -> None:
        ra, rb = table.get(a, {}).get("runs", []), table.get(b, {}).get("runs", [])
        if not ra or len(ra) != len(rb):
            return
        per = [x[measure] / y[measure] for x, y in zip(ra, rb, strict=True) if y[measure]]
        if not per:
            return
        med = statistics.median(per)
        out.append(
            {
                "a": a,
                "b": b,
                "what": what,
                "measure": measure,
                "per_round": [round(p, 2) for p in per],
                "median": round(med, 2),
                "goal": goal,
                "met": med >= goal if higher else med <= goal,
            }
        )

    for store in [s for s in stores if s != "memory"]:
        for short in ("alo", "eos"):
            add(
                f"sk-table-{store}-{short}",
                f"quix-{short}",
                "records_per_s",
                f"records/s: streamkit table ({store}, {short}) / Quix Streams ({short})",
                GOALS["vs_quix"],
                True,
            )
    for store in [s for s in stores if s != "memory"]:
        for short in ("alo", "eos"):
            add(
                f"sk-table-{store}-{short}",
                f"sk-no-table-{short}",
                "cpu_s_per_million",
                f"CPU per record: streamkit table ({store}, {short}) / no table ({short})",
                GOALS["cpu_vs_no_table"],
                False,
            )
    return out


# -- 4: memory -----------------------------------------------------------------------


def memory_phase(
    bootstrap: str, admin: AdminClient, tag: str, work: Path, stores: list[str]
) -> dict[str, Any]:
    keys_n = env_int("BENCH_MEMORY_KEYS", 5_000_000)
    records_n = env_int("BENCH_MEMORY_RECORDS", 100_000)
    store = "rocksdb" if "rocksdb" in stores else "sqlite"
    app = f"bt{tag}-memory-{store}"
    source, sink = f"{app}-in", f"{app}-out"
    changelog = changelog_topic(app)
    ensure_topics(
        admin, [Topic(source, partitions=PARTITIONS), Topic(sink, partitions=PARTITIONS), changelog]
    )
    t0 = time.monotonic()
    produce_all(
        bootstrap, changelog.name, ((b"m%d" % i, changelog_value(i)) for i in range(keys_n))
    )
    log(f"memory[{store}]: {keys_n:,} changelog records in {time.monotonic() - t0:.1f}s")
    state = work / "memory"
    shutil.rmtree(state, ignore_errors=True)
    env = streamkit_env(bootstrap, app, source, sink, state, store, instance=f"{app}-0")
    proc = Proc(worker_argv(), env, RESULTS / f"tables-memory-{store}.log.tmp", rss=True)
    row: dict[str, Any] = {"keys": keys_n, "records": records_n, "store": store}
    try:
        restore = measure_restore(proc, 120 + keys_n / 5_000)
        done_at = proc.started + restore["wall_s"]
        during = [mb for t, mb in proc.rss_samples if t <= done_at]
        restore["max_sampled_rss_mb"] = round(max(during, default=0.0), 1)
        restore["rss_at_restored_mb"] = round(proc.rss_mb(), 1)
        log(
            f"memory[{store}]: restored {restore['records']:,} in {restore['wall_s']}s wall "
            f"(sum {restore['seconds_sum']}s), peak RSS {restore['peak_rss_mb']:.0f} MB"
        )
        time.sleep(5)
        restore["rss_5s_after_mb"] = round(proc.rss_mb(), 1)
        row["restore"] = restore
        step = max(keys_n // records_n, 1)
        picks = [b"m%d" % (j * step) for j in range(min(records_n, keys_n))]
        t1 = time.monotonic()
        check = check_outputs(
            bootstrap,
            app,
            source,
            sink,
            picks,
            lambda k: int(changelog_value(int(k[1:]))),
            proc,
            timeout=300,
        )
        check["records_per_s"] = round(len(picks) / max(time.monotonic() - t1, 1e-3))
        row["check"] = check
        time.sleep(2)
        _, hwm = sample(proc.proc)
        row["rss_after_processing_mb"] = round(proc.rss_mb(), 1)
        row["peak_rss_mb"] = round(hwm, 1)
        log(
            f"memory[{store}]: processed {check}, RSS {row['rss_after_processing_mb']} MB, "
            f"peak {row['peak_rss_mb']} MB"
        )
    except RuntimeError as e:
        row["error"] = str(e)
        log(f"memory[{store}] FAILED: {e}")
    row["disk_mb"] = round(
        sum(f.stat().st_blocks * 512 for f in state.rglob("*") if f.is_file()) / (1 << 20), 1
    )
    row["stop_s"] = round(proc.stop(), 2)
    row["exit_code"] = proc.popen.returncode
    row["problems"] = proc.problems()
    row["rss_series"] = [
        (round(t - proc.started, 1), round(mb)) for t, mb in proc.rss_samples[::10]
    ]
    delete_topics(admin, app)
    shutil.rmtree(state, ignore_errors=True)
    return row


# -- common --------------------------------------------------------------------------


def delete_topics(admin: AdminClient, prefix: str) -> None:
    """Delete every topic whose name holds ``prefix`` (changelogs, DLQs, Quix's own)."""
    with contextlib.suppress(Exception):
        names = [t for t in admin.list_topics(timeout=10).topics if prefix in t]
        if names:
            for f in admin.delete_topics(names).values():
                with contextlib.suppress(Exception):
                    f.result(30)


def main() -> None:
    if sys.argv[1:] == ["--report"]:
        # Redraw <name>.md from <name>.json without running anything.
        name = os.environ.get("BENCH_TABLES_OUT", "tables")
        save(name, json.loads((RESULTS / f"{name}.json").read_text()))
        print((RESULTS / f"{name}.md").read_text())
        return
    phases = os.environ.get("BENCH_TABLES_PHASES", "restore,throughput,memory").split(",")
    name = os.environ.get("BENCH_TABLES_OUT", "tables")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stores = backends()
    log(f"stores: {', '.join(stores)}; phases: {', '.join(phases)}")
    tag = uuid.uuid4().hex[:4]
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    t0 = time.monotonic()
    result: dict[str, Any] = {
        "started": started,
        "machine": f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
        "commit": git_rev(),
        "code": code_id(),
        "stores": stores,
    }
    work = Path(tempfile.mkdtemp(prefix="bench-tables-"))
    try:
        with bench_broker(os.environ.get("BENCH_BROKERS")) as (bootstrap, _):
            admin = AdminClient({"bootstrap.servers": bootstrap})
            if "restore" in phases:
                result["restore"] = restore_phase(bootstrap, admin, tag, work)
                save(name, result)
            if "throughput" in phases:
                result["throughput"] = throughput_phase(bootstrap, admin, tag, work, stores)
                save(name, result)
            if "memory" in phases:
                result["memory"] = memory_phase(bootstrap, admin, tag, work, stores)
            del admin
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["seconds"] = round(time.monotonic() - t0)
    # Others commit to streamkit while this runs: say so if the code moved.
    result["commit_end"] = git_rev()
    result["code_end"] = code_id()
    result["load_1m_end"] = round(os.getloadavg()[0], 2)
    save(name, result)
    print((RESULTS / f"{name}.md").read_text())
    log(f"done in {result['seconds']} s")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def dirty_hash() -> str:
    """``+dirty-1a2b3c`` (a hash of streamkit's uncommitted changes), or nothing."""
    dirty = git("status", "--porcelain", "streamkit")
    if not dirty:
        return ""
    diff = git("diff", "HEAD", "--", "streamkit") + dirty
    return f"+dirty-{zlib.crc32(diff.encode()):08x}"[:13]


def git_rev() -> str:
    """HEAD, and a hash of streamkit's uncommitted changes if any (``+dirty-1a2b3c``)."""
    try:
        return git("rev-parse", "--short", "HEAD") + dirty_hash()
    except OSError:
        return "unknown"


def code_id() -> str:
    """What the workers run: the git tree of streamkit/ (and its uncommitted changes)."""
    try:
        return git("rev-parse", "--short", "HEAD:streamkit") + dirty_hash()
    except OSError:
        return "unknown"


def save(name: str, result: dict[str, Any]) -> None:
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(result))
    from bench.run import redraw  # bench.run imports this module: resolved at run time

    redraw()  # RESULTS.md shows the tables runs beside the others


def yes(met: bool) -> str:
    return "yes" if met else "**no**"


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Tables (stateful agents): benchmark results",
        "",
        f"{r['started']}, commit {r['commit']}"
        + (
            f" (**{r['commit_end']} at the end: streamkit/ changed during the run**)"
            if r.get("code_end", r.get("code")) != r.get("code")
            else (
                f" (HEAD was {r['commit_end']} at the end; streamkit/ unchanged)"
                if r.get("commit_end", r["commit"]) != r["commit"]
                else ""
            )
        )
        + f", {r['machine']}, stores: "
        f"{', '.join(r['stores'])}. Written by `python -m bench.tables` "
        '(see bench/README.md, "Tables (stateful agents)").',
    ]
    goals: list[tuple[str, str, str]] = []
    rs = r.get("restore")
    if rs:
        lines += [
            "",
            f"## Restore ({rs['keys']:,} changelog keys) and warm restart "
            f"({rs['warm_records']:,} more changelog records)",
            "",
            "wall: process start to the last `table partition restored` line; sum / max: of "
            "those lines' `seconds`; assigned→restored: from `partitions assigned` to the last "
            "restored line. check: input records over restored keys, each output's n = the "
            "changelog value + 1.",
            "",
            "| store | run | records restored | wall s | sum of seconds | max seconds "
            "| start→assigned s | assigned→restored s | source | peak RSS MB | check |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
        ]
        for store, row in rs["backends"].items():
            for run in ("cold", "warm"):
                m = row.get(run)
                if m is None:
                    continue
                if "error" in m:
                    lines.append(f"| {store} | {run} | {m['error'][:200]} | | | | | | | | |")
                    continue
                ch = m.get("check", {})
                check = f"{ch.get('checked', 0) - ch.get('wrong', 0)}/{ch.get('checked', 0)} ok"
                lines.append(
                    f"| {store} | {run} | {m['records']:,} | {m['wall_s']:.2f} "
                    f"| {m['seconds_sum']:.2f} | {m['seconds_max']:.2f} | {m['assigned_s']} "
                    f"| {m['assigned_to_restored_s']} | {', '.join(m['sources'])} "
                    f"| {m['peak_rss_mb']:.0f} | {check} |"
                )
                if run == "cold":
                    goals.append(
                        (
                            f"restore of {rs['keys']:,} keys ≤ {GOALS['restore_s']:g} s ({store})",
                            f"{m['wall_s']:.2f} s wall, {m['seconds_sum']:.2f} s summed",
                            yes(m["wall_s"] <= GOALS["restore_s"]),
                        )
                    )
                elif store != "memory":
                    goals.append(
                        (
                            f"warm restart ≤ {GOALS['warm_s']:g} s ({store})",
                            f"{m['seconds_sum']:.2f} s summed, {m['wall_s']:.2f} s wall, "
                            f"{m['assigned_to_restored_s']} s assigned→restored",
                            yes(m["seconds_sum"] <= GOALS["warm_s"])
                            + " (summed) / "
                            + yes(m["wall_s"] <= GOALS["warm_s"])
                            + " (wall)",
                        )
                    )
    for store, row in (rs or {}).get("backends", {}).items():
        timing = row.get("timing")
        if not timing or any("error" in v for v in timing.values()):
            continue
        lines += [
            "",
            f"### Where the restore's time goes ({store}; a diagnostic run, not the figures above)",
            "",
            "`bench.tables_timing` wraps the changelog reader's calls, the store's open and "
            "writes, and logs each; totals over the six partitions (restores run one after "
            "the other, on one thread). Nested: `Restorer._restore` holds the reads and writes "
            "of one slice.",
            "",
            f"cold: wall {timing['cold']['wall_s']} s, sum of seconds "
            f"{timing['cold']['seconds_sum']} s; warm: wall {timing['warm']['wall_s']} s, "
            f"sum {timing['warm']['seconds_sum']} s.",
            "",
            "| step | cold: calls | cold: total ms | cold: max ms | warm: calls "
            "| warm: total ms | warm: max ms |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        warm_steps = {a["step"]: a for a in timing["warm"]["steps"]}
        for a in timing["cold"]["steps"]:
            w = warm_steps.pop(a["step"], {"calls": 0, "total_ms": 0.0, "max_ms": 0.0})
            lines.append(
                f"| {a['step']} | {a['calls']} | {a['total_ms']:,.0f} | {a['max_ms']:,.0f} "
                f"| {w['calls']} | {w['total_ms']:,.0f} | {w['max_ms']:,.0f} |"
            )
        for w in warm_steps.values():
            lines.append(
                f"| {w['step']} | 0 | 0 | 0 | {w['calls']} | {w['total_ms']:,.0f} "
                f"| {w['max_ms']:,.0f} |"
            )
    tp = r.get("throughput")
    if tp:
        lines += [
            "",
            f"## Throughput: per-key count, {tp['records']:,} records over {tp['keys']:,} keys, "
            f"{tp['repeats']} rounds (median)",
            "",
            "records/s and CPU from 10% to 100% of the output; end-to-end from process start "
            "to all N visible (`read_committed`); counts checked on the output read back.",
            "",
            "| contender | records/s | end-to-end records/s | CPU s / 1M records "
            "| peak RSS MB | start-up s | counts |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for name, row in tp["contenders"].items():
            med = row.get("median")
            if not med:
                lines.append(f"| {name} | {str(row.get('status'))[:200]} | | | | | |")
                continue
            wrong = [x["wrong_keys"] for x in row["runs"]]
            dups = sum(max(x["duplicates"], 0) for x in row["runs"])
            counts = "ok"
            if any(wrong):
                examples = [e for x in row["runs"] for e in x["wrong_examples"]]
                counts = (
                    f"**wrong in {' / '.join(f'{w:,}' for w in wrong)} of {tp['keys']:,} keys** "
                    f"(e.g. {examples[0] if examples else '?'})"
                )
            if dups:
                counts += f", {dups:,} duplicates"
            lines.append(
                f"| {name} | {med['records_per_s']:,.0f} | {med['end_to_end_records_per_s']:,.0f} "
                f"| {med['cpu_s_per_million']:.1f} | {med['peak_rss_mb']:.0f} "
                f"| {med['startup_s']:.1f} | {counts} |"
            )
        if tp["ratios"]:
            lines += [
                "",
                "| ratio | per round | median | goal | met |",
                "|---|---|---:|---:|:---:|",
            ]
            for x in tp["ratios"]:
                sign = "≥" if x["measure"] == "records_per_s" else "≤"
                lines.append(
                    f"| {x['what']} | {', '.join(f'{p:.2f}' for p in x['per_round'])} "
                    f"| {x['median']:.2f}x | {sign} {x['goal']:g}x | {yes(x['met'])} |"
                )
                goals.append((x["what"], f"{x['median']:.2f}x", yes(x["met"])))
    mem = r.get("memory")
    if mem:
        lines += [
            "",
            f"## Memory: {mem['keys']:,}-key table ({mem['store']}), then "
            f"{mem['records']:,} records over its keys",
            "",
        ]
        if "error" in mem:
            lines.append(f"did not complete: {mem['error']}")
        else:
            rt, ch = mem["restore"], mem["check"]
            lines += [
                "| measure | value |",
                "|---|---:|",
                f"| restore wall s (sum of seconds) "
                f"| {rt['wall_s']:.1f} ({rt['seconds_sum']:.1f}) |",
                f"| peak RSS during restore (VmHWM at the last restored line) MB "
                f"| {rt['peak_rss_mb']:.0f} |",
                f"| RSS at the last restored line / 5 s later MB "
                f"| {rt['rss_at_restored_mb']:.0f} / {rt['rss_5s_after_mb']:.0f} |",
                f"| RSS after processing {ch['checked']:,} records MB "
                f"| {mem['rss_after_processing_mb']:.0f} |",
                f"| peak RSS of the whole run (VmHWM) MB | {mem['peak_rss_mb']:.0f} |",
                f"| records/s of those {ch['checked']:,} (produce to all read back) "
                f"| {ch['records_per_s']:,} |",
                f"| outputs with a wrong n | {ch['wrong']} of {ch['checked']:,} |",
                f"| store on disk MB | {mem['disk_mb']:.0f} |",
            ]
            goals.append(
                (
                    f"RSS < {GOALS['rss_mb']:g} MB with a {mem['keys']:,}-key table",
                    f"peak {mem['peak_rss_mb']:.0f} MB, after processing "
                    f"{mem['rss_after_processing_mb']:.0f} MB",
                    yes(mem["peak_rss_mb"] < GOALS["rss_mb"]),
                )
            )
    if goals:
        lines += ["", "## Goals", "", "| goal | measured | met |", "|---|---|:---:|"]
        lines += [f"| {g} | {m} | {ok} |" for g, m, ok in goals]
    problems = []
    for store, row in (rs or {}).get("backends", {}).items():
        for run in ("cold", "warm"):
            for p in row.get(run, {}).get("problems", []):
                problems.append(f"restore {store} {run}: {p}")
    for name, row in (tp or {}).get("contenders", {}).items():
        for i, run in enumerate(row.get("runs", [])):
            for p in run.get("problems", []):
                problems.append(f"{name} round {i + 1}: {p}")
    for p in (mem or {}).get("problems", []):
        problems.append(f"memory: {p}")
    if problems:
        lines += ["", "## Warnings and errors the workers logged", "", "```"]
        lines += [p.replace("```", "'''")[:300] for p in problems[:40]]
        lines += ["```"]
    if "seconds" in r:
        lines += ["", f"Whole run: {r['seconds']} s; load average at the end {r['load_1m_end']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
