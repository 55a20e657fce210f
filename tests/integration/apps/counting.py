"""A stateful pipeline for the table tests: counts records per key.

Each input ``{"id": n}`` adds one to its key's count in the ``counts`` table
and emits ``{"id": n, "key": k, "n": count}``. Names come from the
environment (``TEST_APP``, ``TEST_IN``, ``TEST_OUT``), like
:mod:`tests.integration.apps.configurable`, and so does the pace:
``TEST_DELAY_S`` per record, so a SIGKILL lands mid-stream. With
``TEST_GROUP_BY=1`` it counts per ``value["group"]`` instead, re-keyed
through ``<app>.count.repartition``.
"""

import os
import time
from typing import Any

from streamkit import App, Context

app = App(os.environ.get("TEST_APP", "counting"))
source = app.topic(os.environ.get("TEST_IN", "counting.in"))
sink = app.topic(os.environ.get("TEST_OUT", "counting.out"))
counts = app.table("counts", default=0)
DELAY_S = float(os.environ.get("TEST_DELAY_S", "0"))
GROUP_BY = os.environ.get("TEST_GROUP_BY") == "1"


def group(value: dict[str, Any]) -> str:
    return str(value["group"])


@app.agent(source, emits=[sink], tables=[counts], group_by=group if GROUP_BY else None)
def count(value: dict[str, Any], ctx: Context) -> dict[str, Any]:
    if DELAY_S:
        time.sleep(DELAY_S)
    n = counts[ctx.key] + 1
    counts[ctx.key] = n
    return {"id": value["id"], "key": ctx.key, "n": n}
