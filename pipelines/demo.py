"""``make demo``: the orders pipelines end to end on a real broker, in well under a minute.

Steps, each of which stops the demo with a one-line reason and exit code 1 if it fails:

1. Broker: use the one answering on 127.0.0.1:$KAFKA_PORT (default 9092), for
   example from ``make kafka-up``, and leave it running; otherwise start a
   LocalKafka in a temporary directory and stop it at the end, also after an
   error, Ctrl-C or SIGTERM. ``make demo-secure`` (``STREAMKIT_DEMO_SECURE=1``)
   always starts a broker of its own on a free port, with a SASL_SSL listener,
   SCRAM users and ACLs, and every client and worker below connects to it
   over SASL_SSL as ``alice`` (:func:`pipelines.launch.local_broker`).
2. Topics: delete and recreate every topic of both apps (``pipelines.orders``
   and ``pipelines.sessions``: inputs, outputs, dead-letter, late, repartition
   and window changelog topics), so every run starts empty, its counts are
   its own, and re-running needs no cleanup.
3. Produce 10,000 sample orders (:mod:`pipelines.sample_data`), about a fifth
   written with the old schema version v1.
4. Run ``streamkit run pipelines.orders:app`` and ``streamkit run
   pipelines.sessions:app`` as subprocesses, each in a consumer group of its
   own, its log in a file so the console stays readable, and its window
   stores in a temporary directory removed at the end.
5. Wait until each group's committed offsets reach the end of the topics it
   reads: the orders group ``orders.raw``, then ``orders.enriched`` (which
   it writes itself and re-keys by customer for its hourly window), then
   ``orders.hourly_revenue.repartition``; the sessions group
   ``orders.enriched``, then ``order-sessions.shopping_sessions.repartition``
   (each app re-keys the enriched orders into a repartition topic of its own).
6. Stop both workers with SIGTERM and expect exit code 0 (a clean drain).
7. Read the outputs back, check them against what the generator intended
   (and the windows against a recount from the enriched orders), and print
   a summary.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from rich.json import JSON
from rich.panel import Panel
from rich.table import Table

from pipelines import launch, orders, sessions
from pipelines.launch import KAFKA_S, POLL_S, DemoError, console, end_offsets
from pipelines.sample_data import SampleOrder, generate_orders, produce_orders, produce_rates
from streamkit import App, Topic
from streamkit.backends.kafka import create_admin, ensure_topics
from streamkit.windows.declaration import Windowed

ORDER_COUNT = 10_000
APPS = (orders.app, sessions.app)


def _late_topic(windowed: Windowed) -> str:
    if windowed.late is None:
        raise RuntimeError(f"window {windowed.name} sends its late records to no topic")
    return windowed.late.name


# The windows' late topics: the defaults, <app>.<window>.late.
HOURLY_LATE = _late_topic(orders.hourly_revenue)
SESSIONS_LATE = _late_topic(sessions.shopping_sessions)
# What the windows read: the enriched orders re-keyed by customer (group_by=),
# <app>.<window>.repartition, one topic per app.
HOURLY_REKEYED = orders.hourly_revenue.source.name
SESSIONS_REKEYED = sessions.shopping_sessions.source.name
# What the orders agent writes: the throughput is measured on these alone,
# since the windows emit when stream time passes, not as orders come in.
ORDERS_OUTPUTS = (orders.enriched.name, orders.review.name, orders.invalid.name)
OUTPUTS = (
    *ORDERS_OUTPUTS,
    HOURLY_REKEYED,
    orders.hourly.name,
    HOURLY_LATE,
    SESSIONS_REKEYED,
    sessions.sessions.name,
    SESSIONS_LATE,
)
HOUR_MS = 3_600_000


def main() -> int:
    """Run the demo; return the process exit code."""
    return launch.main("demo", run, interrupted=130)


def run(cleanup: contextlib.ExitStack) -> None:
    """Every step of the demo; resources to release go on ``cleanup``."""
    secure = os.environ.get("STREAMKIT_DEMO_SECURE", "") == "1"
    connection = launch.local_broker(
        launch.port_from_env("KAFKA_PORT", 9092), cleanup, secure=secure
    )
    port = connection.bootstrap.rsplit(":", 1)[1]
    # Groups of their own per run: the recreated topics start empty, and no
    # offsets an earlier run (or a developer's own `orders` group) committed
    # can make a worker skip records.
    token = secrets.token_hex(4)
    config = orders.app.config(
        brokers=connection.bootstrap,
        group_id=f"{orders.app.name}-demo-{token}",
        **connection.settings,
    )
    _recreate_topics(create_admin(config), APPS)

    produce_rates(connection.client)
    console.print(
        f"Published {len(orders.EUR_RATES)} exchange rates to {orders.rates_topic.name}, "
        "the global table the orders are priced with."
    )
    samples = generate_orders(ORDER_COUNT)
    with console.status(f"Producing {ORDER_COUNT:,} sample orders..."):
        produce_orders(connection.client, samples)
    console.print(f"Produced {ORDER_COUNT:,} orders to {orders.raw.name}.")

    # Window stores go to a directory of this run, never into the repository
    # (the default state_dir is ./state); registered before the workers, so
    # it is removed after they stopped.
    state_root = Path(tempfile.mkdtemp(prefix=f"streamkit-demo-state-{port}-"))
    cleanup.callback(shutil.rmtree, state_root, ignore_errors=True)
    log_dir = Path(tempfile.gettempdir()) / f"streamkit-demo-{port}"
    started = time.time()
    workers = [
        launch.start_worker(
            connection,
            orders.app,
            "pipelines.orders:app",
            f"{orders.app.name}-demo-{token}",
            (orders.raw.name, orders.enriched.name, HOURLY_REKEYED),
            log_dir,
            state_root,
            cleanup,
        ),
        launch.start_worker(
            connection,
            sessions.app,
            "pipelines.sessions:app",
            f"{sessions.app.name}-demo-{token}",
            (sessions.enriched.name, SESSIONS_REKEYED),
            log_dir,
            state_root,
            cleanup,
        ),
    ]
    console.print(
        "Started workers "
        + " and ".join(f"{w.name} (pid {w.process.pid}, group {w.group})" for w in workers)
        + "."
    )
    console.print(f"Worker logs in {log_dir}: {', '.join(w.log_path.name for w in workers)}.")
    launch.wait_until_drained(connection, workers)  # orders first: it writes what sessions reads
    launch.stop_workers(workers)

    outputs = _read_outputs(connection)
    _print_counts(samples, outputs)
    _check(samples, outputs)  # before the rest, which relies on every output being there
    _check_windows(outputs)
    _print_throughput(samples, outputs, started)
    _print_samples(samples, outputs)
    _print_windows(outputs)


def _recreate_topics(admin: AdminClient, apps: Sequence[App]) -> None:
    """Delete every topic the apps declare, then create them again, empty."""
    declared: dict[str, tuple[App, Topic]] = {}
    for app in apps:
        for name, topic in app.topics.items():
            first, seen = declared.setdefault(name, (app, topic))
            if _creation(seen) != _creation(topic):
                raise DemoError(
                    f"apps {first.name} and {app.name} declare topic {name} differently: "
                    f"{_creation(seen)} and {_creation(topic)}"
                )
    names = sorted(declared)
    existing = sorted(set(admin.list_topics(timeout=KAFKA_S).topics) & set(names))
    if existing:
        for name, future in admin.delete_topics(existing, operation_timeout=KAFKA_S).items():
            try:
                future.result(timeout=KAFKA_S)
            except KafkaException as exc:
                err = exc.args[0]
                if not (
                    isinstance(err, KafkaError) and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
                ):
                    raise DemoError(f"cannot delete topic {name}: {err}") from None
        # Deletion is acknowledged before every broker forgets the topic;
        # creating it again before then would find the old one.
        deadline = time.monotonic() + KAFKA_S
        while set(admin.list_topics(timeout=KAFKA_S).topics) & set(existing):
            if time.monotonic() > deadline:
                raise DemoError(f"topics {', '.join(existing)} still exist {KAFKA_S:.0f}s later")
            time.sleep(POLL_S)
    created = ensure_topics(admin, [t for _, t in declared.values()], timeout=KAFKA_S)
    if sorted(created) != names:
        raise DemoError(f"expected to create {names}, created {sorted(created)}")
    what = "Recreated" if existing else "Created"
    console.print(
        f"{what} the {len(names)} topics of apps {' and '.join(a.name for a in apps)} "
        "(inputs, outputs, dead letters, late records, repartition topics, window changelogs)."
    )


def _creation(topic: Topic) -> tuple[int | None, int | None, dict[str, str]]:
    """What a topic is created with: partitions, replication, configs."""
    return topic.partitions, topic.replication, dict(topic.config)


class Record(NamedTuple):
    """One record read back: its timestamp (ms), its partition, its decoded value."""

    timestamp: int
    partition: int
    value: dict[str, Any]


Output = list[Record]
"""Every record of one topic, each partition in offset order."""


def _read_outputs(connection: launch.Connection) -> dict[str, Output]:
    """Read every output topic from its start to the end offsets seen now."""
    consumer = connection.consumer(
        **{"group.id": f"orders-demo-reader-{secrets.token_hex(4)}", "enable.auto.commit": False}
    )
    out: dict[str, Output] = {topic: [] for topic in OUTPUTS}
    try:
        ends = {(t, p): end for t in OUTPUTS for p, end in end_offsets(consumer, t).items()}
        consumer.assign([TopicPartition(t, p, 0) for (t, p), end in ends.items() if end > 0])
        left = {tp for tp, end in ends.items() if end > 0}
        deadline = time.monotonic() + KAFKA_S
        while left:
            if time.monotonic() > deadline:
                raise DemoError(f"could not read the outputs back within {KAFKA_S:.0f}s")
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
                out[topic].append(Record(msg.timestamp()[1], partition, orjson.loads(value)))
                if offset + 1 >= ends[(topic, partition)]:
                    left.discard((topic, partition))
    finally:
        consumer.close()
    return out


def _values(outputs: dict[str, Output], topic: str) -> list[dict[str, Any]]:
    return [record.value for record in outputs[topic]]


def _check(samples: list[SampleOrder], outputs: dict[str, Output]) -> None:
    """Compare the orders agent's outputs with what the generator meant each order to be."""
    valid = Counter(s.order_id for s in samples if s.kind != "invalid")
    expected = {
        orders.enriched.name: valid,
        orders.review.name: Counter(s.order_id for s in samples if s.kind == "high_value"),
        orders.invalid.name: Counter(s.order_id for s in samples if s.kind == "invalid"),
        HOURLY_REKEYED: valid,
        SESSIONS_REKEYED: valid,
    }
    for topic, want in expected.items():
        got = Counter(v["order_id"] for v in _values(outputs, topic))
        if got != want:
            missing, extra = want - got, got - want
            raise DemoError(
                f"{topic}: {sum(missing.values())} expected records missing, "
                f"{sum(extra.values())} unexpected or duplicated "
                f"(e.g. {sorted(missing or extra)[:3]})"
            )
    v1_ids = {s.order_id for s in samples if s.version == "v1"}
    channels = Counter(
        v["channel"] for v in _values(outputs, orders.enriched.name) if v["order_id"] in v1_ids
    )
    if set(channels) != {"web"}:
        raise DemoError(f"orders written with schema v1 got channels {dict(channels)}, not 'web'")
    for topic in (HOURLY_REKEYED, SESSIONS_REKEYED):
        partitions: dict[str, set[int]] = defaultdict(set)
        for r in outputs[topic]:
            partitions[r.value["customer_id"]].add(r.partition)
        split = sorted(c for c, p in partitions.items() if len(p) > 1)
        if split:
            raise DemoError(
                f"{topic}: {len(split)} customers' orders are in more than one partition "
                f"(re-keyed by customer, each should be in one), e.g. {split[0]}"
            )
    console.print(
        "[green]✓[/] Every order is in exactly one of enriched/invalid, review holds exactly "
        "the high-value ones, each repartition topic holds each enriched one once with each "
        "customer's orders in one partition, and v1 orders read with channel='web'."
    )


def _check_windows(outputs: dict[str, Output]) -> None:
    """Recount the hourly revenue from the enriched orders; check the sessions' shape."""
    hourly = _values(outputs, orders.hourly.name)
    late = {v["order_id"] for v in _values(outputs, HOURLY_LATE)}
    want = _hourly_sums(outputs, late)
    emitted = Counter((w["customer_id"], _ms(w["hour"])) for w in hourly)
    twice = sorted(k for k, n in emitted.items() if n > 1)
    if twice:
        raise DemoError(
            f"{orders.hourly.name}: {len(twice)} customer hours emitted more than once "
            f"(final results come once), e.g. {_customer_hour(twice[0])}"
        )
    for w in hourly:
        key = (w["customer_id"], _ms(w["hour"]))
        if key not in want:
            raise DemoError(
                f"{orders.hourly.name}: {_customer_hour(key)} has {w['revenue_eur']} EUR, "
                "but no order of that customer in that hour reached the window"
            )
        if w["revenue_eur"] != round(want[key], 2):
            raise DemoError(
                f"{orders.hourly.name}: {_customer_hour(key)} has {w['revenue_eur']} EUR, "
                f"but that customer's orders in that hour (late ones left out) total "
                f"{round(want[key], 2)} EUR"
            )
    missing = sorted(set(_closed_hours(outputs, want)) - set(emitted))
    if missing:
        raise DemoError(
            f"{orders.hourly.name}: {len(missing)} customer hours closed (their partition's "
            f"newest order is {orders.GRACE_S // 60} min past their end) but never emitted, "
            f"e.g. {_customer_hour(missing[0])}"
        )

    found = _values(outputs, sessions.sessions.name)
    for s in found:
        if s["orders"] < 1 or _ms(s["first_order"]) > _ms(s["last_order"]):
            raise DemoError(
                f"{sessions.sessions.name}: a session of {s['customer_id']} has "
                f"{s['orders']} orders from {s['first_order']} to {s['last_order']}"
            )
    console.print(
        f"[green]✓[/] Each of the {len(hourly):,} hourly revenues is its customer's orders in "
        f"that hour recounted from enriched ({len(late):,} late ones left out), and every hour "
        f"that should have closed was emitted once; each of the {len(found):,} sessions has "
        "orders >= 1 and first_order <= last_order."
    )


def _hourly_sums(outputs: dict[str, Output], late: set[str]) -> dict[tuple[str, int], float]:
    """EUR per (customer, hour start in ms) of the enriched orders, less the late ones."""
    sums: dict[tuple[str, int], float] = defaultdict(float)
    for v in _values(outputs, orders.enriched.name):
        if v["order_id"] not in late:
            ts = _ms(v["created_at"])
            sums[(v["customer_id"], ts - ts % HOUR_MS)] += v["total_eur"]
    return sums


def _closed_hours(
    outputs: dict[str, Output], hours: Iterable[tuple[str, int]]
) -> list[tuple[str, int]]:
    """The customer hours whose window has closed: stream time is past end + grace.

    Stream time is per ``orders.hourly_revenue.repartition`` partition (each
    customer's orders are in one): the newest ``created_at`` the window saw there.
    """
    stream_time: dict[int, int] = defaultdict(lambda: -1)
    partition_of: dict[str, int] = {}
    for r in outputs[HOURLY_REKEYED]:
        stream_time[r.partition] = max(stream_time[r.partition], _ms(r.value["created_at"]))
        partition_of[r.value["customer_id"]] = r.partition
    grace = orders.GRACE_S * 1000
    return [
        (customer, start)
        for customer, start in hours
        if start + HOUR_MS + grace <= stream_time[partition_of[customer]]
    ]


def _ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso).timestamp() * 1000)


def _hhmm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M")


def _customer_hour(key: tuple[str, int]) -> str:
    customer, start = key
    return f"{customer} at {datetime.fromtimestamp(start / 1000, UTC).isoformat()}"


def _print_counts(samples: list[SampleOrder], outputs: dict[str, Output]) -> None:
    versions = Counter(s.version for s in samples)
    table = Table(title=f"apps {orders.app.name} and {sessions.app.name}", title_justify="left")
    table.add_column("topic", no_wrap=True)
    table.add_column("")
    table.add_column("records", justify="right")
    table.add_column("what")
    table.add_row(
        orders.raw.name,
        "in",
        f"{len(samples):,}",
        f"Avro: {versions['v1']:,} with schema v1, {versions['v2']:,} with v2",
    )
    notes = {
        orders.enriched.name: "valid orders, totals in EUR",
        orders.review.name: f">= {orders.REVIEW_THRESHOLD_EUR:,.0f} EUR (also in enriched)",
        orders.invalid.name: "failed validation, with reasons",
        HOURLY_REKEYED: "valid orders keyed by customer, for hourly",
        orders.hourly.name: "EUR per customer and closed hour",
        HOURLY_LATE: "came after their hour closed",
        SESSIONS_REKEYED: "valid orders keyed by customer, for sessions",
        sessions.sessions.name: f"closed sessions ({sessions.GAP_S // 60} min gap)",
        SESSIONS_LATE: "came after their session closed",
    }
    for topic, note in notes.items():
        table.add_row(topic, "out", f"{len(outputs[topic]):,}", note)
    console.print(table)


def _print_throughput(
    samples: list[SampleOrder], outputs: dict[str, Output], started: float
) -> None:
    # Output timestamps are set by the worker's producer as it emits, so
    # first-to-last output is the processing time without start-up and join.
    # Only the orders agent's outputs: windows emit when stream time passes.
    stamps = [r.timestamp for topic in ORDERS_OUTPUTS for r in outputs[topic]]
    seconds = max((max(stamps) - min(stamps)) / 1000, 0.001)
    console.print(
        f"Throughput: [bold]{len(samples) / seconds:,.0f} orders/s[/] "
        f"({len(samples):,} orders in {seconds:.2f} s, first to last enriched/review/invalid "
        f"record; worker start-up and group join took {min(stamps) / 1000 - started:.1f} s "
        "before that)"
    )


def _print_samples(samples: list[SampleOrder], outputs: dict[str, Output]) -> None:
    v1_ids = {s.order_id for s in samples if s.version == "v1"}
    review_ids = {v["order_id"] for v in _values(outputs, orders.review.name)}
    enriched = _values(outputs, orders.enriched.name)
    hour = min(_values(outputs, orders.hourly.name), key=_by_hour)
    session = min(
        (s for s in _values(outputs, sessions.sessions.name) if s["orders"] > 1),
        key=_most_orders_first,
    )
    minutes = (_ms(session["last_order"]) - _ms(session["first_order"])) / 60_000
    shown = [
        (
            "orders.enriched (written with v1; channel is v2's default)",
            min(
                (
                    v
                    for v in enriched
                    if v["order_id"] in v1_ids and v["order_id"] not in review_ids
                ),
                key=_by_id,
            ),
        ),
        ("orders.review", min(_values(outputs, orders.review.name), key=_short_first)),
        ("orders.invalid", min(_values(outputs, orders.invalid.name), key=_by_id)),
        (f"{orders.hourly.name} (one customer's EUR in one hour)", hour),
        (
            f"{sessions.sessions.name} ({session['orders']} orders in {minutes:.0f} min)",
            session,
        ),
    ]
    for title, value in shown:
        console.print(Panel(JSON.from_data(value), title=title, title_align="left"))


def _print_windows(outputs: dict[str, Output]) -> None:
    """When windows close, and what is still open at the end of the sample orders."""
    late = {v["order_id"] for v in _values(outputs, HOURLY_LATE)}
    emitted = {(w["customer_id"], _ms(w["hour"])) for w in _values(outputs, orders.hourly.name)}
    still_open = set(_hourly_sums(outputs, late)) - emitted
    in_sessions = sum(s["orders"] for s in _values(outputs, sessions.sessions.name))
    open_orders = len(outputs[SESSIONS_REKEYED]) - in_sessions - len(outputs[SESSIONS_LATE])
    times = [_ms(v["created_at"]) for v in _values(outputs, orders.enriched.name)]
    hours = sorted({start for _, start in still_open})
    which = f" (hours {', '.join(_hhmm(h) for h in hours)})" if hours else ""
    idle = orders.hourly_revenue.idle
    quiet = (
        f"or until stream time, which follows the wall clock after {idle:.0f} s without "
        "orders, gets there"
        if idle
        else "nothing else closes them"
    )
    console.print(
        f"Windows close on event time: a window closes once the newest order of its partition "
        f"is {orders.GRACE_S // 60} min past its end; the last hours stay open until more "
        f"orders come, {quiet}. The sample orders run from {_hhmm(min(times))} to "
        f"{_hhmm(max(times))} UTC, so {len(still_open):,} customer hours{which} and the "
        f"sessions of {open_orders:,} orders are still open at the end, as they should be."
    )
    late_sessions = len(outputs[SESSIONS_LATE])
    if late or late_sessions:
        # A late record is more than grace behind its partition's stream
        # time, so only a topic with late records is said to be that far off.
        behind = " and ".join(
            f"{topic} holds orders up to {_disorder(outputs, topic) / 60_000:.0f} min"
            for topic, count in ((HOURLY_REKEYED, len(late)), (SESSIONS_REKEYED, late_sessions))
            if count
        )
        console.print(
            f"[yellow]Late:[/] {len(late):,} orders for the hourly revenue and "
            f"{late_sessions:,} for the sessions came after their window closed: {behind} "
            "of event time behind the newest order of their partition (each repartition agent "
            f"interleaves the {orders.enriched.name} partitions in the order its worker read "
            f"their backlog), more than the {orders.GRACE_S // 60} min grace allows."
        )


def _disorder(outputs: dict[str, Output], topic: str) -> int:
    """The most a ``topic`` record's created_at is behind its partition's newest."""
    newest: dict[int, int] = defaultdict(lambda: -1)
    worst = 0
    for r in outputs[topic]:  # each partition in offset order
        ts = _ms(r.value["created_at"])
        worst = max(worst, newest[r.partition] - ts)
        newest[r.partition] = max(newest[r.partition], ts)
    return worst


def _by_id(value: dict[str, Any]) -> str:
    return str(value["order_id"])


def _short_first(value: dict[str, Any]) -> tuple[int, str]:
    return len(value["items"]), str(value["order_id"])


def _by_hour(value: dict[str, Any]) -> tuple[str, str]:
    return str(value["hour"]), str(value["customer_id"])


def _most_orders_first(value: dict[str, Any]) -> tuple[int, str, str]:
    return -int(value["orders"]), str(value["customer_id"]), str(value["first_order"])


if __name__ == "__main__":
    sys.exit(main())
