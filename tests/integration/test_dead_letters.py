"""Failed records on a real broker: retries, dead letters with provenance,
poison records, delayed retry topics, and the dead-letter limit.

The invariant: every input offset ends up either in the output topic or in
the dead-letter topic, exactly once.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer

from tests.integration.helpers import (
    APP,
    WorkerProcess,
    committed,
    keyed_records,
    produce,
    read_topic,
    topic_size,
    wait_until,
    wait_until_committed,
)


def header(record: Any, name: str) -> str:
    value: bytes = dict(record.headers)[name]
    return value.decode()


def test_every_record_ends_in_output_or_dead_letters_exactly_once(
    kafka_bootstrap: str,
    pipeline_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    n = 20_000
    env = pipeline_env()
    data = keyed_records(n)
    malformed = {i for i in range(n) if i % 100 == 7}  # 1%
    always = {i for i in range(n) if i % 100 == 1}  # 1%: the agent always raises
    flaky = {i for i in range(n) if i % 50 == 3}  # 2%: fails twice, then succeeds
    records = [
        (key, b'{"id": ' + str(i).encode() + b', "n"' if i in malformed else value)
        for i, (key, value) in enumerate(data)
    ]
    produce(kafka_bootstrap, env["TEST_IN"], records)
    inputs = {
        (r.partition, r.offset): r for r in read_topic(kafka_bootstrap, env["TEST_IN"], n, idle=0.5)
    }
    started_ms = int(time.time() * 1000)
    worker = start_worker(APP, **env, TEST_FAIL_MOD="1", TEST_FLAKY_MOD="3")
    wait_until_committed(kafka_bootstrap, env["STREAMKIT_GROUP_ID"], env["TEST_IN"], worker)

    out = read_topic(kafka_bootstrap, env["TEST_OUT"], n - len(malformed) - len(always))
    dead = read_topic(kafka_bootstrap, env["DLQ"], len(malformed) + len(always))
    out_from = Counter(
        (v["from"][0], v["from"][1]) for v in (json.loads(r.value or b"") for r in out)
    )
    dead_from = Counter(
        (int(header(r, "__streams.errors.partition")), int(header(r, "__streams.errors.offset")))
        for r in dead
    )
    assert max(out_from.values()) == 1 and max(dead_from.values()) == 1, "a record came out twice"
    assert not set(out_from) & set(dead_from), "a record is in both the output and dead letters"
    assert set(out_from) | set(dead_from) == set(inputs), "an input offset is unaccounted for"

    out_ids = {json.loads(r.value or b"")["id"] for r in out}
    assert flaky <= out_ids, "flaky records must succeed on retry"
    assert not (malformed | always) & out_ids
    for record in dead:
        source = inputs[
            (
                int(header(record, "__streams.errors.partition")),
                int(header(record, "__streams.errors.offset")),
            )
        ]
        assert (record.key, record.value) == (source.key, source.value), "dead letter altered"
        assert header(record, "__streams.errors.topic") == env["TEST_IN"]
        assert header(record, "streamkit.errors.group") == env["STREAMKIT_GROUP_ID"]
        assert header(record, "streamkit.errors.agent") == "forward"
        assert (
            started_ms
            <= int(header(record, "streamkit.errors.first_failure_ts"))
            <= time.time() * 1000
        )
        assert "Traceback" in header(record, "__streams.errors.stacktrace")
        if source.value and source.value.endswith(b'"n"'):
            assert header(record, "streamkit.errors.stage") == "deserialize"
            assert (
                header(record, "__streams.errors.exception")
                == "streamkit.errors.DeserializationError"
            )
            assert header(record, "streamkit.errors.attempts") == "1"
        else:
            assert header(record, "streamkit.errors.stage") == "process"
            assert header(record, "__streams.errors.exception") == "builtins.RuntimeError"
            assert header(record, "__streams.errors.message").endswith("always fails")
            assert header(record, "streamkit.errors.attempts") == "3"
    print(
        f"{n} in: {len(out)} out, {len(dead)} dead-lettered "
        f"({len(malformed)} malformed, {len(always)} always failing), {len(flaky)} retried ok"
    )
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_a_poison_record_does_not_delay_other_partitions(
    kafka_bootstrap: str,
    pipeline_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    env = pipeline_env(partitions=4)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    # Record 0 heads partition 0 and always fails; its retries take ~6 s.
    for p in range(4):
        for i in range(500):
            record_id = p * 1000 + i
            value = json.dumps({"id": record_id, "n": i}).encode()
            producer.produce(env["TEST_IN"], value, f"k{record_id}".encode(), partition=p)
    assert producer.flush(30) == 0
    worker = start_worker(
        APP, **env, TEST_FAIL_ID="0", TEST_RETRY_ATTEMPTS="4", TEST_RETRY_BACKOFF="2"
    )
    group, topic = env["STREAMKIT_GROUP_ID"], env["TEST_IN"]
    started = time.monotonic()
    wait_until(
        lambda: all(o == 500 for p, o in committed(kafka_bootstrap, group, topic, 4).items() if p),
        60,
        "the other partitions drained",
    )
    others_drained = time.monotonic() - started
    stuck = committed(kafka_bootstrap, group, topic, 4)[0]
    assert stuck < 1, "partition 0 went past its poison record before its retries ended"
    wait_until_committed(kafka_bootstrap, group, topic, worker, timeout=60)
    all_drained = time.monotonic() - started
    print(f"other partitions drained after {others_drained:.1f}s; partition 0: {all_drained:.1f}s")
    assert others_drained < all_drained
    assert topic_size(kafka_bootstrap, env["DLQ"]) == 1
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_delayed_retry_topic_redelivers_after_its_delay_without_blocking(
    kafka_bootstrap: str,
    pipeline_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    env = pipeline_env(partitions=1)
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(300))
    worker = start_worker(
        APP, **env, TEST_FIRST_TRY_FAILS="10", TEST_RETRY_ATTEMPTS="1", TEST_RETRY_TOPICS="3"
    )
    out = read_topic(kafka_bootstrap, env["TEST_OUT"], 300, timeout=60)
    by_id = {json.loads(r.value or b"")["id"]: r for r in out}
    assert sorted(by_id) == list(range(300))
    retried = by_id.pop(10)
    latest_other = max(r.timestamp for r in by_id.values())
    print(f"record 10 came back {(retried.timestamp - latest_other) / 1000:.1f}s after the rest")
    # Everything else finished first; the retried record waited its 3 s tier.
    assert retried.timestamp - latest_other >= 2_000
    assert topic_size(kafka_bootstrap, env["DLQ"]) == 0
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_dead_letter_limit_stops_the_worker_and_keeps_offsets_uncommitted(
    kafka_bootstrap: str,
    pipeline_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    env = pipeline_env(partitions=1)
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(1_000))
    bad = {"TEST_FAIL_BELOW": "500", "TEST_MAX_CONSECUTIVE": "20", "TEST_RETRY_ATTEMPTS": "1"}
    worker = start_worker(APP, **env, **bad)
    assert worker.wait(60) == 1
    log = worker.output()
    assert "records in a row failed (limit 20)" in log, log[-2000:]
    group, topic = env["STREAMKIT_GROUP_ID"], env["TEST_IN"]
    # 20 dead letters were acknowledged and committed; the 21st tripped the
    # limit and stays uncommitted, so a fixed deploy starts right there.
    assert committed(kafka_bootstrap, group, topic, 1)[0] == 20
    assert topic_size(kafka_bootstrap, env["DLQ"]) == 20

    fixed = start_worker(APP, **env)
    wait_until_committed(kafka_bootstrap, group, topic, fixed)
    ids = sorted(
        json.loads(r.value or b"")["id"] for r in read_topic(kafka_bootstrap, env["TEST_OUT"], 980)
    )
    assert ids == list(range(20, 1_000))
    fixed.signal(signal.SIGTERM)
    assert fixed.wait(30) == 0


def test_an_emit_the_broker_rejects_is_dead_lettered_with_stage_produce(
    kafka_bootstrap: str,
    pipeline_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    env = pipeline_env(partitions=1)
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(100))
    worker = start_worker(APP, **env, TEST_HUGE_ID="42", TEST_RETRY_ATTEMPTS="1")
    wait_until_committed(kafka_bootstrap, env["STREAMKIT_GROUP_ID"], env["TEST_IN"], worker)
    [dead] = read_topic(kafka_bootstrap, env["DLQ"], 1)
    assert header(dead, "streamkit.errors.stage") == "produce"
    assert header(dead, "__streams.errors.offset") == "42"
    assert "MSG_SIZE_TOO_LARGE" in header(dead, "__streams.errors.message")
    ids = sorted(
        json.loads(r.value or b"")["id"] for r in read_topic(kafka_bootstrap, env["TEST_OUT"], 99)
    )
    assert ids == [i for i in range(100) if i != 42]
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
