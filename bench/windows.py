"""Windows: a tumbling 1-minute count per key, streamkit against Quix Streams, in one run.

Usage: python -m bench.windows
       python -m bench.windows --profile   (cProfile of one streamkit worker, top functions)
Environment:
    BENCH_N          keyed records (default 1,000,000)
    BENCH_KEYS       distinct keys among them (default 10,000)
    BENCH_SPAN_S     event time the records span, seconds (default 600: ten 1-minute windows)
    BENCH_REPEATS    rounds, the contenders alternating (default 3)
    BENCH_BROKERS    use this broker instead of starting a LocalKafka
    BENCH_WINDOWS_CONTENDERS  comma-separated subset of streamkit,quix,quix-key

What is measured (bench/README.md, "Windows"):

The input is produced once: BENCH_N JSON records (~40 bytes) over BENCH_KEYS
string keys into a 6-partition topic, each key in the partition librdkafka's
default partitioner gives it, record timestamps rising evenly over BENCH_SPAN_S
seconds from a minute boundary (so ten windows per key close during the run),
then a tail of one record per key one window later, which closes every key's
last window whatever the closing rule. Each contender then reads it from the
start on a fresh consumer group, state dir and output topic:

* ``streamkit``: ``app.window(src, Tumbling(60), aggregate=count(), grace=0,
  idle=None)``, run with ``python -m streamkit run bench.windows:app`` (this
  module's ``app``, built from ``BENCH_APP``/``BENCH_IN``/``BENCH_OUT`` and the
  ``STREAMKIT_*`` settings as ``bench.tables`` gives them: rocksdb, at least once);
* ``quix``: Quix Streams' ``tumbling_window(60000, grace_ms=0).count()
  .final(closing_strategy="partition")``: windows close on the partition's
  newest timestamp, as streamkit's do (the same rule, so the same results);
* ``quix-key``: the same with Quix's default ``final()`` (``closing_strategy="key"``:
  a key's windows close on that key's own next record), for reference.

A run is timed from the moment the group is stable with all six partitions
assigned (``describe_consumer_groups``, polled every 50 ms; the same probe for
both frameworks) to the moment the output holds every expected window result
(the high watermarks: every record has been consumed, the tail included).
Along the way, the moment each window's results are all out is recorded, with
the worker's RSS then. After the stop the output is read back and each
``(key, start)`` count compared with the input's.
"""

from __future__ import annotations

import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, ConsumerGroupState, KafkaError, Producer
from confluent_kafka.admin import AdminClient

from bench.broker import bench_broker
from bench.provenance import provenance
from bench.run import Contender, ensure_venv, output_size, reader, redraw, sample
from bench.tables import (
    BENCH,
    Proc,
    code_id,
    delete_topics,
    env_int,
    git_rev,
    log,
    partition_of,
    producer,
    streamkit_env,
)
from streamkit import App, Tumbling
from streamkit.backends.kafka import ensure_topics
from streamkit.topics import Topic
from streamkit.windows import count

RESULTS = BENCH / "results"
# Worker logs stay out of the repository (they are not results).
LOGS = Path(tempfile.gettempdir()) / "bench-windows-logs"
PARTITIONS = 6
WINDOW_S = 60
WINDOW_MS = WINDOW_S * 1000
POLL_S = 0.05
GOAL_VS_QUIX = 2.0
CONTENDERS = ("streamkit", "quix", "quix-key")
NOTES = {
    "streamkit": "streamkit `app.window(Tumbling(60), count(), grace=0)`, rocksdb, at least once",
    "quix": 'Quix Streams `tumbling_window(60000).count().final(closing_strategy="partition")`',
    "quix-key": "Quix Streams `...count().final()` (its default, closing per key)",
}


# -- the streamkit side (``python -m streamkit run bench.windows:app``) ------------


def build_app(name: str, source: str, sink: str) -> App:
    """The tumbling 1-minute count per key; brokers, group and state from ``STREAMKIT_*``."""
    app = App(name)
    src = app.topic(source, partitions=PARTITIONS)
    out = app.topic(sink, partitions=PARTITIONS)
    app.window(
        src,
        Tumbling(WINDOW_S),
        name="per_minute",
        aggregate=count(),
        grace=0,
        emits=[out],
        idle=None,
    )
    return app


app = build_app(
    os.environ.get("BENCH_APP", "benchw"),
    os.environ.get("BENCH_IN", "bw.in"),
    os.environ.get("BENCH_OUT", "bw.out"),
)

# -- the Quix side (bench/.venvs/quix's python) -------------------------------------------

QUIX_APP = BENCH / "peers" / "quix_count_app.py"  # with BENCH_WINDOW_MS: tumbling counts


# -- the input ---------------------------------------------------------------------------


class Input:
    """The records, produced once, and what a correct run must emit for them.

    Record ``i`` has key ``k{i % keys}`` and timestamp ``base + i * span / n``;
    the tail (one record per key at ``base + span``, the start of one more
    window) closes every key's last window and opens one that never closes.
    """

    def __init__(self, n: int, keys: int, span_s: int) -> None:
        self.n, self.keys, self.span_ms = n, keys, span_s * 1000
        self.windows = -(-self.span_ms // WINDOW_MS)
        # A minute boundary such that the tail ends two minutes ago: the
        # broker refuses timestamps over an hour ahead of its clock (Kafka 4's
        # log.message.timestamp.after.max.ms), and the whole span stays well
        # inside retention.
        self.base = (int(time.time() * 1000) // WINDOW_MS - self.windows - 3) * WINDOW_MS
        self.total = n + keys
        self.expected: Counter[tuple[str, int]] = Counter()  # (key, start) -> count
        for i in range(n):
            ts = self.ts(i)
            self.expected[(f"k{i % keys}", ts - ts % WINDOW_MS)] += 1
        per_window = Counter(start for _, start in self.expected)
        starts = sorted(per_window)
        # cum[j]: results of the first j + 1 windows: once the output holds
        # that many, window j has closed in every partition.
        self.cum = [sum(per_window[s] for s in starts[: j + 1]) for j in range(len(starts))]
        self.results = len(self.expected)
        # Records of the first window: the output shows nothing before they are read.
        self.first_window = per_window[starts[0]]

    def ts(self, i: int) -> int:
        return self.base + i * self.span_ms // self.n

    def produce(self, bootstrap: str, topic: str) -> None:
        p: Producer = producer(bootstrap)
        produce, poll = p.produce, p.poll
        failed: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(str(err))

        def send(key: bytes, value: bytes, ts: int) -> None:
            while True:
                try:
                    produce(topic, value, key, partition_of(key), delivered, timestamp=ts)
                    return
                except BufferError:
                    poll(0.05)

        for i in range(self.n):
            value = {"id": i, "sku": f"sku-{i % 1000:05d}", "qty": i % 7 + 1}
            send(b"k%d" % (i % self.keys), orjson.dumps(value), self.ts(i))
            if i % 20_000 == 0:
                poll(0)
        tail_ts = self.base + self.windows * WINDOW_MS
        for j in range(self.keys):
            send(b"k%d" % j, b'{"tail":1}', tail_ts + j % WINDOW_MS)
        if p.flush(120) != 0:
            raise RuntimeError(f"{topic}: records left unsent after 120 s")
        if failed:
            raise RuntimeError(f"{topic}: {len(failed):,} records refused, e.g. {failed[0]}")


# -- one run ------------------------------------------------------------------------------


def group_ready(admin: AdminClient, group: str) -> bool:
    """Whether ``group`` is stable with every partition of the input assigned."""
    try:
        # (The stubs type the future's result as a dict; it is one ConsumerGroupDescription.)
        desc: Any = admin.describe_consumer_groups([group], request_timeout=2)[group].result(3)
    except Exception:
        return False
    if desc.state != ConsumerGroupState.STABLE:
        return False
    assigned = sum(len(m.assignment.topic_partitions) for m in desc.members if m.assignment)
    return assigned >= PARTITIONS


Result = tuple[str, int, int, int]  # key, window start, count, the record's Kafka timestamp


def read_results(bootstrap: str, topic: str, timeout: float = 90) -> list[Result]:
    """Every window result in ``topic``, to each partition's end."""
    consumer = reader(bootstrap, topic, committed=True, eof=True)
    out: list[Result] = []
    ended: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(ended) < PARTITIONS and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        ended.add(int(msg.partition() or 0))
                    continue
                ended.discard(int(msg.partition() or 0))
                v = orjson.loads(msg.value() or b"null")
                key = (msg.key() or b"").decode()
                out.append((key, int(v["start"]), int(v["value"]), msg.timestamp()[1]))
    finally:
        consumer.close()
    if len(ended) < PARTITIONS:
        raise RuntimeError(f"reading {topic} back did not reach its end in {timeout:.0f}s")
    return out


def check(inp: Input, got: list[Result]) -> dict[str, Any]:
    """Each closed window's count against the input's, and where its timestamp lies."""
    seen: dict[tuple[str, int], int] = {}
    duplicates = wrong = unexpected = 0
    examples: list[str] = []
    # A result's Kafka timestamp against its window's end (seconds): event
    # time (within the window, or at its end) or the wall clock of the close.
    after_end = [(ts - start - WINDOW_MS) / 1000 for _, start, _, ts in got]
    for key, start, n, _ in got:
        k = (key, start)
        if k in seen:
            duplicates += 1
            if seen[k] != n:
                wrong += 1
            continue
        seen[k] = n
        want = inp.expected.get(k)
        if want is None:
            unexpected += 1
            if len(examples) < 3:
                examples.append(f"{key}@{start}: {n}, no such window expected")
        elif want != n:
            wrong += 1
            if len(examples) < 3:
                examples.append(f"{key}@{start}: {n}, expected {want}")
    missing = sum(1 for k in inp.expected if k not in seen)
    return {
        "results": len(got),
        "distinct_windows": len(seen),
        "duplicates": duplicates,
        "wrong": wrong,
        "missing": missing,
        "unexpected": unexpected,
        "sum_of_counts": sum(n for k, n in seen.items() if k in inp.expected),
        "examples": examples,
        "ts_after_end_s": {
            "min": round(min(after_end, default=0), 1),
            "median": round(statistics.median(after_end or [0]), 1),
            "max": round(max(after_end, default=0), 1),
        },
    }


def start(
    name: str, bootstrap: str, source: str, sink: str, group: str, state: Path, quix: Path | None
) -> Proc:
    """Start one contender's worker process (its log under LOGS)."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{name}.log"
    if name == "streamkit":
        env = streamkit_env(bootstrap, group, source, sink, state, "rocksdb")
        argv = [sys.executable, "-m", "streamkit", "run", "bench.windows:app"]
        return Proc(argv, env, log_path, rss=True)
    assert quix is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMKIT_", "BENCH_"))}
    env.update(
        {
            "BENCH_BROKERS": bootstrap,
            "BENCH_IN": source,
            "BENCH_OUT": sink,
            "BENCH_GROUP": group,
            "BENCH_STATE_DIR": str(state),
            "BENCH_WINDOW_MS": str(WINDOW_MS),
            "BENCH_CLOSING": "key" if name == "quix-key" else "partition",
            "PYTHONPATH": "",
        }
    )
    return Proc([str(quix), str(QUIX_APP)], env, log_path, rss=True)


def rss_at(proc: Proc, when: float) -> float:
    """The last VmRSS sample taken by ``when``."""
    found = [mb for t, mb in proc.rss_samples if t <= when]
    return found[-1] if found else 0.0


def run_one(
    name: str,
    inp: Input,
    bootstrap: str,
    admin: AdminClient,
    probe: Consumer,
    source: str,
    quix: Path | None,
    work: Path,
) -> dict[str, Any]:
    """One contender on a fresh group, state dir and output topic. Raises RuntimeError."""
    run = f"bw-{name}-{uuid.uuid4().hex[:6]}"
    sink, state = f"{run}-out", work / run
    if name == "streamkit":
        # Its outputs, window store changelog and late topic, as it declares them.
        ensure_topics(admin, list(build_app(run, source, sink).topics.values()))
    else:
        ensure_topics(admin, [Topic(sink, partitions=PARTITIONS)])
    proc = start(name, bootstrap, source, sink, run, state, quix)
    timeout = 120 + inp.total / 5_000
    ready_at = first_at = done_at = None
    cpu_ready = cpu_first = cpu_done = peak = 0.0
    closed_at: list[float] = []
    try:
        while True:
            if ready_at is None and group_ready(admin, run):
                ready_at = time.monotonic()
                cpu_ready, _ = sample(proc.proc)
            size = output_size(probe, sink)
            now = time.monotonic()
            while len(closed_at) < len(inp.cum) and size >= inp.cum[len(closed_at)]:
                closed_at.append(now)
                if len(closed_at) == 1:
                    first_at = now
                    cpu_first, _ = sample(proc.proc)
            if size >= inp.results:
                done_at = now
                cpu_done, peak = sample(proc.proc)
                break
            proc.check(timeout, f"{size:,}/{inp.results:,} results")
            time.sleep(POLL_S)
        time.sleep(0.5)  # one more RSS sample after the last record
        rss_end = proc.rss_mb()
    finally:
        stop_s = proc.stop()
    try:
        verified = check(inp, read_results(bootstrap, sink))
        late = 0
        if name == "streamkit":
            late = output_size(probe, f"{run}.per_minute.late")
        # The window store's changelog (streamkit's, or Quix's changelog__<group>--...).
        topics = admin.list_topics(timeout=10).topics
        changelogs = [t for t in topics if run in t and "changelog" in t]
        changelog_records = sum(output_size(probe, t) for t in changelogs)
    finally:
        delete_topics(admin, run)
        shutil.rmtree(state, ignore_errors=True)
    assert done_at is not None and first_at is not None
    if ready_at is None:  # never seen stable between two polls: count from process start
        ready_at, cpu_ready = proc.started, 0.0
    mid = closed_at[len(closed_at) // 2 - 1]
    result = {
        "records_per_s": round(inp.total / (done_at - ready_at)),
        # After the first window's results: every partition past minute one.
        "steady_records_per_s": round((inp.total - inp.first_window) / (done_at - first_at)),
        "end_to_end_records_per_s": round(inp.total / (done_at - proc.started)),
        "startup_s": round(ready_at - proc.started, 2),
        "seconds": round(done_at - ready_at, 2),
        "cpu_s_per_million": round((cpu_done - cpu_ready) / inp.total * 1e6, 1),
        "steady_cpu_s_per_million": round(
            (cpu_done - cpu_first) / (inp.total - inp.first_window) * 1e6, 1
        ),
        "peak_rss_mb": round(peak, 1),
        "rss_first_window_mb": round(rss_at(proc, first_at), 1),
        "rss_mid_mb": round(rss_at(proc, mid), 1),
        "rss_end_mb": round(rss_end, 1),
        "windows_closed_s": [round(t - ready_at, 2) for t in closed_at],
        "windows_closed_rss_mb": [round(rss_at(proc, t)) for t in closed_at],
        "stop_s": round(stop_s, 2),
        "load_1m": round(os.getloadavg()[0], 2),
        "late_records": late,
        "changelog_records": changelog_records,
        **verified,
    }
    if name == "streamkit":
        result["problems"] = proc.problems()[:10]
    else:
        result["problems"] = [x[:300] for x in proc.other if "rror" in x][:10]
    return result


# -- the whole run -----------------------------------------------------------------------


def main() -> None:
    if sys.argv[1:] == ["--profile"]:
        profile()
        return
    n = env_int("BENCH_N", 1_000_000)
    keys = env_int("BENCH_KEYS", 10_000)
    span_s = env_int("BENCH_SPAN_S", 600)
    repeats = env_int("BENCH_REPEATS", 3)
    chosen = os.environ.get("BENCH_WINDOWS_CONTENDERS", ",".join(CONTENDERS)).split(",")
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    t0 = time.monotonic()
    inp = Input(n, keys, span_s)
    result: dict[str, Any] = {
        "started": started,
        "machine": f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
        "commit": git_rev(),
        "code": code_id(),
        "records": n,
        "keys": keys,
        "span_s": span_s,
        "windows": inp.windows,
        "results": inp.results,
        "total": inp.total,
        "repeats": repeats,
        "load_1m_start": round(os.getloadavg()[0], 2),
    }
    table: dict[str, dict[str, Any]] = {c: {"runs": []} for c in chosen}
    quix: Path | None = None
    if any(c.startswith("quix") for c in chosen):
        try:
            quix = ensure_venv(Contender("quix", requirements=("quixstreams",)))
            result["quix_version"] = subprocess.run(
                [str(quix), "-c", "import quixstreams; print(quixstreams.__version__)"],
                capture_output=True,
                text=True,
            ).stdout.strip()
        except RuntimeError as e:
            for c in chosen:
                if c.startswith("quix"):
                    table[c]["status"] = f"did not run: {e}"
    work = Path(tempfile.mkdtemp(prefix="bench-windows-"))
    try:
        with bench_broker(os.environ.get("BENCH_BROKERS")) as (bootstrap, _):
            admin = AdminClient({"bootstrap.servers": bootstrap})
            probe = Consumer(
                {
                    "bootstrap.servers": bootstrap,
                    "group.id": "bench-probe",
                    "isolation.level": "read_uncommitted",
                }
            )
            source = f"bw-{uuid.uuid4().hex[:4]}-in"
            ensure_topics(admin, [Topic(source, partitions=PARTITIONS)])
            t1 = time.monotonic()
            inp.produce(bootstrap, source)
            log(
                f"input: {inp.total:,} records ({n:,} + a tail of {keys:,}) over {keys:,} keys, "
                f"{inp.windows} windows, {inp.results:,} results expected, "
                f"in {time.monotonic() - t1:.1f}s"
            )
            for rep in range(repeats):
                for c in chosen:
                    row = table[c]
                    if "status" in row:
                        continue
                    try:
                        r = run_one(c, inp, bootstrap, admin, probe, source, quix, work)
                    except RuntimeError as e:
                        row["status"] = f"did not run: {e}"
                        log(f"[{c}] did not run: {e}")
                        continue
                    row["runs"].append(r)
                    log(
                        f"[{rep + 1}/{repeats}] {c:9} {r['records_per_s']:>7,}/s "
                        f"(steady {r['steady_records_per_s']:,}/s)  "
                        f"cpu {r['cpu_s_per_million']:5.1f} s/M  peak {r['peak_rss_mb']:.0f} MB  "
                        f"rss {r['rss_first_window_mb']:.0f}/{r['rss_mid_mb']:.0f}/"
                        f"{r['rss_end_mb']:.0f} MB  results {r['results']:,} "
                        f"wrong {r['wrong']} missing {r['missing']} dup {r['duplicates']}"
                    )
            probe.close()
            delete_topics(admin, source)
            del admin, probe  # no client left retrying against a stopped broker
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for row in table.values():
        if row["runs"]:
            row["median"] = {
                k: statistics.median(r[k] for r in row["runs"])
                for k in (
                    "records_per_s",
                    "steady_records_per_s",
                    "end_to_end_records_per_s",
                    "startup_s",
                    "seconds",
                    "cpu_s_per_million",
                    "steady_cpu_s_per_million",
                    "peak_rss_mb",
                    "rss_first_window_mb",
                    "rss_mid_mb",
                    "rss_end_mb",
                )
            }
    result["contenders"] = table
    result["seconds"] = round(time.monotonic() - t0)
    result["commit_end"] = git_rev()
    result["code_end"] = code_id()
    result["load_1m_end"] = round(os.getloadavg()[0], 2)
    text = markdown(result)
    (RESULTS / "windows.md").write_text(text)
    redraw()  # RESULTS.md shows it beside the other benches
    print(text)
    log(f"done in {result['seconds']} s; worker logs in {LOGS}")


def ratios(table: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """streamkit against each Quix contender: per round, and the median of those."""
    out = []
    sk = table.get("streamkit", {}).get("runs", [])
    for other in ("quix", "quix-key"):
        runs = table.get(other, {}).get("runs", [])
        if not sk or len(runs) != len(sk):
            continue
        for measure, what, higher in (
            ("records_per_s", "records/s", True),
            ("steady_records_per_s", "records/s after the first window", True),
            ("cpu_s_per_million", "CPU per record", False),
        ):
            per = [a[measure] / b[measure] for a, b in zip(sk, runs, strict=True) if b[measure]]
            med = statistics.median(per)
            out.append(
                {
                    "what": f"{what}: streamkit / {other}",
                    "measure": measure,
                    "per_round": [round(p, 2) for p in per],
                    "median": round(med, 2),
                    "goal": GOAL_VS_QUIX if measure == "records_per_s" else None,
                    "met": med >= GOAL_VS_QUIX if measure == "records_per_s" else None,
                    "higher": higher,
                }
            )
    return out


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Windows: benchmark results",
        "",
        provenance(r) + f", {r['machine']}, quixstreams {r.get('quix_version', '-')}, load average "
        f"{r['load_1m_start']} at the start, {r.get('load_1m_end', '-')} at the end. "
        'Written by `python -m bench.windows` (see bench/README.md, "Windows").',
        "",
        f"Input: {r['records']:,} JSON records over {r['keys']:,} keys in {PARTITIONS} "
        f"partitions, timestamps rising evenly over {r['span_s']} s of event time "
        f"({r['windows']} tumbling 1-minute windows per key, {r['results']:,} window results "
        f"expected), then one record per key a window later ({r['total']:,} records in all). "
        f"Grace 0, at least once. {r['repeats']} rounds, the contenders alternating; medians.",
        "",
        "records/s: all records over the time from the group being stable (six partitions "
        "assigned) to the output holding every expected result; steady: the same from the "
        "first window's results being out (every partition past minute one) to the end. "
        "CPU: user + system of the worker process over the same intervals. RSS: VmRSS sampled "
        "every 0.1 s, when the first window's results were out / when half the windows' were "
        "/ 0.5 s after the last; peak: VmHWM.",
        "",
        "| contender | records/s | steady records/s | end-to-end records/s | CPU s / 1M records "
        "| steady CPU s / 1M | RSS MB: first / mid / end | peak RSS MB | start-up s |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    table = r["contenders"]
    for name, row in table.items():
        med = row.get("median")
        if not med:
            lines.append(f"| {name} | {str(row.get('status'))[:200]} | | | | | | | |")
            continue
        lines.append(
            f"| {name} | {med['records_per_s']:,.0f} | {med['steady_records_per_s']:,.0f} "
            f"| {med['end_to_end_records_per_s']:,.0f} | {med['cpu_s_per_million']:.1f} "
            f"| {med['steady_cpu_s_per_million']:.1f} "
            f"| {med['rss_first_window_mb']:.0f} / {med['rss_mid_mb']:.0f} "
            f"/ {med['rss_end_mb']:.0f} | {med['peak_rss_mb']:.0f} | {med['startup_s']:.1f} |"
        )
    lines += [
        "",
        "## Output check (every round)",
        "",
        "Read back after the stop: one result per (key, window start); its count must be "
        "the input's for that window. Sum of counts: over the distinct expected windows, "
        f"to equal the {r['records']:,} records before the tail.",
        "",
        "| contender | round | results | distinct windows | wrong counts | missing "
        "| duplicates | sum of counts | late records | changelog records "
        "| result timestamp minus window end, s (min / median / max) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, row in table.items():
        for i, x in enumerate(row.get("runs", [])):
            late = f"{x['late_records']:,}" if name == "streamkit" else "-"
            lines.append(
                f"| {name} | {i + 1} | {x['results']:,} | {x['distinct_windows']:,} "
                f"| {x['wrong']:,} | {x['missing']:,} | {x['duplicates']:,} "
                f"| {x['sum_of_counts']:,} | {late} | {x['changelog_records']:,} "
                f"| {x['ts_after_end_s']['min']:g} / {x['ts_after_end_s']['median']:g} "
                f"/ {x['ts_after_end_s']['max']:g} |"
            )
    rs = ratios(table)
    if rs:
        lines += [
            "",
            "## Ratios",
            "",
            "Median of the per-round ratios (same round, same input). CPU: streamkit's CPU "
            "per record over Quix's (below 1 is less).",
            "",
            "| ratio | per round | median | goal | met |",
            "|---|---|---:|---:|:---:|",
        ]
        for x in rs:
            goal = f"≥ {x['goal']:g}x" if x["goal"] else ""
            met = "" if x["met"] is None else ("yes" if x["met"] else "**no**")
            lines.append(
                f"| {x['what']} | {', '.join(f'{p:.2f}' for p in x['per_round'])} "
                f"| {x['median']:.2f}x | {goal} | {met} |"
            )
    lines += [
        "",
        "## When each window's results were all out",
        "",
        "Seconds from the group being stable, and the worker's RSS (MB) then; each round.",
        "",
    ]
    for name, row in table.items():
        for i, x in enumerate(row.get("runs", [])):
            marks = zip(x["windows_closed_s"], x["windows_closed_rss_mb"], strict=True)
            lines.append(
                f"- {name}, round {i + 1}: " + ", ".join(f"{t:g} s ({mb} MB)" for t, mb in marks)
            )
    problems = [
        f"{name} round {i + 1}: {p}"
        for name, row in table.items()
        for i, x in enumerate(row.get("runs", []))
        for p in x.get("problems", [])
    ]
    if problems:
        lines += ["", "## Warnings and errors the workers logged", "", "```"]
        lines += [p.replace("```", "'''")[:300] for p in problems[:40]]
        lines += ["```"]
    lines += ["", f"Whole run: {r['seconds']} s."]
    return "\n".join(lines) + "\n"


# -- where streamkit's time goes ---------------------------------------------------------


def profile() -> None:
    """One streamkit worker under cProfile (its main thread), top functions printed.

    Same input as a run (BENCH_N, BENCH_KEYS, BENCH_SPAN_S), on BENCH_BROKERS or a
    LocalKafka. Profiled rates are slower than real ones: read the shares.
    """
    inp = Input(
        env_int("BENCH_N", 1_000_000), env_int("BENCH_KEYS", 10_000), env_int("BENCH_SPAN_S", 600)
    )
    work = Path(tempfile.mkdtemp(prefix="bench-windows-profile-"))
    out = work / "worker.prof"
    try:
        with bench_broker(os.environ.get("BENCH_BROKERS")) as (bootstrap, _):
            admin = AdminClient({"bootstrap.servers": bootstrap})
            probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-probe"})
            run = f"bw-profile-{uuid.uuid4().hex[:6]}"
            source, sink = f"{run}-in", f"{run}-out"
            ensure_topics(admin, list(build_app(run, source, sink).topics.values()))
            inp.produce(bootstrap, source)
            env = streamkit_env(bootstrap, run, source, sink, work / "state", "rocksdb")
            argv = [sys.executable, "-m", "cProfile", "-o", str(out)]
            argv += ["-m", "streamkit", "run", "bench.windows:app"]
            LOGS.mkdir(parents=True, exist_ok=True)
            proc = Proc(argv, env, LOGS / "profile.log")
            t0 = time.monotonic()
            try:
                while output_size(probe, sink) < inp.results:
                    if proc.popen.poll() is not None or time.monotonic() - t0 > 600:
                        raise RuntimeError(f"profiled worker did not finish: {proc.tail()}")
                    time.sleep(POLL_S)
                log(f"profiled run: {inp.total:,} records in {time.monotonic() - t0:.1f}s")
            finally:
                proc.stop()
                probe.close()
                delete_topics(admin, run)
                del admin, probe
        stats = pstats.Stats(str(out))
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
