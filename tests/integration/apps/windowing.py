"""A windowed pipeline for the window tests: a tumbling count per key.

Each input ``{"id": n, "ts": ms}`` counts in its key's window of
``TEST_WINDOW_S`` seconds of event time ``ts``; closed windows are emitted
to ``TEST_OUT``. Names and pace come from the environment, like
:mod:`tests.integration.apps.counting`: ``TEST_DELAY_S`` per record, so a
SIGKILL lands mid-window, and ``TEST_IDLE_S`` for idle advance (``0``: off).
"""

import os
import time
from typing import Any

from streamkit import App, Tumbling
from streamkit.windows import count

app = App(os.environ.get("TEST_APP", "windowing"))
source = app.topic(os.environ.get("TEST_IN", "windowing.in"))
sink = app.topic(os.environ.get("TEST_OUT", "windowing.out"))
DELAY_S = float(os.environ.get("TEST_DELAY_S", "0"))
IDLE_S = float(os.environ.get("TEST_IDLE_S", "0"))


def event_time(value: dict[str, Any]) -> Any:
    if DELAY_S:
        time.sleep(DELAY_S)
    return value.get("ts")


app.window(
    source,
    Tumbling(float(os.environ.get("TEST_WINDOW_S", "10"))),
    name="per_window",
    aggregate=count(),
    grace=0,
    emits=[sink],
    timestamp=event_time if "TEST_EVENT_TIME" in os.environ else None,
    idle=IDLE_S or None,
)
