"""One contender process for ``bench.run``: the hand-written loop or a streamkit agent.

Usage: python -m bench.child raw|streamkit-sync|streamkit-async
Environment: BENCH_BROKERS, BENCH_IN, BENCH_OUT, BENCH_GROUP, BENCH_N.

The peers (Quix Streams, faust, FastStream) live in ``bench/peers/`` instead:
they run in their own virtual environments and must not import streamkit.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from bench import contenders


def main() -> None:
    name = sys.argv[1]
    env = os.environ
    bootstrap, source, sink, group = (
        env["BENCH_BROKERS"],
        env["BENCH_IN"],
        env["BENCH_OUT"],
        env["BENCH_GROUP"],
    )
    if name == "raw":
        contenders.raw_loop(bootstrap, source, sink, group, int(env["BENCH_N"]))
        # Stay alive until the runner has sampled our CPU time and peak RSS.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            time.sleep(1)
    elif name in ("streamkit-sync", "streamkit-async"):
        app = contenders.streamkit_app(source, sink, group, name.endswith("async"))
        app.run(brokers=bootstrap, create_topics=False, log_format="json", log_level="warning")
    else:
        raise SystemExit(f"unknown contender {name!r}")


if __name__ == "__main__":
    main()
