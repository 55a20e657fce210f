"""The client (issue 16): ``send`` throughput and ``ask`` round trips, on a real broker.

Usage: python -m bench.client
Environment:
    BENCH_BROKERS         use this broker instead of starting a LocalKafka
    BENCH_SEND_N          records per send run (default 100,000)
    BENCH_REPEATS         send rounds, the contenders alternating (default 3)
    BENCH_ASK_SECONDS     measured seconds per ask run (default 20)
    BENCH_ASK_WARM_S      warm-up seconds before them, not counted (default 3)
    BENCH_CLIENT_PARTS    ``send,ask`` (default both)

What is measured (bench/README.md, "Client"):

1. **send throughput from one process.** The same records (200-byte JSON
   values, string keys over 10,000 keys, built before the clock starts) into
   one 6-partition topic, each contender in a fresh process of its own:

   * ``raw``: a hand-written confluent-kafka loop as a user writes it:
     ``orjson.dumps``, ``produce(..., on_delivery=cb)`` with ``poll(0)``
     after each, ``BufferError`` answered with ``poll(0.05)``, then ``flush()``;
     streamkit's producer settings (idempotence, ``acks=all``, ``linger.ms=5``);
   * ``send_nowait``: ``Client.send_nowait`` in a loop, a ``BufferError``
     future answered with ``await asyncio.sleep(0.005)`` and a retry, then
     every future waited for;
   * ``send``: ``await Client.send(...)`` in a task per record, at most
     10,000 in flight (an ``asyncio.Semaphore``), as a service calls it.

   Timed from the first record to the last delivery report, after a warm-up
   of 1,000 records (connection and metadata stay out). CPU: user + system of
   the whole process (``resource.getrusage``: librdkafka's threads too) over
   the same interval.

2. **ask round trips.** A worker (``bench/apps/serving.py``: a ``def`` agent,
   ``requests=True``, returning its input) runs as ``python -m streamkit run``;
   a client process asks it on an open loop: request ``i`` is due at
   ``start + i / rate`` whatever became of the earlier ones, and its round
   trip is counted from when it was due, so a slow reply cannot hide the
   ones queued behind it. Warm-up first, not counted. Each variant is a fresh
   client process; the worker restarts only when its settings change.

   The round trip is split by the records' own timestamps and a second
   consumer in the client process that reads the request topic and the
   reply topic as records arrive (``consume(1)``, no batch wait): ask called
   → request record created (the client's ``produce``) → request readable on
   the broker → reply record created (the worker's ``produce``) → reply
   readable → ``ask`` returns. Kafka timestamps are wall-clock milliseconds,
   so each step is only good to about 1 ms.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import confluent_kafka
import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.broker import bench_broker
from bench.provenance import provenance
from bench.run import redraw
from bench.tables import BENCH, ROOT, Proc, code_id, delete_topics, env_int, git_rev, log
from streamkit.backends.kafka import ensure_topics
from streamkit.topics import Topic

RESULTS = BENCH / "results"
LOGS = Path(tempfile.gettempdir()) / "bench-client-logs"
PARTITIONS = 6
VALUE_BYTES = 200
KEYS = 10_000
WARM_RECORDS = 1_000
# The service-style contender's bound: enough in flight to fill librdkafka's
# batches (at 5 ms linger and ~100k records/s, ~500 are in one linger), small
# enough that its queue (100,000 messages) never fills.
IN_FLIGHT = 10_000
# What the raw loop and the nowait loop do when librdkafka's queue is full.
FULL_POLL_S = 0.05
FULL_SLEEP_S = 0.005
SEND_CONTENDERS = ("raw", "send_nowait", "send")
SEND_NOTES = {
    "raw": "hand-written confluent-kafka loop: produce + poll(0), BufferError → poll, flush",
    "send_nowait": (
        "`Client.send_nowait` in a loop, BufferError → sleep 5 ms, then `flush()` (no handle kept)"
    ),
    "send": f"`await Client.send` per record, at most {IN_FLIGHT:,} in flight (semaphore)",
}
GOAL_SEND = 0.9
SERVING_APP = "bench.apps.serving:app"
ASK_TIMEOUT_S = 10.0


# -- records ---------------------------------------------------------------------------


def records(n: int) -> tuple[list[str], list[dict[str, Any]]]:
    """``n`` keys and JSON-able values, each value ``VALUE_BYTES`` long once encoded."""
    base = {"id": 0, "user": "u0000", "amount": 12.5, "currency": "EUR", "note": ""}
    pad = VALUE_BYTES - len(orjson.dumps(base)) - 6  # room for ids up to 999,999
    values = [
        {
            "id": i,
            "user": f"u{i % KEYS:04d}",
            "amount": 12.5,
            "currency": "EUR",
            "note": "x" * (pad + 6 - len(str(i))),
        }
        for i in range(n)
    ]
    return [f"k{i % KEYS}" for i in range(n)], values


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# -- send: the children -------------------------------------------------------------------


def send_raw(
    bootstrap: str, topic: str, keys: list[str], values: list[dict[str, Any]]
) -> dict[str, Any]:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    counts = {"delivered": 0, "failed": 0, "full": 0}

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is None:
            counts["delivered"] += 1
        else:
            counts["failed"] += 1

    def loop(ks: list[str], vs: list[dict[str, Any]]) -> None:
        for key, value in zip(ks, vs, strict=True):
            data = orjson.dumps(value)
            while True:
                try:
                    producer.produce(topic, value=data, key=key.encode(), on_delivery=on_delivery)
                    break
                except BufferError:
                    counts["full"] += 1
                    producer.poll(FULL_POLL_S)
            producer.poll(0)
        producer.flush()

    loop(keys[:WARM_RECORDS], values[:WARM_RECORDS])
    counts.update(delivered=0, failed=0, full=0)
    t0, c0 = time.perf_counter(), cpu_s()
    loop(keys, values)
    return timed(len(keys), t0, c0, counts)


async def send_client(
    bootstrap: str, topic: str, keys: list[str], values: list[dict[str, Any]], awaited: bool
) -> dict[str, Any]:
    from streamkit import App

    app = App("bench-client-send")
    app.topic(topic, partitions=PARTITIONS)
    counts = {"delivered": 0, "failed": 0, "full": 0}
    async with app.client(brokers=bootstrap) as c:
        run = send_awaited if awaited else send_nowait
        await run(c, topic, keys[:WARM_RECORDS], values[:WARM_RECORDS], counts)
        counts.update(delivered=0, failed=0, full=0)
        t0, c0 = time.perf_counter(), cpu_s()
        await run(c, topic, keys, values, counts)
        return timed(len(keys), t0, c0, counts)


async def send_nowait(
    c: Any, topic: str, keys: list[str], values: list[dict[str, Any]], counts: dict[str, int]
) -> None:
    # As a bulk sender would: no handle kept per record; flush() raises if
    # any was refused (and says how many), which the count below takes.
    from streamkit import ClientError

    for key, value in zip(keys, values, strict=True):
        while True:
            try:
                c.send_nowait(topic, value, key=key)
                break
            except BufferError:  # librdkafka's queue is full: the poll thread makes room
                counts["full"] += 1
                await asyncio.sleep(FULL_SLEEP_S)
    try:
        await c.flush()
    except ClientError as exc:
        counts["failed"] += int(str(exc).split()[0])
    counts["delivered"] += len(keys) - counts["failed"]


async def send_awaited(
    c: Any, topic: str, keys: list[str], values: list[dict[str, Any]], counts: dict[str, int]
) -> None:
    room = asyncio.Semaphore(IN_FLIGHT)
    tasks: set[asyncio.Task[None]] = set()

    async def one(key: str, value: dict[str, Any]) -> None:
        try:
            await c.send(topic, value, key=key)
            counts["delivered"] += 1
        except Exception:
            counts["failed"] += 1
        finally:
            room.release()

    for key, value in zip(keys, values, strict=True):
        await room.acquire()
        task = asyncio.create_task(one(key, value))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)


def timed(n: int, t0: float, c0: float, counts: dict[str, int]) -> dict[str, Any]:
    seconds = time.perf_counter() - t0
    cpu = cpu_s() - c0
    return {
        "records": n,
        "seconds": round(seconds, 3),
        "records_per_s": round(n / seconds),
        "cpu_s_per_million": round(cpu / n * 1e6, 2),
        "cpu_share": round(cpu / seconds, 2),  # cores busy, of the whole process
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        **counts,
    }


def send_child(contender: str, bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    keys, values = records(n)
    if contender == "raw":
        return send_raw(bootstrap, topic, keys, values)
    return asyncio.run(send_client(bootstrap, topic, keys, values, contender == "send"))


# -- ask: the child ----------------------------------------------------------------------


class Tap:
    """Reads the request topic and the reply topic as records arrive: when each is readable.

    ``consume(1)`` and then what librdkafka already holds, never waiting for
    a batch to fill, so a record is seen as soon as a fetch brings it.
    """

    def __init__(self, bootstrap: str, request_topic: str, reply_topic: str) -> None:
        self.seen: dict[str, dict[int, tuple[int, float]]] = {"request": {}, "reply": {}}
        self._which = {request_topic: "request", reply_topic: "reply"}
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-tap-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 100,
            }
        )
        meta = self._consumer.list_topics(timeout=10)
        assigned = []
        for topic in (request_topic, reply_topic):
            for p in meta.topics[topic].partitions:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                assigned.append(TopicPartition(topic, p, high))
        self._consumer.assign(assigned)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        consumer = self._consumer
        while not self._stop.is_set():
            msgs = consumer.consume(1, timeout=0.1)
            if msgs:
                msgs += consumer.consume(500, timeout=0)
            now = time.time()
            for msg in msgs:
                if msg.error() is not None:
                    continue
                which = self._which[msg.topic() or ""]
                value = orjson.loads(msg.value() or b"null")
                body = value.get("value") if which == "reply" else value
                if isinstance(body, dict) and "n" in body:
                    self.seen[which][int(body["n"])] = (msg.timestamp()[1], now)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


async def ask_run(
    bootstrap: str, rate: float, seconds: float, warm: float, fast_replies: bool
) -> dict[str, Any]:
    from bench.apps.serving import app, source

    if fast_replies:
        # An experiment, not the library: the reply reader's consume(500,
        # timeout=0.05) waits the full 50 ms unless 500 replies are there.
        import streamkit.client.replies

        streamkit.client.replies._POLL_S = 0.005  # type: ignore[attr-defined]
    async with app.client(brokers=bootstrap) as c:
        # Opens the reply reader and connects: not timed.
        await c.ask("echo", {"n": -1}, timeout=30)
        tap = Tap(bootstrap, source.name, app.request_topics[0].name)
        total = int(rate * (warm + seconds))
        first = int(rate * warm)
        rows: list[tuple[float, float, float, float] | None] = [None] * total
        failures: dict[str, int] = {}

        async def one(i: int, due: float) -> None:
            called, wall = time.monotonic(), time.time()
            try:
                answer = await c.ask("echo", {"n": i}, timeout=ASK_TIMEOUT_S)
                if answer != {"n": i}:
                    raise ValueError(f"wrong answer {answer!r}")
            except Exception as exc:
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                return
            rows[i] = (due, called, time.monotonic(), wall)

        tasks = []
        start = time.monotonic() + 0.05
        c0, t_first = cpu_s(), start
        for i in range(total):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if i == first:
                c0, t_first = cpu_s(), time.monotonic()
            tasks.append(asyncio.create_task(one(i, due)))
        sent_s = time.monotonic() - t_first
        await asyncio.gather(*tasks)
        cpu = cpu_s() - c0
        await asyncio.sleep(0.3)  # the tap's last records
        tap.close()
    measured = [(i, r) for i, r in enumerate(rows) if i >= first and r is not None]
    # Seconds → ms; each step from the records' timestamps (wall clock, ms).
    trips = [(r[2] - r[0]) * 1000 for _, r in measured]
    late = [(r[1] - r[0]) * 1000 for _, r in measured]
    steps: dict[str, list[float]] = {k: [] for k in STEPS}
    for i, (_, called, done, wall) in measured:
        req, rep = tap.seen["request"].get(i), tap.seen["reply"].get(i)
        if req is None or rep is None:
            continue
        done_wall = wall + (done - called)
        steps["client produce"].append(req[0] - wall * 1000)
        steps["request to broker and readable"].append(req[1] * 1000 - req[0])
        steps["readable → worker's reply produced"].append(rep[0] - req[1] * 1000)
        steps["reply to broker and readable"].append(rep[1] * 1000 - rep[0])
        steps["reply readable → ask returns"].append((done_wall - rep[1]) * 1000)
    return {
        "rate": rate,
        "seconds": seconds,
        "asked": total - first,
        "answered": len(measured),
        "failures": failures,
        "achieved_per_s": round((total - first) / sent_s, 1),
        "latency_ms": summary(trips),
        "late_start_ms": summary(late),
        "steps_ms": {k: summary(v) for k, v in steps.items()},
        "client_cpu_share": round(cpu / sent_s, 3),
        "client_cpu_ms_per_ask": round(cpu / (total - first) * 1000, 3),
    }


STEPS = (
    "client produce",
    "request to broker and readable",
    "readable → worker's reply produced",
    "reply to broker and readable",
    "reply readable → ask returns",
)


def summary(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {}
    s = sorted(xs)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))], 2)

    return {
        "p50": q(0.5),
        "p90": q(0.9),
        "p99": q(0.99),
        "max": round(s[-1], 2),
        "mean": round(statistics.fmean(s), 2),
    }


# -- the run -------------------------------------------------------------------------------

# (name, rate, client linger.ms or None, worker linger.ms or None, fast replies)
ASK_VARIANTS: tuple[tuple[str, float, int | None, int | None, bool], ...] = (
    ("defaults, 1,000/s", 1000, None, None, False),
    ("defaults, 100/s", 100, None, None, False),
    ("reply reader polling 5 ms (bench-only patch), 1,000/s", 1000, None, None, True),
    ("linger.ms=0 on client and worker, 1,000/s", 1000, 0, 0, False),
    ("linger.ms=0 and reply reader 5 ms, 1,000/s", 1000, 0, 0, True),
)


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMKIT_", "BENCH_"))}
    env.update({"PYTHONPATH": str(ROOT), **extra})
    return env


def run_child(argv: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run ``python -m bench.client --child ...``; its last stdout line is its result."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.client", "--child", *argv],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"child {argv[:2]} exited {done.returncode}: {done.stderr[-600:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def send_phase(bootstrap: str, admin: AdminClient, n: int, repeats: int) -> dict[str, Any]:
    topic = f"bench-client-send-{uuid.uuid4().hex[:6]}"
    ensure_topics(admin, [Topic(topic, partitions=PARTITIONS)])
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in SEND_CONTENDERS}
    for rep in range(repeats):
        for contender in SEND_CONTENDERS:
            r = run_child(["send", contender, bootstrap, topic, str(n)], child_env({}), 120)
            runs[contender].append(r)
            log(
                f"[send {rep + 1}/{repeats}] {contender:12} {r['records_per_s']:>8,}/s  "
                f"cpu {r['cpu_s_per_million']:5.1f} s/M  full {r['full']}  "
                f"failed {r['failed']}  delivered {r['delivered']:,}"
            )
    delete_topics(admin, topic)
    out: dict[str, Any] = {"records": n, "repeats": repeats, "contenders": {}}
    base = runs["raw"]
    for contender, rs in runs.items():
        per_round = [r["records_per_s"] / b["records_per_s"] for r, b in zip(rs, base, strict=True)]
        out["contenders"][contender] = {
            "runs": rs,
            "median": {
                k: statistics.median(r[k] for r in rs)
                for k in ("records_per_s", "cpu_s_per_million", "cpu_share", "peak_rss_mb")
            },
            "vs_raw_per_round": [round(x, 2) for x in per_round],
            "vs_raw": round(statistics.median(per_round), 2),
        }
    return out


def start_worker(bootstrap: str, app: str, source: str, linger: int | None) -> Proc:
    env = child_env(
        {
            "BENCH_APP": app,
            "BENCH_IN": source,
            "STREAMKIT_BROKERS": bootstrap,
            "STREAMKIT_GROUP_ID": app,
            "STREAMKIT_LOG_FORMAT": "json",
            "STREAMKIT_LOG_LEVEL": "info",
        }
    )
    if linger is not None:
        env["STREAMKIT_PRODUCER_LINGER_MS"] = str(linger)
    LOGS.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "streamkit", "run", SERVING_APP]
    proc = Proc(argv, env, LOGS / f"worker-linger-{linger}.log")
    deadline = time.monotonic() + 60
    while not proc.named("partitions assigned"):
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"worker did not get its partitions: {proc.tail()}")
        time.sleep(0.1)
    return proc


def ask_phase(bootstrap: str, admin: AdminClient, seconds: float, warm: float) -> dict[str, Any]:
    app_name = f"bench-serving-{uuid.uuid4().hex[:6]}"
    source = f"{app_name}.in"
    env = {"BENCH_APP": app_name, "BENCH_IN": source}
    os.environ.update(env)  # the declarations below and the worker's must agree
    sys.modules.pop("bench.apps.serving", None)
    from bench.apps.serving import app

    ensure_topics(admin, [*app.topics.values(), *app.request_topics])
    variants: list[dict[str, Any]] = []
    worker: Proc | None = None
    worker_linger: int | str | None = "none yet"
    try:
        for name, rate, client_linger, linger, fast in ASK_VARIANTS:
            if worker is None or worker_linger != linger:
                if worker is not None:
                    worker.stop()
                worker = start_worker(bootstrap, app_name, source, linger)
                worker_linger = linger
                time.sleep(1.0)  # the group settles before the first request
            extra = dict(env)
            if client_linger is not None:
                extra["STREAMKIT_PRODUCER_LINGER_MS"] = str(client_linger)
            w0 = sum(worker.proc.cpu_times()[:2])
            argv = ["ask", bootstrap, str(rate), str(seconds), str(warm), "1" if fast else "0"]
            r = run_child(argv, child_env(extra), seconds + warm + 60)
            r["worker_cpu_share"] = round(
                (sum(worker.proc.cpu_times()[:2]) - w0) / (seconds + warm), 3
            )
            r.update(name=name, client_linger_ms=client_linger, worker_linger_ms=linger)
            r["fast_replies"] = fast
            variants.append(r)
            lat = r["latency_ms"]
            log(
                f"[ask] {name}: achieved {r['achieved_per_s']}/s  answered {r['answered']:,}"
                f"/{r['asked']:,}  p50 {lat.get('p50')} p99 {lat.get('p99')} "
                f"max {lat.get('max')} ms  failures {r['failures']}"
            )
    finally:
        if worker is not None:
            worker.stop()
        delete_topics(admin, app_name)
    return {"seconds": seconds, "warm_s": warm, "variants": variants}


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
        return
    parts = os.environ.get("BENCH_CLIENT_PARTS", "send,ask").split(",")
    n = env_int("BENCH_SEND_N", 100_000)
    repeats = env_int("BENCH_REPEATS", 3)
    seconds = float(os.environ.get("BENCH_ASK_SECONDS", "20"))
    warm = float(os.environ.get("BENCH_ASK_WARM_S", "3"))
    t0 = time.monotonic()
    result: dict[str, Any] = {
        "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"confluent-kafka {confluent_kafka.version()} "
        f"(librdkafka {confluent_kafka.libversion()[0]})",
        "commit": git_rev(),
        "code": code_id(),
        "load_1m_start": round(os.getloadavg()[0], 2),
    }
    with bench_broker(os.environ.get("BENCH_BROKERS")) as (bootstrap, started):
        result["broker"] = "a LocalKafka started by the bench" if started else bootstrap
        admin = AdminClient({"bootstrap.servers": bootstrap})
        if "send" in parts:
            result["send"] = send_phase(bootstrap, admin, n, repeats)
        if "ask" in parts:
            result["ask"] = ask_phase(bootstrap, admin, seconds, warm)
        del admin
    result["seconds"] = round(time.monotonic() - t0)
    result["load_1m_end"] = round(os.getloadavg()[0], 2)
    result["code_end"] = code_id()
    RESULTS.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    # Every round's figures, next to the worker's logs: the report is what is kept.
    (LOGS / "client.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (RESULTS / "client.md").write_text(text)
    redraw()  # RESULTS.md shows it beside the other benches
    print(text)
    log(f"done in {result['seconds']} s; every round and the worker logs in {LOGS}")


def child(argv: list[str]) -> None:
    if argv[0] == "send":
        contender, bootstrap, topic, n = argv[1:5]
        out = send_child(contender, bootstrap, topic, int(n))
    else:
        bootstrap, rate, seconds, warm, fast = argv[1:6]
        out = asyncio.run(ask_run(bootstrap, float(rate), float(seconds), float(warm), fast == "1"))
    print(json.dumps(out), flush=True)


# -- the report ------------------------------------------------------------------------------


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Client: benchmark results",
        "",
        provenance(r)
        + f", {r['machine']}, broker: {r['broker']}, load average {r['load_1m_start']} at the "
        f"start, {r['load_1m_end']} at the end, {r['seconds']} s in all. Written by "
        '`python -m bench.client` (see bench/README.md, "Client").',
    ]
    send = r.get("send")
    if send:
        lines += send_markdown(send)
    ask = r.get("ask")
    if ask:
        lines += ask_markdown(ask)
    return "\n".join(lines) + "\n"


def send_markdown(send: dict[str, Any]) -> list[str]:
    table = send["contenders"]
    lines = [
        "",
        "## send: records/s from one process",
        "",
        f"{send['records']:,} records ({VALUE_BYTES}-byte JSON values, string keys) into one "
        f"{PARTITIONS}-partition topic per run, each contender in a fresh process, "
        f"{send['repeats']} rounds alternating; medians. Timed from the first record to the "
        "last delivery report; CPU: user + system of the whole process over that time.",
        "",
        "| contender | records/s | vs raw (per round) | CPU s / 1M records | cores busy "
        "| peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in table.items():
        med = row["median"]
        per = ", ".join(f"{x:.2f}" for x in row["vs_raw_per_round"])
        lines.append(
            f"| {name}: {SEND_NOTES[name]} | {med['records_per_s']:,.0f} "
            f"| {row['vs_raw']:.2f}x ({per}) | {med['cpu_s_per_million']:.1f} "
            f"| {med['cpu_share']:.2f} | {med['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        f"| goal: ≥ {GOAL_SEND:g}x the hand-written loop | median | met |",
        "|---|---:|:---:|",
    ]
    for name in ("send_nowait", "send"):
        ratio = table[name]["vs_raw"]
        met = "yes" if ratio >= GOAL_SEND else "**no**"
        lines.append(f"| `{name}` | {ratio:.2f}x | {met} |")
    bad = {
        name: sum(x["failed"] for x in row["runs"])
        for name, row in table.items()
        if any(x["failed"] or x["delivered"] != x["records"] for x in row["runs"])
    }
    lines += [
        "",
        "Every record of every run delivered."
        if not bad
        else f"**Not every record delivered**: failures {bad}.",
    ]
    return lines


def ask_markdown(ask: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## ask: round trips on an open loop",
        "",
        f"A worker (`bench/apps/serving.py`, a `def` agent with `requests=True` returning its "
        f"input, at least once), a client process asking it at a fixed rate for "
        f"{ask['seconds']:g} s after {ask['warm_s']:g} s of warm-up. A round trip is counted "
        "from the moment its request was due (open loop), to `ask` returning. Cores busy: "
        "CPU seconds per second, the client over the measured part, the worker over the run.",
        "",
        "| variant | achieved asks/s | answered | p50 ms | p90 ms | p99 ms | max ms "
        "| late start p99 ms | client cores | worker cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in ask["variants"]:
        lat, late = v["latency_ms"], v["late_start_ms"]
        fails = f" ({v['failures']})" if v["failures"] else ""
        lines.append(
            f"| {v['name']} | {v['achieved_per_s']:,.0f} | {v['answered']:,} / {v['asked']:,}"
            f"{fails} | {lat.get('p50', '-')} | {lat.get('p90', '-')} | {lat.get('p99', '-')} "
            f"| {lat.get('max', '-')} | {late.get('p99', '-')} | {v['client_cpu_share']:.2f} "
            f"| {v['worker_cpu_share']:.2f} |"
        )
    lines += [
        "",
        "### Where a round trip's time goes",
        "",
        "Each step from the records' own timestamps (the client's and the worker's "
        "`produce`, wall clock in ms) and a tap consumer in the client process that sees "
        "each request and reply as soon as a fetch brings it. Median / p99 ms per step; the "
        "medians do not add up to the round trip's exactly (each is a median of its own).",
        "",
        "| variant | " + " | ".join(STEPS) + " |",
        "|---|" + "---:|" * len(STEPS),
    ]
    for v in ask["variants"]:
        cells = []
        for step in STEPS:
            s = v["steps_ms"].get(step) or {}
            cells.append(f"{s.get('p50', '-')} / {s.get('p99', '-')}")
        lines.append(f"| {v['name']} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
