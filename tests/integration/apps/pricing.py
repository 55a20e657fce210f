"""A pipeline joining a global table: each order priced with the rate current when it is processed.

Names come from the environment (``TEST_APP``, ``TEST_IN``, ``TEST_OUT``,
``TEST_RATES``), like :mod:`tests.integration.apps.counting`, and so does the
pace: ``TEST_DELAY_S`` per record, so an update lands mid-stream.
"""

import os
import time
from typing import Any

from streamkit import App, Context

app = App(os.environ.get("TEST_APP", "pricing"))
source = app.topic(os.environ.get("TEST_IN", "pricing.in"))
sink = app.topic(os.environ.get("TEST_OUT", "pricing.out"))
rates = app.global_table("rates", source=app.topic(os.environ.get("TEST_RATES", "pricing.rates")))
DELAY_S = float(os.environ.get("TEST_DELAY_S", "0"))


@app.agent(source, emits=[sink])
def price(order: dict[str, Any], ctx: Context) -> dict[str, Any]:
    if DELAY_S:
        time.sleep(DELAY_S)
    return {
        "id": order["id"],
        "rate": rates.get("USD"),
        "partition": ctx.partition,
        "offset": ctx.offset,
    }
