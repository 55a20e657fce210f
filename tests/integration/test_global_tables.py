"""A global table on a real broker: loaded before the first record, updated as of processing time.

The pipeline (:mod:`tests.integration.apps.pricing`) prices each order with
the ``USD`` rate of a global table. The rate changes once while orders
stream: every order must carry the old or the new rate, per partition the
old ones first (an update never goes back, nor applies halfway), the first
order the rate loaded before processing and the last the new one.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.integration.helpers import (
    WorkerProcess,
    produce,
    read_topic,
    wait_until_committed,
)

APP = "tests.integration.apps.pricing:app"


def test_orders_see_the_rate_as_of_when_they_are_processed(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    app_env: Callable[..., dict[str, str]],
    start_member: Callable[..., WorkerProcess],
) -> None:
    n = 600
    env = app_env("pricing", partitions=3, TEST_RATES=new_topic(partitions=1), TEST_DELAY_S="0.004")
    produce(kafka_bootstrap, env["TEST_RATES"], [(b"USD", b"1.0")])
    produce(
        kafka_bootstrap,
        env["TEST_IN"],
        [(f"o{i}".encode(), json.dumps({"id": i}).encode()) for i in range(n)],
    )
    worker = start_member(APP, **env)
    worker.wait_for_log('"global table loaded"', timeout=60)
    produced_early = read_topic(kafka_bootstrap, env["TEST_OUT"], expected=30, idle=0.0)
    assert produced_early, "no order priced before the update"
    produce(kafka_bootstrap, env["TEST_RATES"], [(b"USD", b"2.0")])
    wait_until_committed(kafka_bootstrap, env["TEST_APP"], env["TEST_IN"], worker, 120)

    outputs = [json.loads(r.value or b"") for r in read_topic(kafka_bootstrap, env["TEST_OUT"], n)]
    assert sorted(o["id"] for o in outputs) == list(range(n))
    assert {o["rate"] for o in outputs} == {1.0, 2.0}
    for partition in range(3):
        seen = [
            o["rate"]
            for o in sorted(outputs, key=lambda o: o["offset"])
            if o["partition"] == partition
        ]
        assert seen == sorted(seen), f"partition {partition} went back to the old rate"
        assert seen[0] == 1.0 and seen[-1] == 2.0, partition
