"""A source table on a real broker: joined per partition, loaded on assignment, followed.

The pipeline (:mod:`tests.integration.apps.joining`) enriches each order
with its customer's record from a topic co-partitioned with the orders.
Every customer changes once while orders stream and a second worker joins:
each order must carry its customer as of when it was processed, so per key
the old version first and never back, the first order the version loaded at
assignment and the last the new one, on whichever worker owned the key.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable

from tests.integration.helpers import (
    FAST_FAILOVER,
    WorkerProcess,
    produce,
    read_topic,
    wait_until_committed,
)

APP = "tests.integration.apps.joining:app"
CUSTOMERS = 12


def customers(version: int) -> list[tuple[bytes, bytes]]:
    return [(f"c{c}".encode(), json.dumps({"version": version}).encode()) for c in range(CUSTOMERS)]


def test_orders_join_their_customer_as_of_when_they_are_processed(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    app_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    n = 600
    compacted = new_topic(partitions=3, config={"cleanup.policy": "compact"})
    env = app_env(
        "joining", partitions=3, TEST_CUSTOMERS=compacted, TEST_DELAY_S="0.004", **FAST_FAILOVER
    )
    app = env["TEST_APP"]
    produce(kafka_bootstrap, env["TEST_CUSTOMERS"], customers(1))
    orders = [(f"c{i % CUSTOMERS}".encode(), json.dumps({"id": i}).encode()) for i in range(n)]
    produce(kafka_bootstrap, env["TEST_IN"], orders)
    first = start_worker(APP, **env)
    first.wait_for_log('"source tables loaded"', timeout=60)
    assert read_topic(kafka_bootstrap, env["TEST_OUT"], expected=30, idle=0.0)
    produce(kafka_bootstrap, env["TEST_CUSTOMERS"], customers(2))
    # A second member takes partitions over mid-stream: it loads them from
    # the topic, with the update, while the first keeps following its own.
    second = start_worker(APP, **env)
    second.wait_for_log('"source tables loaded"', timeout=60)
    wait_until_committed(kafka_bootstrap, app, env["TEST_IN"], first, 120)

    outputs = [json.loads(r.value or b"") for r in read_topic(kafka_bootstrap, env["TEST_OUT"], n)]
    assert {o["id"] for o in outputs} == set(range(n))
    assert None not in {o["version"] for o in outputs}, "an order was processed before its load"
    by_key: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for o in outputs:
        by_key[o["id"] % CUSTOMERS].append((o["offset"], o["version"]))
    for key, seen in by_key.items():
        versions = [v for _, v in sorted(seen)]
        assert versions == sorted(versions), f"c{key} went back to its old version"
        assert versions[0] == 1 and versions[-1] == 2, (key, versions)
    for worker in (first, second):
        assert "Traceback" not in worker.output()


def test_a_table_topic_partitioned_unlike_the_stream_stops_the_worker_with_both_counts(
    new_topic: Callable[..., str],
    app_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    env = app_env("joining", partitions=3, TEST_CUSTOMERS=new_topic(partitions=2))
    worker = start_worker(APP, **env)
    assert worker.wait(60) != 0
    assert (
        f"its topic {env['TEST_CUSTOMERS']} has 2 partitions and the stream {env['TEST_IN']} "
        "joined to it 3" in worker.output()
    )
    assert '"partitions assigned"' not in worker.output()
