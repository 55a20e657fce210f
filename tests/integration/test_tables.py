"""Tables on a real broker: counts per key survive SIGKILLs, scaling and a corrupted store.

The pipeline (:mod:`tests.integration.apps.counting`) counts records per key
in a table and emits each new count. What is checked:

* **exactly once**: the table's final value per key (the latest record of
  its compacted changelog, read ``read_committed``) equals the number of
  inputs with that key, and each key's emitted counts are exactly 1..N;
* **at least once**: no final value is below the truth, and a key's excess
  is at most the number of its inputs that were processed twice (visible as
  duplicate outputs): state only over-counts for records done again;
* **restores**: which partitions restored, and from where, is read from the
  workers' ``table partition restored`` log lines.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from streamkit.localkafka import free_ports
from tests.integration.helpers import (
    WorkerProcess,
    end_offsets,
    produce,
    wait_until,
    wait_until_committed,
)

APP = "tests.integration.apps.counting:app"
KEYS = 40


def inputs(start: int, n: int) -> list[tuple[bytes, bytes]]:
    return [(f"k{i % KEYS}".encode(), json.dumps({"id": i}).encode()) for i in range(start, n)]


def regrouped_inputs(n: int) -> list[tuple[bytes, bytes]]:
    """Keyed by record, counted per ``group``: the counts are ``truth(n)`` after a re-key."""
    return [
        (f"r{i}".encode(), json.dumps({"id": i, "group": f"k{i % KEYS}"}).encode())
        for i in range(n)
    ]


def truth(n: int) -> Counter[str]:
    return Counter(f"k{i % KEYS}" for i in range(n))


def read_all(bootstrap: str, topic: str, read_committed: bool = True) -> list[tuple[bytes, Any]]:
    """Every record of ``topic`` from the start to its end now: ``(key, decoded value)``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"tables-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        }
    )
    ends = end_offsets(bootstrap, topic)
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    out: list[tuple[bytes, Any]] = []
    positions = dict.fromkeys(ends, 0)
    deadline = time.monotonic() + 60
    try:
        while any(positions[p] < end for p, end in ends.items()):
            assert time.monotonic() < deadline, f"{topic}: read {positions} of {ends}"
            for m in consumer.consume(1000, timeout=0.2):
                assert m.error() is None, m.error()
                raw = m.value()
                out.append((m.key() or b"", None if raw is None else json.loads(raw)))
            for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                positions[tp.partition] = max(positions[tp.partition], tp.offset)
    finally:
        consumer.close()
    return out


def table(bootstrap: str, changelog: str) -> dict[str, int]:
    """The table as its changelog has it: the latest value per key."""
    latest: dict[str, int] = {}
    for key, value in read_all(bootstrap, changelog):
        if value is None:
            latest.pop(key.decode(), None)
        else:
            latest[key.decode()] = value
    return latest


def lookup(port: int, key: str) -> tuple[int, dict[str, Any]]:
    """``GET /tables/counts/<key>`` on a worker: status and JSON body."""
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/tables/counts/{key}", timeout=10
        ) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def restores(worker: WorkerProcess) -> list[dict[str, Any]]:
    """The worker's ``table partition restored`` events."""
    out = []
    for line in worker.output().splitlines():
        if line.startswith("{") and '"table partition restored"' in line:
            out.append(json.loads(line))
    return out


@pytest.fixture
def counting_env(stateful_env: Callable[..., dict[str, str]]) -> Callable[..., dict[str, str]]:
    def make(partitions: int = 4, **env: str) -> dict[str, str]:
        made = stateful_env("tables", partitions, **env)
        return {"CHANGELOG": f"{made['TEST_APP']}.counts.changelog", **made}

    return make


@pytest.mark.parametrize(
    ("guarantee", "regroup"),
    [("exactly_once", False), ("at_least_once", False), ("exactly_once", True)],
    ids=["exactly_once", "at_least_once", "exactly_once-group_by"],
)
def test_counts_per_key_survive_three_sigkills(
    guarantee: str,
    regroup: bool,
    kafka_bootstrap: str,
    counting_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
    topics_to_delete: list[str],
) -> None:
    """6,000 records over 40 keys; the worker SIGKILLed three times mid-stream, then finishing.

    Every restart keeps the state directory and the static identity (a pod
    with its volume), so it restores its stores' changelog tail. With
    ``regroup`` the inputs are keyed by record and re-keyed by ``group_by``
    on the way: the repartition topic is one more hop each kill can cut.
    """
    n = 6_000
    env = counting_env(
        STREAMKIT_PROCESSING_GUARANTEE=guarantee,
        STREAMKIT_GROUP_INSTANCE_ID="pod-0",
        TEST_DELAY_S="0.0005",
        TEST_GROUP_BY="1" if regroup else "",
    )
    topics_to_delete.append(env["CHANGELOG"])
    if regroup:
        app = env["TEST_APP"]
        topics_to_delete += [f"{app}.count.repartition", f"{app}.count.repartition.dlq"]
    produce(kafka_bootstrap, env["TEST_IN"], regrouped_inputs(n) if regroup else inputs(0, n))
    rng = random.Random(13)
    workers = []
    for _ in range(3):
        worker = start_worker(APP, **env)
        workers.append(worker)
        worker.wait_for_log('"partitions assigned"', timeout=60)
        before = sum(end_offsets(kafka_bootstrap, env["TEST_OUT"]).values())

        def moved_on(before: int = before) -> bool:
            return sum(end_offsets(kafka_bootstrap, env["TEST_OUT"]).values()) > before + 300

        wait_until(moved_on, 60, "outputs after the restart")
        time.sleep(rng.uniform(0.1, 0.6))  # the kill lands at a random moment, on purpose
        worker.signal(signal.SIGKILL)
        worker.wait(10)
    last = start_worker(APP, **env)
    workers.append(last)
    wait_until_committed(kafka_bootstrap, env["STREAMKIT_GROUP_ID"], env["TEST_IN"], last, 120)
    if regroup:
        moved = f"{env['TEST_APP']}.count.repartition"
        wait_until_committed(
            kafka_bootstrap, env["STREAMKIT_GROUP_ID"], moved, last, 120, transactional=True
        )
    last.signal(signal.SIGTERM)
    assert last.wait(60) == 0, last.output()[-3000:]

    want = truth(n)
    got = table(kafka_bootstrap, env["CHANGELOG"])
    outputs = read_all(kafka_bootstrap, env["TEST_OUT"], read_committed=True)
    emitted: dict[str, list[int]] = {}
    for _, value in outputs:
        emitted.setdefault(value["key"], []).append(value["n"])
    ids = Counter(value["id"] for _, value in outputs)
    assert set(ids) == set(range(n)), "inputs with no output"
    if guarantee == "exactly_once":
        assert got == dict(want), {k: (got.get(k), c) for k, c in want.items() if got.get(k) != c}
        for key, counts in emitted.items():
            assert counts == list(range(1, want[key] + 1)), f"{key}: {counts[:20]}..."
    else:
        twice: Counter[str] = Counter()
        for record_id, times in ids.items():
            twice[f"k{record_id % KEYS}"] += times - 1
        for key, count in want.items():
            assert got[key] >= count, f"{key}: table says {got[key]}, {count} inputs"
            assert got[key] - count <= twice[key], (
                f"{key}: {got[key] - count} over, only {twice[key]} inputs done twice"
            )
    # Each restart after the first restored from its local store and the tail.
    for worker in workers[1:]:
        sources = {r["source"] for r in restores(worker)}
        assert sources <= {"local store + tail", "changelog"}, sources
        assert "local store + tail" in sources, restores(worker)


def test_scaling_one_three_one_restores_only_moved_partitions(
    kafka_bootstrap: str,
    counting_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
    topics_to_delete: list[str],
    tmp_path: Path,
) -> None:
    """One worker, then three (each its own state directory), then one again: right counts.

    When two workers join, the first restores nothing more (cooperative
    rebalancing moves only what must move), and the newcomers restore just
    the partitions they got. When they leave, the first worker restores
    those from its old stores' offsets plus the tail.
    """
    n, partitions = 9_000, 6
    env = counting_env(partitions, TEST_DELAY_S="0.0003")
    topics_to_delete.append(env["CHANGELOG"])
    group, topic = env["STREAMKIT_GROUP_ID"], env["TEST_IN"]
    produce(kafka_bootstrap, topic, inputs(0, n // 3))
    [port] = free_ports(1)
    first = start_worker(
        APP, **{**env, "STREAMKIT_STATE_DIR": str(tmp_path / "a"), "STREAMKIT_HTTP_PORT": str(port)}
    )
    wait_until_committed(kafka_bootstrap, group, topic, first, 90)
    assert len(restores(first)) == partitions

    joiners = [
        start_worker(APP, **{**env, "STREAMKIT_STATE_DIR": str(tmp_path / name)}) for name in "bc"
    ]
    # Two partitions each, once the group settled on three members.
    wait_until(lambda: [len(restores(j)) for j in joiners] == [2, 2], 90, "the joiners' restores")
    produce(kafka_bootstrap, topic, inputs(n // 3, 2 * n // 3))
    wait_until_committed(kafka_bootstrap, group, topic, first, 120)
    moved = [r["partition"] for j in joiners for r in restores(j)]
    assert len(restores(first)) == partitions, "the first worker restored again"
    assert len(set(moved)) == 4, moved
    # The first worker answers for its own keys, and says where the others live.
    answers = {key: lookup(port, key) for key in truth(2 * n // 3)}
    here = {k: body for k, (status, body) in answers.items() if status == 200}
    elsewhere = {k: body for k, (status, body) in answers.items() if status == 421}
    assert here and elsewhere and len(here) + len(elsewhere) == KEYS, answers
    assert all(body["value"] == truth(2 * n // 3)[k] for k, body in here.items())
    assert {body["partition"] for body in elsewhere.values()} == set(moved)
    assert all(r["source"] == "changelog" for j in joiners for r in restores(j))

    for joiner in joiners:
        joiner.signal(signal.SIGTERM)
        assert joiner.wait(60) == 0, joiner.output()[-3000:]
    produce(kafka_bootstrap, topic, inputs(2 * n // 3, n))
    wait_until_committed(kafka_bootstrap, group, topic, first, 120)
    back = restores(first)[partitions:]
    assert sorted(r["partition"] for r in back) == sorted(moved)
    assert {r["source"] for r in back} == {"local store + tail"}
    first.signal(signal.SIGTERM)
    assert first.wait(60) == 0, first.output()[-3000:]
    assert table(kafka_bootstrap, env["CHANGELOG"]) == dict(truth(n))


def test_a_corrupted_local_store_is_rebuilt_from_the_changelog(
    kafka_bootstrap: str,
    counting_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
    topics_to_delete: list[str],
    tmp_path: Path,
) -> None:
    """A run, a graceful stop, garbage over every store file, a second run: the counts are right."""
    n = 2_000
    env = counting_env(2)
    topics_to_delete.append(env["CHANGELOG"])
    group, topic = env["STREAMKIT_GROUP_ID"], env["TEST_IN"]
    produce(kafka_bootstrap, topic, inputs(0, n // 2))
    worker = start_worker(APP, **env)
    wait_until_committed(kafka_bootstrap, group, topic, worker, 60)
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.output()[-3000:]

    files = [p for p in Path(env["STREAMKIT_STATE_DIR"]).rglob("*") if p.is_file()]
    stores = [p for p in files if not p.name.endswith(".lock")]
    assert stores, files
    for path in stores:
        path.write_bytes(os.urandom(max(path.stat().st_size, 4096)))

    produce(kafka_bootstrap, topic, inputs(n // 2, n))
    again = start_worker(APP, **env)
    wait_until_committed(kafka_bootstrap, group, topic, again, 60)
    again.signal(signal.SIGTERM)
    assert again.wait(60) == 0, again.output()[-3000:]
    assert "local store is corrupted" in again.output()
    assert {r["source"] for r in restores(again)} == {"rebuild"}
    assert table(kafka_bootstrap, env["CHANGELOG"]) == dict(truth(n))
    # With no worker up, the CLI reads a key from the changelog.
    cli = subprocess.run(
        [sys.executable, "-m", "streamkit", "tables", "get", APP, "counts", "k3"],
        env={**os.environ, **env, "STREAMKIT_BROKERS": kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (cli.returncode, cli.stdout) == (0, f"{truth(n)['k3']}\n"), cli.stderr


@pytest.mark.parametrize(
    ("partitions", "config", "message"),
    [
        (2, {"cleanup.policy": "compact"}, "has 2 partitions and its source"),
        (4, {"cleanup.policy": "delete"}, "cleanup.policy=delete"),
    ],
)
def test_a_changelog_that_cannot_hold_the_table_stops_the_worker_at_start(
    partitions: int,
    config: dict[str, str],
    message: str,
    kafka_bootstrap: str,
    counting_env: Callable[..., dict[str, str]],
    new_topic: Callable[..., str],
) -> None:
    env = counting_env(4)
    new_topic(partitions=partitions, name=env["CHANGELOG"], config=config)
    run = subprocess.run(
        [sys.executable, "-m", "streamkit", "run", APP],
        env={**os.environ, **env, "STREAMKIT_BROKERS": kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0 and message in run.stderr, run.stderr[-2000:]
