"""A pipeline joining a source table: each order with its customer as of when it is processed.

Names come from the environment (``TEST_APP``, ``TEST_IN``, ``TEST_OUT``,
``TEST_CUSTOMERS``), like :mod:`tests.integration.apps.pricing`, and so does
the pace: ``TEST_DELAY_S`` per record, so an update lands mid-stream.
"""

import os
import time
from typing import Any

from streamkit import App, Context

app = App(os.environ.get("TEST_APP", "joining"))
source = app.topic(os.environ.get("TEST_IN", "joining.in"))
sink = app.topic(os.environ.get("TEST_OUT", "joining.out"))
customers = app.table("customers", source=app.topic(os.environ.get("TEST_CUSTOMERS", "crm")))
DELAY_S = float(os.environ.get("TEST_DELAY_S", "0"))


@app.agent(source, emits=[sink], tables=[customers])
def enrich(order: dict[str, Any], ctx: Context) -> dict[str, Any]:
    if DELAY_S:
        time.sleep(DELAY_S)
    customer = customers.get(ctx.key)
    return {
        "id": order["id"],
        "version": None if customer is None else customer["version"],
        "partition": ctx.partition,
        "offset": ctx.offset,
    }
