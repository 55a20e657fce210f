"""A rate-limited relay for the rate-limit tests: each input goes to the output unchanged.

Names come from the environment (``TEST_APP``, ``TEST_IN``, ``TEST_OUT``),
like :mod:`tests.integration.apps.counting`, and so does the group-wide
limit: ``TEST_RATE`` (default ``200/s``). The agent does no work of its own,
so with a backlog the limit is the only thing that sets the pace; each
output's timestamp is when its record started (the producer stamps it).
"""

import os
from typing import Any

from streamkit import App

app = App(os.environ.get("TEST_APP", "limited"))
source = app.topic(os.environ.get("TEST_IN", "limited.in"))
sink = app.topic(os.environ.get("TEST_OUT", "limited.out"))


@app.agent(source, emits=[sink], rate_limit=os.environ.get("TEST_RATE", "200/s"))
def relay(value: dict[str, Any]) -> dict[str, Any]:
    return value
