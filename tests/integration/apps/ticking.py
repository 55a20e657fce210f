"""An app with one timer (every second), for the scheduled-jobs tests."""

import os
from typing import Any

from streamkit import App
from streamkit.runtime.scheduler import TimerContext

app = App(os.environ.get("TEST_APP", "ticking"))
ticks = app.topic(os.environ.get("TEST_OUT", "ticking.out"), value_serde="json")


@app.timer(every=1, emits=[ticks])
def tick(ctx: TimerContext) -> dict[str, Any]:
    return {"fired_at": ctx.fired_at, "pid": os.getpid()}
