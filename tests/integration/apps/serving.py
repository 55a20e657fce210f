"""An agent that answers requests: doubles ``n``, reports progress, fails on ``fail``.

Names come from the environment (``TEST_APP``, ``TEST_IN``), like
:mod:`tests.integration.apps.counting`. ``steps`` and ``step_s`` make a task
report progress that many times, that long apart, so a SIGKILL lands mid-task.
``TEST_DELAYS=1`` gives it delay tiers of 1 and 4 s; ``stamp`` adds when it ran.
"""

import asyncio
import os
import time
from typing import Any

from streamkit import App, Context, RetryPolicy

app = App(os.environ.get("TEST_APP", "serving"))
source = app.topic(os.environ.get("TEST_IN", "serving.in"), partitions=4)


DELAYS = (1, 4) if os.environ.get("TEST_DELAYS") == "1" else False


@app.agent(
    source,
    requests=True,
    concurrency=20,
    retry=RetryPolicy(attempts=2, backoff=0.01),
    delays=DELAYS,
)
async def work(value: dict[str, Any], ctx: Context) -> dict[str, Any]:
    if value.get("fail"):
        raise ValueError(f"cannot do {value['n']}")
    steps = int(value.get("steps", 0))
    for i in range(steps):
        ctx.progress((i + 1) / steps, f"step {i + 1} of {steps}")
        await asyncio.sleep(float(value.get("step_s", 0)))
    if value.get("stamp"):
        return {"n": value["n"], "ran_at": int(time.time() * 1000)}
    return {"n": value["n"], "double": value["n"] * 2}
