"""``bench.run``'s JSON pipeline as an importable app, for ``streamkit run --processes N``.

The supervisor's children import their app by name (``MODULE:APP``), so the
contender bench.child builds in-process has to exist as a module too. The
same agent as ``streamkit-sync`` (:func:`bench.contenders.streamkit_app`),
with the same environment: BENCH_IN, BENCH_OUT, BENCH_GROUP, and
BENCH_WORKLOAD (``json``, or ``cpu``: :func:`bench.contenders.busy`).
"""

from __future__ import annotations

import os

from bench import contenders

app = contenders.streamkit_app(
    os.environ.get("BENCH_IN", "bench.in"),
    os.environ.get("BENCH_OUT", "bench.out"),
    os.environ.get("BENCH_GROUP", "bench-json"),
    False,
    workload=os.environ.get("BENCH_WORKLOAD", "json"),
)
