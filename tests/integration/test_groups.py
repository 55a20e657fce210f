"""Consumer groups of several workers on a real broker: scale-out, failures,
rebalance stalls, and per-key concurrency.

Every test checks the delivery invariant on the output: each input record is
there; duplicates come only from a worker that was killed, and only from
the partitions it owned.
"""

from __future__ import annotations

import itertools
import json
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from tests.integration.helpers import (
    APP,
    KEYS,
    Record,
    WorkerProcess,
    assigned_count,
    committed,
    end_offsets,
    keyed_records,
    owned_at_end,
    produce,
    read_topic,
    topic_size,
    wait_until,
    wait_until_committed,
)


@pytest.fixture
def group_env(pipeline_env: Callable[..., dict[str, str]]) -> Callable[..., dict[str, str]]:
    """Factory: a configurable pipeline that commits often (a small crash window)."""

    def make(partitions: int = 6, protocol: str = "classic") -> dict[str, str]:
        return pipeline_env(
            partitions,
            STREAMKIT_GROUP_PROTOCOL=protocol,
            STREAMKIT_COMMIT_EVERY="200",
            STREAMKIT_COMMIT_INTERVAL="0.2",
        )

    return make


def decode(records: list[Record]) -> list[dict[str, Any]]:
    return [json.loads(r.value or b"") for r in records]


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_scale_out_graceful_stop_crash_and_replacement(
    kafka_bootstrap: str,
    group_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
    protocol: str,
) -> None:
    n = 100_000
    env = group_env(partitions=6, protocol=protocol)
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(n))
    slow = {**env, "TEST_DELAY_S": "0.0002"}

    def progress(at_least: int) -> None:
        wait_until(
            lambda: topic_size(kafka_bootstrap, env["TEST_OUT"]) >= at_least,
            90,
            f"{at_least} outputs",
        )

    first = start_worker(APP, **slow)
    progress(5_000)
    second, third = start_worker(APP, **slow), start_worker(APP, **slow)
    wait_until(lambda: assigned_count(second) > 0 and assigned_count(third) > 0, 120, "scale-out")
    progress(30_000)
    second.signal(signal.SIGTERM)
    assert second.wait(60) == 0, second.output()[-2000:]
    progress(50_000)
    killed_owned = owned_at_end(third)
    third.signal(signal.SIGKILL)
    third.wait(30)
    # The uncommitted window: nobody commits the killed worker's partitions
    # until its session expires, so this is where their redelivery starts.
    window_from = committed(kafka_bootstrap, env["STREAMKIT_GROUP_ID"], env["TEST_IN"], 6)
    killed_at = topic_size(kafka_bootstrap, env["TEST_OUT"])
    assert killed_at < n, "drained before the crash; the test proves nothing"
    replacement = start_worker(APP, **env)

    values = decode(read_topic(kafka_bootstrap, env["TEST_OUT"], n, timeout=180))
    ids = Counter(v["id"] for v in values)
    missing = set(range(n)) - set(ids)
    assert not missing, f"{len(missing)} records lost"
    duplicated = [v for v in values if ids[v["id"]] > 1]
    dup_partitions = {v["from"][0] for v in duplicated}
    duplicates = sum(c - 1 for c in ids.values())
    print(
        f"[{protocol}] {n} in, {len(values)} out, {duplicates} duplicates "
        f"(from partitions {sorted(dup_partitions)}; the killed worker owned "
        f"{sorted(killed_owned)})"
    )
    # Graceful stops and rebalances add none: every duplicate comes from a
    # partition the killed worker owned, at or past the offset committed for
    # it when it was killed.
    assert dup_partitions <= killed_owned
    outside = [v for v in duplicated if v["from"][1] < window_from[v["from"][0]]]
    assert not outside, f"{len(outside)} duplicates below the crash's window, e.g. {outside[:3]}"

    # Per-key order: first occurrences of each key's records, in output
    # order, count up (redelivered copies come later and are ignored).
    seen: set[int] = set()
    last: dict[int, int] = defaultdict(lambda: -1)
    for v in sorted(values, key=lambda v: (v["from"][0], v["from"][1])):
        if v["id"] in seen:
            continue
        seen.add(v["id"])
        key = v["id"] % KEYS
        assert v["n"] > last[key], f"order broken for key {key}"
        last[key] = v["n"]

    for worker in (first, replacement):
        worker.signal(signal.SIGTERM)
        assert worker.wait(60) == 0, worker.output()[-2000:]


def test_partitions_that_stay_keep_flowing_while_a_worker_joins(
    kafka_bootstrap: str,
    group_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """A live stream (2,000 records/s) that one worker keeps up with; a second joins.

    A live stream rather than a backlog: with a backlog, gaps come from which
    partition librdkafka happens to hand over next, not from the rebalance.
    """
    env = group_env(partitions=6)
    stop = threading.Event()
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})

    def stream() -> None:
        i = 0
        while not stop.wait(0.01):
            for _ in range(20):
                value = json.dumps({"id": i, "n": i}).encode()
                producer.produce(env["TEST_IN"], value, f"k{i % KEYS}".encode())
                i += 1
            producer.poll(0)
        producer.flush(10)

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        first = start_worker(APP, **env)
        wait_until(lambda: topic_size(kafka_bootstrap, env["TEST_OUT"]) >= 2_000, 60, "steady")
        joined_at = time.time()
        second = start_worker(APP, **env)
        wait_until(lambda: assigned_count(second) > 0, 60, "second worker assigned")
        settled_at = time.time()
        wait_until(lambda: time.time() > settled_at + 1.5, 5, "traffic after the rebalance")
    finally:
        stop.set()
        streamer.join(30)
    stayed = owned_at_end(first) - owned_at_end(second)
    assert stayed, "the first worker kept no partition; nothing to measure"

    records = read_topic(kafka_bootstrap, env["TEST_OUT"], 1, idle=1.0)
    times: dict[int, list[float]] = defaultdict(list)
    for record, value in zip(records, decode(records), strict=True):
        if value["from"][0] in stayed:
            times[value["from"][0]].append(record.timestamp / 1000)
    window = (joined_at - 1.0, settled_at + 1.0)
    longest = 0.0
    for stamps in times.values():
        inside = sorted(t for t in stamps if window[0] <= t <= window[1])
        assert len(inside) > 10, (
            f"no output from a partition that stayed: window {window}, "
            f"stamps {min(stamps, default=0)}..{max(stamps, default=0)} ({len(stamps)})"
        )
        longest = max(longest, *(b - a for a, b in itertools.pairwise(inside)))
    print(
        f"rebalance took {settled_at - joined_at:.2f}s; longest output gap on the "
        f"{len(stayed)} partitions that stayed: {longest * 1000:.0f} ms"
    )
    assert longest < 1.0
    for worker in (first, second):
        worker.signal(signal.SIGTERM)
        assert worker.wait(60) == 0


def _drain_seconds(
    kafka_bootstrap: str,
    env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    concurrency: int,
) -> tuple[float, list[dict[str, Any]]]:
    worker = start_worker(APP, **env, TEST_CONCURRENCY=str(concurrency), TEST_RANDOM_DELAY_MS="4")
    wait_until(lambda: assigned_count(worker) > 0, 60, "assignment")
    started = time.monotonic()
    wait_until_committed(kafka_bootstrap, env["STREAMKIT_GROUP_ID"], env["TEST_IN"], worker)
    elapsed = time.monotonic() - started
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    return elapsed, decode(read_topic(kafka_bootstrap, env["TEST_OUT"], 2_000))


def test_concurrency_is_faster_and_keeps_key_order(
    kafka_bootstrap: str,
    group_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    results = {}
    for concurrency in (1, 16):
        env = group_env(partitions=1)
        produce(kafka_bootstrap, env["TEST_IN"], keyed_records(2_000))
        results[concurrency] = _drain_seconds(kafka_bootstrap, env, start_worker, concurrency)
    (slow, _), (fast, out) = results[1], results[16]
    print(f"one partition, 2,000 records: concurrency=1 {slow:.2f}s, concurrency=16 {fast:.2f}s")
    # Random delays average 2 ms: one at a time takes ~4 s; 16 keys at a
    # time should be several times faster. 3x leaves room for a busy machine.
    assert fast * 3 < slow
    assert sorted(v["id"] for v in out) == list(range(2_000))
    # One output partition, read in offset order: within a key, the output
    # order is the input order, although records finished out of order.
    emitted = [v["id"] for v in out]
    assert emitted != sorted(emitted), "no reordering across keys: concurrency did nothing"
    for key in range(KEYS):
        ids = [i for i in emitted if i % KEYS == key]
        assert ids == sorted(ids), f"key {key} out of order"


def test_commits_never_pass_an_unfinished_record(
    kafka_bootstrap: str,
    group_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    env = group_env(partitions=1)
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(500))
    held, release = 123, tmp_path / "release"
    worker = start_worker(
        APP,
        **env,
        TEST_CONCURRENCY="16",
        TEST_HOLD_ID=str(held),
        TEST_HOLD_FILE=str(release),
    )
    # Everything but the held record (and the later records of its key,
    # which wait behind it) is processed...
    same_key_after = len([i for i in range(held + 1, 500) if i % KEYS == held % KEYS])
    wait_until(
        lambda: topic_size(kafka_bootstrap, env["TEST_OUT"]) >= 499 - same_key_after,
        60,
        "all other records",
    )
    # ...yet the commit position stays at the held record, however long we look.
    group, topic = env["STREAMKIT_GROUP_ID"], env["TEST_IN"]
    wait_until(lambda: committed(kafka_bootstrap, group, topic, 1)[0] == held, 30, "commit")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert committed(kafka_bootstrap, group, topic, 1)[0] == held
    release.touch()
    wait_until_committed(kafka_bootstrap, group, topic, worker)
    assert committed(kafka_bootstrap, group, topic, 1) == end_offsets(kafka_bootstrap, topic)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_static_membership_restart_keeps_partitions_without_rebalance(
    kafka_bootstrap: str,
    group_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    env = {**group_env(partitions=6), "STREAMKIT_SESSION_TIMEOUT_MS": "15000"}
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(1_000))
    first = start_worker(APP, **env, STREAMKIT_GROUP_INSTANCE_ID="pod-0")
    other = start_worker(APP, **env, STREAMKIT_GROUP_INSTANCE_ID="pod-1")
    wait_until(
        # Both own some and together all: a stable split, not a moment
        # where one member holds everything before the other's turn.
        lambda: (
            assigned_count(first) > 0
            and assigned_count(other) > 0
            and assigned_count(first) + assigned_count(other) == 6
        ),
        60,
        "both members assigned",
    )
    before = owned_at_end(first)
    rebalances_seen = other.output().count("partitions")
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0
    # Same instance id, back within the session timeout: the broker hands the
    # same partitions back and the other member is not disturbed.
    restarted = start_worker(APP, **env, STREAMKIT_GROUP_INSTANCE_ID="pod-0")
    wait_until(lambda: assigned_count(restarted) > 0, 30, "restarted member assigned")
    assert owned_at_end(restarted) == before
    assert other.output().count("partitions") == rebalances_seen, other.output()[-2000:]
    for worker in (restarted, other):
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0


class CommitSampler:
    """Samples a group's committed offsets from outside, every 50 ms, on a thread.

    Records every partition whose committed offset ever moved back: the
    invariant is that none does, whatever the group goes through.
    """

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        self._tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.highest: dict[int, int] = {}
        self.moved_back: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                found = self._consumer.committed(self._tps, timeout=5)
            except KafkaException:
                continue  # a coordinator moving: the next sample sees it
            self.samples += 1
            for tp in found:
                if tp.offset < 0:
                    continue
                before = self.highest.get(tp.partition, -1)
                if tp.offset < before:
                    self.moved_back.append(f"[{tp.partition}] {before} -> {tp.offset}")
                self.highest[tp.partition] = max(before, tp.offset)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


class Feed:
    """A steady, idempotent feed of numbered records on a thread."""

    def __init__(self, bootstrap: str, topic: str, per_second: int) -> None:
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True}
        )
        self._topic = topic
        self._per_tick = per_second // 100
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            for _ in range(self._per_tick):
                i = self.sent
                value = json.dumps({"id": i, "n": i // KEYS}).encode()
                self._producer.produce(self._topic, value, f"k{i % KEYS}".encode())
                self.sent += 1
            self._producer.poll(0)
            next_at += 0.01
            self._stop.wait(max(next_at - time.monotonic(), 0))

    def close(self) -> int:
        self._stop.set()
        self._thread.join(10)
        assert self._producer.flush(30) == 0
        return self.sent


def busy_env(group_env: Callable[..., dict[str, str]], protocol: str) -> dict[str, str]:
    """Records take up to 20 ms, four at a time per partition: every revoke and
    every stop has records in flight to drain and commit."""
    return {
        **group_env(partitions=6, protocol=protocol),
        "TEST_CONCURRENCY": "4",
        "TEST_RANDOM_DELAY_MS": "20",
    }


def watch(bootstrap: str, env: dict[str, str]) -> tuple[CommitSampler, Feed]:
    """Start sampling the group's commits, then a 1,000 records/s feed."""
    sampler = CommitSampler(bootstrap, env["STREAMKIT_GROUP_ID"], env["TEST_IN"], 6)
    return sampler, Feed(bootstrap, env["TEST_IN"], per_second=1_000)


def finish(
    bootstrap: str,
    env: dict[str, str],
    workers: list[WorkerProcess],
    sent: int,
    sampler: CommitSampler,
) -> list[dict[str, Any]]:
    """Read the output, stop the workers (each must exit 0), and check that no
    committed offset moved back while the group was watched."""
    try:
        out = decode(read_topic(bootstrap, env["TEST_OUT"], sent, timeout=120))
        for worker in workers:
            worker.signal(signal.SIGTERM)
            assert worker.wait(60) == 0, worker.output()[-3000:]
    finally:
        sampler.close()
    assert sampler.samples > 10
    assert not sampler.moved_back, sampler.moved_back
    return out


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_a_rolling_restart_under_a_steady_feed_adds_no_duplicate_and_no_commit_moves_back(
    kafka_bootstrap: str,
    group_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
    protocol: str,
) -> None:
    """SIGTERM only, each replacement started alongside the worker it replaces."""
    env = busy_env(group_env, protocol)
    sampler, feed = watch(kafka_bootstrap, env)
    try:
        workers = [start_worker(APP, **env) for _ in range(3)]
        wait_until(lambda: sum(assigned_count(w) for w in workers) == 6, 60, "all assigned")
        for i in range(3):
            replacement = start_worker(APP, **env)
            # The old worker stops while the replacement's join rebalances.
            replacement.wait_for_log('"started"')
            workers[i].signal(signal.SIGTERM)
            assert workers[i].wait(60) == 0, workers[i].output()[-3000:]
            workers[i] = replacement
    finally:
        sent = feed.close()
    out = finish(kafka_bootstrap, env, workers, sent, sampler)
    counts = Counter(v["id"] for v in out)
    missing = set(range(sent)) - set(counts)
    duplicates = {i: c for i, c in counts.items() if c > 1}
    print(f"[{protocol}] rolling restart: {sent} in, {len(out)} out, {sampler.samples} samples")
    assert not missing, f"{len(missing)} records lost"
    assert not duplicates, f"{len(duplicates)} records emitted twice by graceful stops"


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_no_commit_moves_back_when_a_frozen_member_loses_its_partitions(
    kafka_bootstrap: str,
    group_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
    protocol: str,
) -> None:
    """A worker frozen (SIGSTOP) past its session loses its partitions while
    records of it are in flight; thawed, it must not commit over their new owner."""
    env = busy_env(group_env, protocol)
    sampler, feed = watch(kafka_bootstrap, env)
    try:
        frozen, other = start_worker(APP, **env), start_worker(APP, **env)
        wait_until(
            lambda: assigned_count(frozen) > 0 and assigned_count(other) > 0, 60, "both assigned"
        )
        frozen.signal(signal.SIGSTOP)
        wait_until(lambda: assigned_count(other) == 6, 60, "the other member taking over")
        frozen.signal(signal.SIGCONT)
        wait_until(lambda: "partitions lost" in frozen.output(), 60, "the thawed member's loss")
        wait_until(lambda: assigned_count(frozen) > 0, 60, "the thawed member rejoining")
    finally:
        sent = feed.close()
    out = finish(kafka_bootstrap, env, [frozen, other], sent, sampler)
    assert not set(range(sent)) - {v["id"] for v in out}, "records lost"
