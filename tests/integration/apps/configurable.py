"""A pipeline whose names and behaviour come from the environment.

Integration tests run it as worker subprocesses (``streamkit run
tests.integration.apps.configurable:app``) with unique topic and group names
per test, and switch on the behaviour under test:

* ``TEST_DELAY_S``: seconds each record takes (a slow agent);
* ``TEST_RANDOM_DELAY_MS``: up to this many ms per record, fixed per record id;
* ``TEST_FAIL_ID``: the record id whose processing raises;
* ``TEST_ASYNC=1``: declare the agent ``async def``;
* ``TEST_CONCURRENCY``: records of a partition in flight at once (async only);
* ``TEST_HOLD_ID`` + ``TEST_HOLD_FILE``: that record waits until the file exists.
"""

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

from streamkit import App, Context

app = App(os.environ.get("TEST_APP", "configurable"))
source = app.topic(os.environ.get("TEST_IN", "configurable.in"), value_serde="json")
sink = app.topic(os.environ.get("TEST_OUT", "configurable.out"), value_serde="json")

DELAY_S = float(os.environ.get("TEST_DELAY_S", "0"))
RANDOM_DELAY_MS = float(os.environ.get("TEST_RANDOM_DELAY_MS", "0"))
FAIL_ID = int(os.environ.get("TEST_FAIL_ID", "-1"))
HOLD_ID = int(os.environ.get("TEST_HOLD_ID", "-1"))
HOLD_FILE = Path(os.environ.get("TEST_HOLD_FILE", "/nonexistent"))
CONCURRENCY = int(os.environ.get("TEST_CONCURRENCY", "1"))


def transform(value: Any, ctx: Context) -> dict[str, Any]:
    if value["id"] == FAIL_ID:
        raise RuntimeError(f"cannot handle record {FAIL_ID}")
    return {"id": value["id"], "n": value["n"] * 2, "from": [ctx.partition, ctx.offset]}


def delay_of(record_id: int) -> float:
    if RANDOM_DELAY_MS:
        return random.Random(record_id).uniform(0, RANDOM_DELAY_MS) / 1000
    return DELAY_S


if os.environ.get("TEST_ASYNC") == "1" or CONCURRENCY > 1:

    @app.agent(source, emits=[sink], name="forward", concurrency=CONCURRENCY)
    async def forward_async(value: Any, ctx: Context) -> dict[str, Any]:
        if value["id"] == HOLD_ID:
            while not HOLD_FILE.exists():
                await asyncio.sleep(0.01)
        delay = delay_of(value["id"])
        if delay:
            await asyncio.sleep(delay)
        return transform(value, ctx)

else:

    @app.agent(source, emits=[sink], name="forward")
    def forward(value: Any, ctx: Context) -> dict[str, Any]:
        delay = delay_of(value["id"])
        if delay:
            time.sleep(delay)
        return transform(value, ctx)
