"""Time 10,000 records through a two-agent pipeline in the test harness.

    .venv/bin/python -m bench.harness [--records N] [--repeat R]

The pipeline: ``bench.in`` (4 partitions) -> ``parse`` -> ``bench.mid`` (4)
-> ``total`` -> ``bench.out`` (4), JSON values, 100 keys. Timed: from the
first ``send`` to ``run_until_idle`` returning with every offset committed,
so the number includes encoding the input, both agents, the acknowledgements
and the commits. Startup and teardown are printed apart.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import structlog

from streamkit import App
from streamkit.testing import TestApp


def build_app() -> App:
    app = App("bench-harness")
    source = app.topic("bench.in", value_serde="json", partitions=4)
    mid = app.topic("bench.mid", value_serde="json", partitions=4)
    out = app.topic("bench.out", value_serde="json", partitions=4)

    @app.agent(source, emits=[mid])
    def parse(value: dict[str, Any]) -> dict[str, Any]:
        return {"id": value["id"], "amount": value["cents"] / 100}

    @app.agent(mid, emits=[out])
    def total(value: dict[str, Any]) -> dict[str, Any]:
        return {"id": value["id"], "total": value["amount"] * 1.2}

    return app


def run_once(app: App, records: int) -> tuple[float, float, float]:
    started = time.perf_counter()
    with TestApp(app, timeout=60) as t:
        ready = time.perf_counter()
        for i in range(records):
            t.send("bench.in", {"id": i, "cents": i}, key=f"k{i % 100}")
        t.run_until_idle()
        done = time.perf_counter()
        out = t.output("bench.out")
        assert len(out) == records, len(out)
        assert sum(t.committed("bench.in").values()) == records
        stopping = time.perf_counter()
    closed = time.perf_counter()
    return ready - started, done - ready, closed - stopping


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    # The runtime's info lines would dominate the output; warnings still show.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    app = build_app()
    timings = [run_once(app, args.records) for _ in range(args.repeat)]
    best = min(timings, key=lambda t: t[1])
    for start, run, close in timings:
        print(
            f"start {start * 1000:6.1f} ms  run {run * 1000:7.1f} ms  stop {close * 1000:6.1f} ms"
        )
    print(
        f"{args.records} records through 2 agents: best {best[1] * 1000:.0f} ms "
        f"({args.records / best[1]:,.0f} records/s), median "
        f"{sorted(t[1] for t in timings)[len(timings) // 2] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
