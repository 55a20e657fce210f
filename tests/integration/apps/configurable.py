"""A pipeline whose names and failure modes come from the environment.

Integration tests run it as a worker subprocess (``streamkit run
tests.integration.apps.configurable:app``) with unique topic and group names
per test, and switch on the behaviour under test:

* ``TEST_DELAY_S``: seconds each record takes (a slow agent);
* ``TEST_FAIL_ID``: the record id whose processing raises;
* ``TEST_ASYNC=1``: declare the agent ``async def``.
"""

import asyncio
import os
import time
from typing import Any

from streamkit import App, Context

app = App(os.environ.get("TEST_APP", "configurable"))
source = app.topic(os.environ.get("TEST_IN", "configurable.in"), value_serde="json")
sink = app.topic(os.environ.get("TEST_OUT", "configurable.out"), value_serde="json")

DELAY_S = float(os.environ.get("TEST_DELAY_S", "0"))
FAIL_ID = int(os.environ.get("TEST_FAIL_ID", "-1"))


def transform(value: Any, ctx: Context) -> dict[str, Any]:
    if value["id"] == FAIL_ID:
        raise RuntimeError(f"cannot handle record {FAIL_ID}")
    return {"id": value["id"], "n": value["n"] * 2, "from": [ctx.partition, ctx.offset]}


if os.environ.get("TEST_ASYNC") == "1":

    @app.agent(source, emits=[sink], name="forward")
    async def forward_async(value: Any, ctx: Context) -> dict[str, Any]:
        if DELAY_S:
            await asyncio.sleep(DELAY_S)
        return transform(value, ctx)

else:

    @app.agent(source, emits=[sink], name="forward")
    def forward(value: Any, ctx: Context) -> dict[str, Any]:
        if DELAY_S:
            time.sleep(DELAY_S)
        return transform(value, ctx)
