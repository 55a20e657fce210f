"""The behaviour the runtime relies on, checked on the memory broker and on Kafka alike.

Each test drives real workers through the ``cluster`` fixture; the same
assertions must hold on both brokers, so the memory broker (and every test
written with :mod:`streamkit.testing`) cannot drift away from Kafka. What
the memory broker cannot model is a strict xfail on its side only.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

from streamkit import App, Context
from tests.contract.conftest import memory_cannot_model
from tests.contract.drivers import Cluster, default_partition

PARTITIONS = 4
KEYS = 13


def keyed(start: int, stop: int) -> list[tuple[bytes | None, bytes]]:
    """``id`` counts up, and up per key too, so order per key is visible."""
    return [
        (f"key-{i % KEYS}".encode(), json.dumps({"id": i}).encode()) for i in range(start, stop)
    ]


def relay_app(cluster: Cluster, source: str, sink: str, **settings: Any) -> App:
    """Emit ``{"id": ...}`` for each input, keeping its key; fail on ``{"fail": true}``."""
    app = App(cluster.group(), **settings)
    out = app.topic(sink)

    # A failed record stops the worker: the broker-level contract under test
    # (dead letters are the runtime's business, tested with the harness).
    @app.agent(app.topic(source), emits=[out], dead_letter=False)
    def relay(value: dict[str, Any], ctx: Context) -> dict[str, Any]:
        if value.get("fail"):
            raise ValueError(f"record {ctx.offset} is poison")
        if "size" in value:
            return {"id": value["id"], "pad": "x" * value["size"]}
        return {"id": value["id"]}

    return app


def ids(cluster: Cluster, topic: str) -> Counter[int]:
    return Counter(json.loads(r.value or b"")["id"] for r in cluster.read(topic))


def all_committed(cluster: Cluster, group: str, topic: str) -> bool:
    return cluster.committed(group, topic) == {
        p: end for p, end in cluster.end_offsets(topic).items() if end
    }


def test_keyed_records_land_on_the_partition_of_librdkafkas_default_partitioner(
    cluster: Cluster,
) -> None:
    topic = cluster.topic(PARTITIONS)
    cluster.produce(topic, keyed(0, 200))
    stored = cluster.read(topic)
    assert len(stored) == 200
    for record in stored:
        assert record.key is not None
        assert record.partition == default_partition(record.key, PARTITIONS), record.key


def test_every_record_is_processed_once_in_key_order_and_committed(cluster: Cluster) -> None:
    source, sink = cluster.topic(PARTITIONS), cluster.topic(PARTITIONS)
    cluster.produce(source, keyed(0, 300))
    app = relay_app(cluster, source, sink, commit_interval=0.05)
    running = cluster.start(app)
    cluster.wait_until(lambda: all_committed(cluster, app.name, source), "every offset committed")
    out = cluster.read(sink)
    assert Counter(json.loads(r.value or b"")["id"] for r in out) == Counter(range(300))
    per_key: dict[bytes | None, list[int]] = defaultdict(list)
    for record in out:  # partition by partition, in offset order
        per_key[record.key].append(json.loads(record.value or b"")["id"])
        # The output keeps the input key, so the default partitioner keeps it
        # on the same partition number as its input.
        assert record.key is not None
        assert record.partition == default_partition(record.key, PARTITIONS)
    for key, seen in per_key.items():
        assert seen == sorted(seen), key
    assert cluster.stop(running) == 0


def test_a_graceful_restart_duplicates_nothing(cluster: Cluster) -> None:
    source, sink = cluster.topic(PARTITIONS), cluster.topic(PARTITIONS)
    # No commit on its own: only the shutdown commits, which is the point.
    app = relay_app(cluster, source, sink, commit_every=1_000_000, commit_interval=3600)
    cluster.produce(source, keyed(0, 100))
    first = cluster.start(app)
    cluster.wait_until(lambda: sum(ids(cluster, sink).values()) == 100, "100 outputs")
    assert cluster.stop(first) == 0
    assert all_committed(cluster, app.name, source)
    cluster.produce(source, keyed(100, 150))
    second = cluster.start(app)
    cluster.wait_until(lambda: sum(ids(cluster, sink).values()) >= 150, "150 outputs")
    assert cluster.stop(second) == 0
    assert ids(cluster, sink) == Counter(range(150))


def test_a_crash_redelivers_exactly_what_was_processed_after_the_last_commit(
    cluster: Cluster,
) -> None:
    source, sink = cluster.topic(1), cluster.topic(1)
    # No commit on its own, so the last commit is the graceful stop's. (A
    # count-based commit would not do: it covers only records whose emits
    # were acknowledged when it fires, and Kafka acknowledges later than
    # the memory broker.)
    app = relay_app(cluster, source, sink, commit_every=1_000_000, commit_interval=3600)
    cluster.produce(source, keyed(0, 50))
    first = cluster.start(app)
    cluster.wait_until(lambda: sum(ids(cluster, sink).values()) == 50, "50 outputs")
    assert cluster.stop(first) == 0
    assert cluster.committed(app.name, source) == {0: 50}
    cluster.produce(source, keyed(50, 70))
    second = cluster.start(app)
    cluster.wait_until(lambda: sum(ids(cluster, sink).values()) == 70, "70 outputs")
    cluster.crash(second)  # 20 processed, none committed
    assert cluster.committed(app.name, source) == {0: 50}
    third = cluster.start(app, commit_interval=0.05)
    cluster.wait_until(lambda: cluster.committed(app.name, source) == {0: 70}, "a commit at 70")
    assert cluster.stop(third) == 0
    twice = Counter({i: 2 for i in range(50, 70)})
    assert ids(cluster, sink) == Counter(range(50)) + twice


def test_a_rebalance_moves_partitions_without_loss_or_duplicates(cluster: Cluster) -> None:
    source, sink = cluster.topic(PARTITIONS), cluster.topic(PARTITIONS)
    # Nothing commits on its own: what moves is committed by the revoke.
    app = relay_app(cluster, source, sink, commit_every=1_000_000, commit_interval=3600)
    cluster.produce(source, keyed(0, 120))
    first = cluster.start(app)
    cluster.wait_until(lambda: sum(ids(cluster, sink).values()) == 120, "120 outputs")
    second = cluster.start(app)
    cluster.wait_until(
        lambda: (
            len(first.partitions(cluster.thread)) + len(second.partitions(cluster.thread))
            == PARTITIONS
            and bool(second.partitions(cluster.thread))
        ),
        "the partitions shared by two workers",
    )
    moved = second.partitions(cluster.thread)
    committed = cluster.committed(app.name, source)
    ends = cluster.end_offsets(source)
    assert {(source, p) for p in committed} >= moved  # every moved partition was committed
    assert all(committed[p] == ends[p] for _, p in moved)
    cluster.produce(source, keyed(120, 200))
    cluster.wait_until(lambda: sum(ids(cluster, sink).values()) >= 200, "200 outputs")
    assert cluster.stop(second) == 0
    assert cluster.stop(first) == 0
    assert ids(cluster, sink) == Counter(range(200))
    assert all_committed(cluster, app.name, source)


def test_a_failing_record_stops_the_worker_with_everything_before_it_committed(
    cluster: Cluster,
) -> None:
    source, sink = cluster.topic(1), cluster.topic(1)
    records = [*keyed(0, 5), (b"k", b'{"id": 5, "fail": true}'), *keyed(6, 9)]
    cluster.produce(source, records)
    app = relay_app(cluster, source, sink)
    running = cluster.start(app)
    assert running.exit_code() == 1
    assert cluster.committed(app.name, source) == {0: 5}
    assert ids(cluster, sink) == Counter(range(5))


@memory_cannot_model("the memory broker has no message.max.bytes: every size is accepted")
def test_an_emit_over_the_size_limit_fails_its_record(cluster: Cluster) -> None:
    source, sink = cluster.topic(1), cluster.topic(1)
    cluster.produce(source, [(b"k", b'{"id": 0}'), (b"k", b'{"id": 1, "size": 2000000}')])
    app = relay_app(cluster, source, sink, commit_interval=0.05)
    running = cluster.start(app)
    cluster.wait_until(
        lambda: running.future.done() or cluster.committed(app.name, source) == {0: 2},
        "the worker to stop, or to commit both records",
    )
    assert running.future.done() and running.exit_code() == 1
    assert cluster.committed(app.name, source) == {0: 1}


def counting_app(cluster: Cluster, source: str, sink: str, **settings: Any) -> App:
    """Count records per key in a table and emit each new count."""
    app = App(cluster.group(), state_store="memory", **settings)
    counts = app.table("counts", key_serde="bytes", default=0)

    @app.agent(app.topic(source, key_serde="bytes"), emits=[app.topic(sink)], tables=[counts])
    def count(value: dict[str, Any], ctx: Context) -> dict[str, Any]:
        counts[ctx.key] = counts[ctx.key] + 1
        return {"id": value["id"], "n": counts[ctx.key]}

    cluster.named_topic(counts.changelog_name, PARTITIONS, {"cleanup.policy": "compact"})
    return app


def test_a_table_survives_a_crash_and_a_rebalance(cluster: Cluster) -> None:
    """Counts per key: restored after a crash (changelog only), then split over two workers.

    The crashed worker never checkpointed: its writes never reached the
    changelog and its inputs are redone, so the counts come out exact, and
    each key's emitted counts run 1..N with the redone inputs' repeated.
    """
    source, sink = cluster.topic(PARTITIONS), cluster.topic(PARTITIONS)
    app = counting_app(cluster, source, sink, commit_every=1_000_000, commit_interval=3600)
    cluster.produce(source, keyed(0, 130))
    first = cluster.start(app)
    cluster.wait_until(lambda: sum(ids(cluster, sink).values()) == 130, "130 outputs")
    assert cluster.stop(first) == 0  # commits 130, with the changelog before it
    cluster.produce(source, keyed(130, 195))
    second = cluster.start(app)
    cluster.wait_until(lambda: sum(ids(cluster, sink).values()) == 195, "195 outputs")
    cluster.crash(second)  # 65 processed, none committed, none in the changelog
    third = cluster.start(app, commit_interval=0.05)
    fourth = cluster.start(app, commit_interval=0.05)
    cluster.produce(source, keyed(195, 260))
    cluster.wait_until(lambda: all_committed(cluster, app.name, source), "every offset committed")
    assert cluster.stop(fourth) == 0
    assert cluster.stop(third) == 0
    final: dict[bytes, int] = {}
    for record in cluster.read(counts_changelog(app)):
        assert record.key is not None
        final[record.key] = json.loads(record.value or b"")
    assert final == {k: v for k, v in Counter(key for key, _ in keyed(0, 260)).items() if k}
    emitted: dict[bytes | None, list[int]] = defaultdict(list)
    for record in cluster.read(sink):
        emitted[record.key].append(json.loads(record.value or b"")["n"])
    for key, counts in emitted.items():
        assert sorted(set(counts)) == list(range(1, max(counts) + 1)), (key, counts)


def counts_changelog(app: App) -> str:
    return app.tables["counts"].changelog_name
