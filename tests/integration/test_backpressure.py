"""The fetch budget on a real broker: what counts against max_buffered_records.

Records waiting in a delayed-retry tier do not (they wait for a due time,
and would starve the source partitions for the tier's whole delay); records
started but not yet committable do (a hung record would otherwise keep every
later ticket and its input record in memory).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

from tests.integration.helpers import (
    APP,
    WorkerProcess,
    keyed_records,
    produce,
    read_topic,
    topic_size,
    wait_until,
)


def test_records_waiting_in_a_retry_tier_leave_the_source_partition_flowing(
    kafka_bootstrap: str,
    pipeline_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # 300 records fail into a 60 s tier, then 300 healthy ones follow, with a
    # budget of 100: before, the healthy ones waited for the tier's delay.
    env = pipeline_env(
        partitions=1,
        TEST_FAIL_BELOW="300",
        TEST_RETRY_ATTEMPTS="1",
        TEST_RETRY_TOPICS="60",
        STREAMKIT_MAX_BUFFERED_RECORDS="100",
        STREAMKIT_FETCH_BATCH="50",
    )
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(600))
    worker = start_worker(APP, **env)
    wait_until(lambda: topic_size(kafka_bootstrap, env["TEST_OUT"]) >= 300, 30, "healthy records")
    out = read_topic(kafka_bootstrap, env["TEST_OUT"], 300)
    assert sorted(json.loads(r.value or b"")["id"] for r in out) == list(range(300, 600))
    assert topic_size(kafka_bootstrap, f"{env['TEST_APP']}.forward.retry.60s") == 300
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()[-3000:]


def test_a_hung_record_keeps_at_most_a_quarter_of_the_budget_behind_it(
    kafka_bootstrap: str,
    pipeline_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    env = pipeline_env(
        partitions=1,
        TEST_CONCURRENCY="8",
        TEST_STUCK_ID="0",
        STREAMKIT_MAX_BUFFERED_RECORDS="400",
        STREAMKIT_SHUTDOWN_TIMEOUT="2",
    )
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(3_000))
    worker = start_worker(APP, **env)
    # 100 tickets at most (400 / 4): the hung record, record 97 (its key,
    # waiting behind it) and 98 that finish.
    out = env["TEST_OUT"]
    wait_until(lambda: topic_size(kafka_bootstrap, out) >= 98, 30, "the records that fit")
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # however long we look, no more start
        assert topic_size(kafka_bootstrap, out) == 98
    worker.signal(signal.SIGTERM)
    worker.wait(30)
