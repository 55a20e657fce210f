"""A pipeline whose names and behaviour come from the environment.

Integration tests run it as worker subprocesses (``streamkit run
tests.integration.apps.configurable:app``) with unique topic and group names
per test, and switch on the behaviour under test:

* ``TEST_DELAY_S``: seconds each record takes (a slow agent);
* ``TEST_RANDOM_DELAY_MS``: up to this many ms per record, fixed per record id;
* ``TEST_FAIL_ID``: the record id whose processing raises;
* ``TEST_ASYNC=1``: declare the agent ``async def``;
* ``TEST_SLOW_PARTITION`` + ``TEST_SLOW_S``: records of that input partition
  take that many seconds (async agents: a slow dependency);
* ``TEST_CONCURRENCY``: records of a partition in flight at once (async only);
* ``TEST_HOLD_ID`` + ``TEST_HOLD_FILE``: that record waits until the file exists;
* ``TEST_FAIL_MOD``: records with ``id % 100 == TEST_FAIL_MOD`` always raise;
* ``TEST_FLAKY_MOD``: records with ``id % 50 == TEST_FLAKY_MOD`` fail twice, then succeed;
* ``TEST_FAIL_BELOW``: records with ``id < TEST_FAIL_BELOW`` always raise (a burst);
* ``TEST_FIRST_TRY_FAILS``: that record id fails its first in-place attempts only;
* ``TEST_HUGE_ID``: that record's output is 2 MB, more than the producer accepts
  (``produce()`` refuses it at once);
* ``TEST_BIG_IDS`` (comma-separated): those records' outputs are 600 KB, which
  the producer sends and a topic with a smaller ``max.message.bytes`` refuses
  in the delivery report;
* ``TEST_STUCK_ID``: that record never finishes (a sync agent blocks the event
  loop in ``time.sleep``; an async one awaits forever): a stuck agent for ``/livez``;
* ``TEST_DLQ=0``: dead-lettering off (a failed record stops the worker);
* ``TEST_RETRY_ATTEMPTS``, ``TEST_RETRY_BACKOFF``, ``TEST_RETRY_TOPICS`` (comma-separated
  seconds), ``TEST_MAX_CONSECUTIVE``, ``TEST_MAX_RATIO``: the agent's retry and
  dead-letter policies.
"""

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

from streamkit import App, Context, DeadLetterPolicy, RetryPolicy

app = App(os.environ.get("TEST_APP", "configurable"))
source = app.topic(os.environ.get("TEST_IN", "configurable.in"), value_serde="json")
sink = app.topic(os.environ.get("TEST_OUT", "configurable.out"), value_serde="json")

DELAY_S = float(os.environ.get("TEST_DELAY_S", "0"))
RANDOM_DELAY_MS = float(os.environ.get("TEST_RANDOM_DELAY_MS", "0"))
FAIL_ID = int(os.environ.get("TEST_FAIL_ID", "-1"))
HOLD_ID = int(os.environ.get("TEST_HOLD_ID", "-1"))
HOLD_FILE = Path(os.environ.get("TEST_HOLD_FILE", "/nonexistent"))
STUCK_ID = int(os.environ.get("TEST_STUCK_ID", "-1"))
CONCURRENCY = int(os.environ.get("TEST_CONCURRENCY", "1"))
SLOW_PARTITION = int(os.environ.get("TEST_SLOW_PARTITION", "-1"))
SLOW_S = float(os.environ.get("TEST_SLOW_S", "0"))
FAIL_MOD = int(os.environ.get("TEST_FAIL_MOD", "-1"))
FLAKY_MOD = int(os.environ.get("TEST_FLAKY_MOD", "-1"))
FAIL_BELOW = int(os.environ.get("TEST_FAIL_BELOW", "-1"))
FIRST_TRY_FAILS = int(os.environ.get("TEST_FIRST_TRY_FAILS", "-1"))
HUGE_ID = int(os.environ.get("TEST_HUGE_ID", "-1"))
BIG_IDS = {int(i) for i in os.environ.get("TEST_BIG_IDS", "").split(",") if i}
RETRY = RetryPolicy(
    attempts=int(os.environ.get("TEST_RETRY_ATTEMPTS", "3")),
    backoff=float(os.environ.get("TEST_RETRY_BACKOFF", "0.01")),
    max_delay=60,
    retry_topics=tuple(int(d) for d in os.environ.get("TEST_RETRY_TOPICS", "").split(",") if d),
)
DEAD_LETTER = DeadLetterPolicy(
    enabled=os.environ.get("TEST_DLQ", "1") == "1",
    max_consecutive=int(os.environ.get("TEST_MAX_CONSECUTIVE", "100")),
    max_ratio=float(os.environ.get("TEST_MAX_RATIO", "0.2")),
)
attempts: dict[int, int] = {}


def transform(value: Any, ctx: Context) -> dict[str, Any]:
    record_id = value["id"]
    attempts[record_id] = attempts.get(record_id, 0) + 1
    if record_id == FAIL_ID:
        raise RuntimeError(f"cannot handle record {FAIL_ID}")
    if record_id % 100 == FAIL_MOD or record_id < FAIL_BELOW:
        raise RuntimeError(f"record {record_id} always fails")
    if record_id % 50 == FLAKY_MOD and attempts[record_id] <= 2:
        raise TimeoutError(f"record {record_id} failed attempt {attempts[record_id]}")
    if record_id == FIRST_TRY_FAILS and ctx.topic == source.name:
        raise TimeoutError(f"record {record_id} fails until it comes from the retry topic")
    out = {"id": value["id"], "n": value["n"] * 2, "from": [ctx.partition, ctx.offset]}
    if record_id == HUGE_ID:
        out["blob"] = "x" * 2_000_000
    if record_id in BIG_IDS:
        out["blob"] = "x" * 600_000
    return out


def delay_of(record_id: int) -> float:
    if RANDOM_DELAY_MS:
        return random.Random(record_id).uniform(0, RANDOM_DELAY_MS) / 1000
    return DELAY_S


if os.environ.get("TEST_ASYNC") == "1" or CONCURRENCY > 1:

    @app.agent(
        source,
        emits=[sink],
        name="forward",
        concurrency=CONCURRENCY,
        retry=RETRY,
        dead_letter=DEAD_LETTER,
    )
    async def forward_async(value: Any, ctx: Context) -> dict[str, Any]:
        while value["id"] == STUCK_ID:
            await asyncio.sleep(3600)
        if value["id"] == HOLD_ID:
            while not HOLD_FILE.exists():
                await asyncio.sleep(0.01)
        delay = SLOW_S if ctx.partition == SLOW_PARTITION else delay_of(value["id"])
        if delay:
            await asyncio.sleep(delay)
        return transform(value, ctx)

else:

    @app.agent(source, emits=[sink], name="forward", retry=RETRY, dead_letter=DEAD_LETTER)
    def forward(value: Any, ctx: Context) -> dict[str, Any]:
        while value["id"] == STUCK_ID:
            time.sleep(3600)
        delay = delay_of(value["id"])
        if delay:
            time.sleep(delay)
        return transform(value, ctx)
