"""``make demo``: the orders pipeline end to end on a real broker, in well under a minute.

Steps, each of which stops the demo with a one-line reason and exit code 1 if it fails:

1. Broker: use the one answering on 127.0.0.1:$KAFKA_PORT (default 9092), for
   example from ``make kafka-up``, and leave it running; otherwise start a
   LocalKafka in a temporary directory and stop it at the end, also after an
   error, Ctrl-C or SIGTERM.
2. Topics: delete and recreate the four ``orders.*`` topics, so every run
   starts empty, its counts are its own, and re-running needs no cleanup.
3. Produce 10,000 sample orders (:mod:`pipelines.sample_data`), about a fifth
   written with the old schema version v1.
4. Run ``streamkit run pipelines.orders:app`` as a subprocess; its log goes to
   a file so the console stays readable.
5. Wait until the group's committed offsets reach the end of ``orders.raw``.
6. Stop the worker with SIGTERM and expect exit code 0 (a clean drain).
7. Read the outputs back, check them against what the generator intended, and
   print a summary.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.json import JSON
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from pipelines import orders
from pipelines.sample_data import SCHEMAS_DIR, SampleOrder, generate_orders, produce_orders
from streamkit import StreamkitError
from streamkit.backends.kafka import create_admin, ensure_topics
from streamkit.localkafka import LocalKafka, is_fetched
from streamkit.localkafka.probe import wait_until_answers
from streamkit.localkafka.process import port_accepts
from streamkit.logs import configure_logging

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
ORDER_COUNT = 10_000
OUTPUTS = (orders.enriched.name, orders.review.name, orders.invalid.name)

# Timeouts are generous ceilings, not expectations: on a laptop the broker
# starts in 3-5 s, the worker joins in about 1 s and drains 10,000 orders in
# 1-3 s, and a clean stop takes about 1 s.
_BROKER_START_S = 60.0
_KAFKA_S = 30.0  # any one admin or metadata request, topic creation or deletion
_DRAIN_S = 90.0
_STOP_S = 40.0  # above the worker's own shutdown_timeout (30 s)
_POLL_S = 0.1

console = Console(highlight=False)


class DemoError(Exception):
    """A step failed; the message says which one and why."""


def main() -> int:
    """Run the demo; return the process exit code."""
    signal.signal(signal.SIGTERM, _interrupt)  # so cleanup also runs on SIGTERM
    # streamkit's info lines (topics created...) would interleave with the
    # summary; the worker's own log goes to its file.
    configure_logging("console", "warning")
    with contextlib.ExitStack() as cleanup:  # closed last-in first-out: worker, then broker
        try:
            run(cleanup)
        except (DemoError, StreamkitError, KafkaException) as exc:
            console.print(f"[bold red]demo failed:[/] {exc}")
            return 1
        except KeyboardInterrupt:
            console.print("[yellow]interrupted; cleaning up[/]")
            return 130
    return 0


def run(cleanup: contextlib.ExitStack) -> None:
    """Every step of the demo; resources to release go on ``cleanup``."""
    port = _port()
    bootstrap = _broker(port, cleanup)
    # A group of its own per run: the recreated topics start empty, and no
    # offsets an earlier run (or a developer's own `orders` group) committed
    # can make the worker skip records.
    group = f"orders-demo-{secrets.token_hex(4)}"
    config = orders.app.config(brokers=bootstrap, group_id=group)
    _recreate_topics(create_admin(config))

    samples = generate_orders(ORDER_COUNT)
    with console.status(f"Producing {ORDER_COUNT:,} sample orders..."):
        produce_orders(bootstrap, samples)
    console.print(f"Produced {ORDER_COUNT:,} orders to {orders.raw.name}.")

    log_path = Path(tempfile.gettempdir()) / f"streamkit-demo-{port}" / "worker.log"
    started = time.time()
    worker = _start_worker(bootstrap, group, log_path, cleanup)
    console.print(f"Worker started (pid {worker.pid}, group {group}).")
    console.print(f"Worker log: {log_path}")
    _wait_until_drained(bootstrap, group, worker, log_path)

    worker.send_signal(signal.SIGTERM)
    try:
        code = worker.wait(_STOP_S)
    except subprocess.TimeoutExpired:
        raise DemoError(f"the worker did not stop within {_STOP_S:.0f}s of SIGTERM") from None
    if code != 0:
        raise DemoError(f"the worker exited with code {code} after SIGTERM; see {log_path}")
    console.print("Worker stopped cleanly after SIGTERM (exit code 0).")

    outputs = _read_outputs(bootstrap)
    _print_counts(samples, outputs)
    _check(samples, outputs)  # before the rest, which relies on every output being there
    _print_throughput(samples, outputs, started)
    _print_samples(samples, outputs)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _port() -> int:
    text = os.environ.get("KAFKA_PORT", "9092")
    if not text.isdigit() or not 0 < int(text) < 65535:
        raise DemoError(f"KAFKA_PORT must be a port number; got {text!r}")
    return int(text)


def _broker(port: int, cleanup: contextlib.ExitStack) -> str:
    """Use the broker on ``port`` if one answers, else start one for this run."""
    if port_accepts(port, HOST):
        reason = wait_until_answers(HOST, port, timeout=10.0)
        if reason is not None:
            raise DemoError(
                f"{HOST}:{port} accepts connections but does not answer as a Kafka broker "
                f"({reason}); set KAFKA_PORT to a free port"
            )
        console.print(f"Using the broker already running on {HOST}:{port}; it is left running.")
        return f"{HOST}:{port}"
    data_dir = Path(tempfile.mkdtemp(prefix=f"streamkit-demo-kafka-{port}-"))
    cleanup.callback(shutil.rmtree, data_dir, ignore_errors=True)
    kafka = LocalKafka(port, data_dir=data_dir)
    if not is_fetched(kafka.version):
        console.print(f"Fetching the Kafka {kafka.version} jars with Maven (first run only)...")
        kafka.fetch()
    cleanup.callback(kafka.stop)  # idempotent, so safe even if start() fails halfway
    with console.status(f"Starting Kafka on {kafka.bootstrap}..."):
        kafka.start(timeout=_BROKER_START_S)
    console.print(
        f"Started Kafka {kafka.version} on {kafka.bootstrap}; stopped when the demo ends."
    )
    return kafka.bootstrap


def _recreate_topics(admin: AdminClient) -> None:
    names = sorted(orders.app.topics)
    existing = sorted(set(admin.list_topics(timeout=_KAFKA_S).topics) & set(names))
    if existing:
        for name, future in admin.delete_topics(existing, operation_timeout=_KAFKA_S).items():
            try:
                future.result(timeout=_KAFKA_S)
            except KafkaException as exc:
                err = exc.args[0]
                if not (
                    isinstance(err, KafkaError) and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
                ):
                    raise DemoError(f"cannot delete topic {name}: {err}") from None
        # Deletion is acknowledged before every broker forgets the topic;
        # creating it again before then would find the old one.
        deadline = time.monotonic() + _KAFKA_S
        while set(admin.list_topics(timeout=_KAFKA_S).topics) & set(existing):
            if time.monotonic() > deadline:
                raise DemoError(f"topics {', '.join(existing)} still exist {_KAFKA_S:.0f}s later")
            time.sleep(_POLL_S)
    created = ensure_topics(admin, orders.app.topics.values(), timeout=_KAFKA_S)
    if created != names:
        raise DemoError(f"expected to create {names}, created {created}")
    what = "Recreated" if existing else "Created"
    console.print(f"{what} topics {', '.join(names)}.")


def _start_worker(
    bootstrap: str, group: str, log_path: Path, cleanup: contextlib.ExitStack
) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = cleanup.enter_context(log_path.open("wb"))
    env = {
        **os.environ,
        "STREAMKIT_BROKERS": bootstrap,
        "STREAMKIT_GROUP_ID": group,
        "STREAMKIT_SCHEMAS_DIR": str(SCHEMAS_DIR),
        "STREAMKIT_LOG_FORMAT": "console",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "streamkit", "run", "pipelines.orders:app"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        # Its own session: Ctrl-C in the terminal reaches only the demo, which
        # then sends the worker one SIGTERM (a second signal would make it
        # exit at once without committing).
        start_new_session=True,
    )
    cleanup.callback(_stop_worker, worker)
    return worker


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(_STOP_S)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _wait_until_drained(
    bootstrap: str, group: str, worker: subprocess.Popen[bytes], log_path: Path
) -> None:
    """Poll the group's committed offsets until they reach the end of ``orders.raw``."""
    # The same group id only reads the group's offsets: this consumer never
    # subscribes, so it does not join the group or take partitions.
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        ends = _end_offsets(consumer, orders.raw.name)
        total = sum(ends.values())
        deadline = time.monotonic() + _DRAIN_S
        columns = (TextColumn("Processing"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("", total=total)
            while True:
                code = worker.poll()
                if code is not None:
                    raise DemoError(
                        f"the worker exited with code {code} before draining "
                        f"{orders.raw.name}; see {log_path}:\n{_tail(log_path)}"
                    )
                try:
                    positions = consumer.committed(
                        [TopicPartition(orders.raw.name, p) for p in ends], timeout=_KAFKA_S
                    )
                except KafkaException as exc:
                    # On a broker that just started, the group's coordinator
                    # may still be moving or loading (NOT_COORDINATOR): ask again.
                    problem = f"last offset fetch failed: {exc.args[0]}"
                else:
                    # -1001 means nothing committed yet for that partition.
                    done = [max(tp.offset, 0) for tp in positions]
                    problem = f"committed {sum(done):,} of {total:,}"
                    progress.update(task, completed=sum(done))
                    if all(tp.offset >= ends[tp.partition] for tp in positions):
                        break
                if time.monotonic() > deadline:
                    raise DemoError(
                        f"{orders.raw.name} not drained after {_DRAIN_S:.0f}s ({problem}); "
                        f"see {log_path}"
                    )
                time.sleep(_POLL_S)
    finally:
        consumer.close()
    console.print(f"All {total:,} orders processed and committed.")


def _end_offsets(consumer: Consumer, topic: str) -> dict[int, int]:
    partitions = consumer.list_topics(topic, timeout=_KAFKA_S).topics[topic].partitions
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=_KAFKA_S)[1]
        for p in partitions
    }


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


Output = list[tuple[int, dict[str, Any]]]
"""(timestamp in ms, decoded value) for every record of one topic."""


def _read_outputs(bootstrap: str) -> dict[str, Output]:
    """Read every output topic from its start to the end offsets seen now."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"orders-demo-reader-{secrets.token_hex(4)}",
            "enable.auto.commit": False,
        }
    )
    out: dict[str, Output] = {topic: [] for topic in OUTPUTS}
    try:
        ends = {(t, p): end for t in OUTPUTS for p, end in _end_offsets(consumer, t).items()}
        consumer.assign([TopicPartition(t, p, 0) for (t, p), end in ends.items() if end > 0])
        left = {tp for tp, end in ends.items() if end > 0}
        deadline = time.monotonic() + _KAFKA_S
        while left:
            if time.monotonic() > deadline:
                raise DemoError(f"could not read the outputs back within {_KAFKA_S:.0f}s")
            for msg in consumer.consume(1000, timeout=0.5):
                topic, partition, offset, value = (
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    msg.value(),
                )
                error = msg.error()
                if error or topic is None or partition is None or offset is None or value is None:
                    raise DemoError(f"reading {topic}: {error or 'a record without a value'}")
                out[topic].append((msg.timestamp()[1], orjson.loads(value)))
                if offset + 1 >= ends[(topic, partition)]:
                    left.discard((topic, partition))
    finally:
        consumer.close()
    return out


def _check(samples: list[SampleOrder], outputs: dict[str, Output]) -> None:
    """Compare the outputs with what the generator meant each order to be."""
    ids = {
        topic: Counter(value["order_id"] for _, value in records)
        for topic, records in outputs.items()
    }
    expected = {
        orders.enriched.name: Counter(s.order_id for s in samples if s.kind != "invalid"),
        orders.review.name: Counter(s.order_id for s in samples if s.kind == "high_value"),
        orders.invalid.name: Counter(s.order_id for s in samples if s.kind == "invalid"),
    }
    for topic, want in expected.items():
        if ids[topic] != want:
            missing, extra = want - ids[topic], ids[topic] - want
            raise DemoError(
                f"{topic}: {sum(missing.values())} expected records missing, "
                f"{sum(extra.values())} unexpected or duplicated "
                f"(e.g. {sorted(missing or extra)[:3]})"
            )
    v1_ids = {s.order_id for s in samples if s.version == "v1"}
    channels = Counter(
        v["channel"] for _, v in outputs[orders.enriched.name] if v["order_id"] in v1_ids
    )
    if set(channels) != {"web"}:
        raise DemoError(f"orders written with schema v1 got channels {dict(channels)}, not 'web'")
    console.print(
        "[green]✓[/] Every order is in exactly one of enriched/invalid, review holds exactly "
        "the high-value ones, and v1 orders read with channel='web'."
    )


def _print_counts(samples: list[SampleOrder], outputs: dict[str, Output]) -> None:
    versions = Counter(s.version for s in samples)
    table = Table(title="orders pipeline", title_justify="left")
    table.add_column("topic")
    table.add_column("")
    table.add_column("records", justify="right")
    table.add_column("what")
    table.add_row(
        orders.raw.name,
        "in",
        f"{len(samples):,}",
        f"Avro: {versions['v1']:,} written with schema v1, {versions['v2']:,} with v2",
    )
    notes = {
        orders.enriched.name: "every valid order, totals in EUR",
        orders.review.name: f"total >= {orders.REVIEW_THRESHOLD_EUR:,.0f} EUR (also in enriched)",
        orders.invalid.name: "failed validation, with the reasons",
    }
    for topic, note in notes.items():
        table.add_row(topic, "out", f"{len(outputs[topic]):,}", note)
    console.print(table)


def _print_throughput(
    samples: list[SampleOrder], outputs: dict[str, Output], started: float
) -> None:
    # Output timestamps are set by the worker's producer as it emits, so
    # first-to-last output is the processing time without start-up and join.
    stamps = [ts for records in outputs.values() for ts, _ in records]
    seconds = max((max(stamps) - min(stamps)) / 1000, 0.001)
    console.print(
        f"Throughput: [bold]{len(samples) / seconds:,.0f} orders/s[/] "
        f"({len(samples):,} orders in {seconds:.2f} s, first to last output record; "
        f"worker start-up and group join took {min(stamps) / 1000 - started:.1f} s before that)"
    )


def _print_samples(samples: list[SampleOrder], outputs: dict[str, Output]) -> None:
    v1_ids = {s.order_id for s in samples if s.version == "v1"}
    review_ids = {v["order_id"] for _, v in outputs[orders.review.name]}
    shown = [
        (
            "orders.enriched (written with v1; channel is v2's default)",
            min(
                (
                    v
                    for _, v in outputs[orders.enriched.name]
                    if v["order_id"] in v1_ids and v["order_id"] not in review_ids
                ),
                key=_by_id,
            ),
        ),
        ("orders.review", min((v for _, v in outputs[orders.review.name]), key=_short_first)),
        ("orders.invalid", min((v for _, v in outputs[orders.invalid.name]), key=_by_id)),
    ]
    for title, value in shown:
        console.print(Panel(JSON.from_data(value), title=title, title_align="left"))


def _by_id(value: dict[str, Any]) -> str:
    return str(value["order_id"])


def _short_first(value: dict[str, Any]) -> tuple[int, str]:
    return len(value["items"]), str(value["order_id"])


if __name__ == "__main__":
    sys.exit(main())
