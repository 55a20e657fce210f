"""A deliberately slow pipeline for the memory benchmark (1 ms per record)."""

import os
import time
from typing import Any

from streamkit import App

app = App(os.environ.get("BENCH_APP", "bench-slow"))
source = app.topic(os.environ.get("BENCH_IN", "bench.in"), value_serde="json", key_serde="bytes")
sink = app.topic(os.environ.get("BENCH_OUT", "bench.out"), value_serde="json", key_serde="bytes")


@app.agent(source, emits=[sink])
def slow(value: Any) -> Any:
    time.sleep(0.001)
    return value
