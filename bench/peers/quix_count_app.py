"""Quix Streams' per-key counts: the peer of ``bench.tables``, and of ``bench.windows``.

Runs in bench/.venvs/quix. A stateful ``apply`` as the Quix docs show it:
``state.get`` / ``state.set`` on the message key's state (Quix's default
RocksDB store, with its changelog topic, under ``BENCH_STATE_DIR``), then
``{"key": key, "n": n}`` to the output with the input key.

With ``BENCH_WINDOW_MS`` set it counts per key in tumbling windows of that
length instead (grace 0, final results), closing them by
``BENCH_CLOSING`` (``partition``: on the partition's newest timestamp, as
streamkit does; ``key``: Quix's default, on the key's next record).

Environment: BENCH_BROKERS, BENCH_IN, BENCH_OUT, BENCH_GROUP, BENCH_STATE_DIR,
and optionally BENCH_GUARANTEE (``at-least-once``, Quix's default, or
``exactly-once``), BENCH_WINDOW_MS and BENCH_CLOSING.
"""

import os

from quixstreams import Application

settings = {}
if os.environ.get("BENCH_GUARANTEE"):
    settings["processing_guarantee"] = os.environ["BENCH_GUARANTEE"]

app = Application(
    broker_address=os.environ["BENCH_BROKERS"],
    consumer_group=os.environ["BENCH_GROUP"],
    auto_offset_reset="earliest",
    state_dir=os.environ["BENCH_STATE_DIR"],
    loglevel="WARNING",
    **settings,
)
source = app.topic(os.environ["BENCH_IN"], key_deserializer="str", value_deserializer="json")
sink = app.topic(os.environ["BENCH_OUT"], key_serializer="str", value_serializer="json")


def count(value, key, timestamp, headers, state):
    n = state.get("n", 0) + 1
    state.set("n", n)
    return {"key": key, "n": n}


sdf = app.dataframe(source)
if os.environ.get("BENCH_WINDOW_MS"):
    sdf = sdf.tumbling_window(duration_ms=int(os.environ["BENCH_WINDOW_MS"]), grace_ms=0)
    sdf = sdf.count().final(closing_strategy=os.environ["BENCH_CLOSING"])
else:
    sdf = sdf.apply(count, stateful=True, metadata=True)
sdf.to_topic(sink)

if __name__ == "__main__":
    app.run()
