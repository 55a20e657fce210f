"""An agent that answers requests: doubles ``n``, reports progress, fails on ``fail``.

Names come from the environment (``TEST_APP``, ``TEST_IN``), like
:mod:`tests.integration.apps.counting`. ``steps`` and ``step_s`` make a task
report progress that many times, that long apart, so a SIGKILL lands mid-task.
"""

import asyncio
import os
from typing import Any

from streamkit import App, Context, RetryPolicy

app = App(os.environ.get("TEST_APP", "serving"))
source = app.topic(os.environ.get("TEST_IN", "serving.in"), partitions=4)


@app.agent(source, requests=True, concurrency=20, retry=RetryPolicy(attempts=2, backoff=0.01))
async def work(value: dict[str, Any], ctx: Context) -> dict[str, Any]:
    if value.get("fail"):
        raise ValueError(f"cannot do {value['n']}")
    steps = int(value.get("steps", 0))
    for i in range(steps):
        ctx.progress((i + 1) / steps, f"step {i + 1} of {steps}")
        await asyncio.sleep(float(value.get("step_s", 0)))
    return {"n": value["n"], "double": value["n"] * 2}
