"""The worker of ``bench.client``'s ask round trip: one ``requests=True`` agent that echoes.

Run with ``python -m streamkit run bench.apps.serving:app``; ``bench.client``
imports the same module in its client process, so both sides declare the
same topics. Environment (besides the worker's ``STREAMKIT_*`` settings):

    BENCH_APP   the app name; replies go to ``<app>.replies``
    BENCH_IN    the agent's source topic (6 partitions)

The agent does nothing but return its input: what is measured is the
request's trip, not the work. A ``def`` agent, as a cheap handler would be.
"""

from __future__ import annotations

import os
from typing import Any

from streamkit import App

PARTITIONS = 6

app = App(os.environ.get("BENCH_APP", "bench-serving"))
source = app.topic(os.environ.get("BENCH_IN", "bench-serving.in"), partitions=PARTITIONS)


@app.agent(source, requests=True)
def echo(value: Any) -> Any:
    return value
