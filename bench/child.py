"""One contender process for ``bench.run``: the hand-written loop or a streamkit agent.

Usage: python -m bench.child NAME, one of: raw, raw-avro, streamkit-sync,
streamkit-async, streamkit-avro, streamkit-io-c<concurrency>,
streamkit-p<processes> (``streamkit run --processes N`` of the ``def`` agent), or
streamkit-eos[-<suffix>] (the ``def`` agent with
``processing_guarantee="exactly_once"``; the suffix only names a variant, whose
checkpoint settings come from ``STREAMKIT_COMMIT_INTERVAL`` /
``STREAMKIT_COMMIT_EVERY`` in the environment).
Environment: BENCH_BROKERS, BENCH_IN, BENCH_OUT, BENCH_GROUP, BENCH_N.

The guarantee is always given in code, so a ``STREAMKIT_PROCESSING_GUARANTEE``
left in the shell cannot turn an at-least-once contender into an exactly-once
one (code arguments beat the environment).

The peers (Quix Streams, faust, FastStream) live in ``bench/peers/`` instead:
they run in their own virtual environments and must not import streamkit.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from bench import contenders
from streamkit import App


def main() -> None:
    name = sys.argv[1]
    env = os.environ
    bootstrap, source, sink, group = (
        env["BENCH_BROKERS"],
        env["BENCH_IN"],
        env["BENCH_OUT"],
        env["BENCH_GROUP"],
    )
    if name in ("raw", "raw-avro"):
        workload = "avro" if name.endswith("avro") else "json"
        contenders.raw_loop(bootstrap, source, sink, group, int(env["BENCH_N"]), workload)
        # Stay alive until the runner has sampled our CPU time and peak RSS.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            time.sleep(1)
    elif name in ("streamkit-sync", "streamkit-async", "streamkit-avro"):
        workload = "avro" if name.endswith("avro") else "json"
        app = contenders.streamkit_app(
            source, sink, group, name.endswith("async"), workload=workload
        )
        run(app, bootstrap)
    elif name == "streamkit-eos" or name.startswith("streamkit-eos-"):
        app = contenders.streamkit_app(source, sink, group, False)
        run(app, bootstrap, guarantee="exactly_once")
    elif name.startswith("streamkit-p"):
        # streamkit run bench.apps.json_pipeline:app --processes N, in this
        # process: the supervisor, whose children do the work.
        from bench.apps.json_pipeline import app
        from streamkit.processes import run_command

        os.environ.update(
            STREAMKIT_BROKERS=bootstrap,
            STREAMKIT_CREATE_TOPICS="false",
            STREAMKIT_LOG_FORMAT="json",
            STREAMKIT_LOG_LEVEL="warning",
        )
        overrides = {"processes": int(name.removeprefix("streamkit-p").split("-")[0])}
        sys.exit(run_command(app, "bench.apps.json_pipeline:app", (), overrides))
    elif name.startswith("streamkit-io-c"):
        concurrency = int(name.removeprefix("streamkit-io-c"))
        app = contenders.streamkit_app(
            source, sink, group, True, workload="io", concurrency=concurrency
        )
        run(app, bootstrap)
    else:
        raise SystemExit(f"unknown contender {name!r}")


def run(app: App, bootstrap: str, guarantee: str = "at_least_once") -> None:
    app.run(
        brokers=bootstrap,
        create_topics=False,
        log_format="json",
        log_level="warning",
        processing_guarantee=guarantee,
    )


if __name__ == "__main__":
    main()
