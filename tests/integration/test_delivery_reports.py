"""Emits the broker refuses in the delivery report, on a real broker.

The output topic's ``max.message.bytes`` (512 KiB) is below the 600 KB output
of the ``TEST_BIG_IDS`` records and above the producer's own check, so
``produce()`` accepts those records and the broker refuses them: the failure
arrives in the delivery report, the path a local size check never reaches.
(The broker refuses a whole batch, and records batched with a big one are
refused with it: a real cluster does that too, and the invariants below count
every record exactly. The tests send one record per batch so that the
dead-letter limit counts one refused record, not a batch of them.)

Whatever happens next, nothing is committed past a record that is in neither
the output nor the dead-letter topic.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Callable

import pytest

from tests.integration.helpers import (
    APP,
    Record,
    WorkerProcess,
    committed,
    keyed_records,
    produce,
    read_topic,
    topic_size,
    wait_until_committed,
)

N = 300
BIG = 150
SMALL_TOPIC = {"max.message.bytes": str(512 * 1024)}


def ids(records: list[Record]) -> Counter[int]:
    return Counter(json.loads(r.value or b"")["id"] for r in records)


def header(record: Record, name: str) -> str:
    return dict(record.headers)[name].decode()


@pytest.fixture
def refusing_env(
    pipeline_env: Callable[..., dict[str, str]], new_topic: Callable[..., str]
) -> dict[str, str]:
    """A one-partition pipeline whose output topic refuses the big records."""
    return pipeline_env(
        partitions=1,
        TEST_OUT=new_topic(partitions=1, config=SMALL_TOPIC),
        TEST_BIG_IDS=str(BIG),
        TEST_RETRY_BACKOFF="0.01",
        STREAMKIT_COMMIT_EVERY="10",
        STREAMKIT_PRODUCER_BATCH_NUM_MESSAGES="1",
    )


def test_a_refused_emit_is_dead_lettered_with_stage_produce_and_every_record_counted(
    kafka_bootstrap: str, refusing_env: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    env = refusing_env
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(N))
    worker = start_worker(APP, **env)
    wait_until_committed(kafka_bootstrap, env["STREAMKIT_GROUP_ID"], env["TEST_IN"], worker)
    out = ids(read_topic(kafka_bootstrap, env["TEST_OUT"], 1))
    letters = read_topic(kafka_bootstrap, env["DLQ"], 1)
    dead = ids(letters)
    assert out + dead == Counter(range(N)), "each record exactly once, in the output or the DLQ"
    [big] = [r for r in letters if json.loads(r.value or b"")["id"] == BIG]
    assert header(big, "streamkit.errors.stage") == "produce"
    assert "MSG_SIZE_TOO_LARGE" in header(big, "__streams.errors.message")
    assert header(big, "streamkit.errors.attempts") == "1", "a permanent error is not retried"
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


@pytest.mark.parametrize(
    "variant",
    ["dead letters off", "dead letter refused", "dead-letter limit"],
)
def test_a_refused_emit_that_cannot_be_dead_lettered_stops_the_worker_uncommitted(
    kafka_bootstrap: str,
    refusing_env: dict[str, str],
    new_topic: Callable[..., str],
    start_worker: Callable[..., WorkerProcess],
    variant: str,
) -> None:
    env = dict(refusing_env)
    if variant == "dead letters off":
        env["TEST_DLQ"] = "0"
    elif variant == "dead letter refused":
        # The dead letter carries the input and ~1 KB of provenance headers.
        new_topic(partitions=1, name=env["DLQ"], config={"max.message.bytes": "600"})
    else:
        # Window 1,000 at 0.1%: the second dead letter trips the limit.
        env["TEST_MAX_RATIO"] = "0.001"
        env["TEST_BIG_IDS"] = f"{BIG},{BIG + 40}"
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(N))
    worker = start_worker(APP, **env)
    assert worker.wait(60) == 1, worker.output()[-3000:]
    position = committed(kafka_bootstrap, env["STREAMKIT_GROUP_ID"], env["TEST_IN"], 1)[0]
    limit = BIG + 40 if variant == "dead-letter limit" else BIG
    assert position <= limit, f"committed {position}, past the record that failed"
    accounted = ids(read_topic(kafka_bootstrap, env["TEST_OUT"], 1, idle=0.5))
    if topic_size(kafka_bootstrap, env["DLQ"]):
        accounted += ids(read_topic(kafka_bootstrap, env["DLQ"], 1, idle=0.5))
    lost = [i for i in range(max(position, 0)) if i not in accounted]
    assert not lost, f"committed past records in neither output nor DLQ: {lost[:5]}"
