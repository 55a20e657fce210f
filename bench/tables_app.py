"""The per-key count pipeline of ``bench.tables``, run with ``streamkit run bench.tables_app:app``.

Environment (besides the ``STREAMKIT_*`` settings the worker reads itself:
brokers, group, state dir and store, guarantee, log format):

    BENCH_APP     the app name; the table's changelog is ``<app>.counts.changelog``
    BENCH_IN      the source topic (6 partitions, string keys, JSON values)
    BENCH_OUT     the output topic (6 partitions)
    BENCH_TABLE   ``1`` (default): count in the table; ``0``: the same agent
                  without a table, returning ``n = 1``, the baseline for the
                  table's cost

The agent emits ``{"key": key, "n": count}`` with the input key, so the
output can be checked: per key, the highest ``n`` is the key's count.
"""

from __future__ import annotations

import os
from typing import Any

from streamkit import App

PARTITIONS = 6

app = App(os.environ.get("BENCH_APP", "bench-count"))
src = app.topic(os.environ.get("BENCH_IN", "in"), partitions=PARTITIONS)
out = app.topic(os.environ.get("BENCH_OUT", "out"), partitions=PARTITIONS)

if os.environ.get("BENCH_TABLE", "1") == "1":
    counts = app.table("counts", default=0)

    @app.agent(src, emits=[out], tables=[counts])
    def count(value: Any, ctx: Any) -> dict[str, Any]:
        n = counts[ctx.key] + 1
        counts[ctx.key] = n
        return {"key": ctx.key, "n": n}

else:

    @app.agent(src, emits=[out], name="count")
    def count_stateless(value: Any, ctx: Any) -> dict[str, Any]:
        return {"key": ctx.key, "n": 1}
