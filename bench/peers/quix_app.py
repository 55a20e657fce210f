"""Quix Streams contender, written the way the Quix docs show a StreamingDataFrame.

Runs in bench/.venvs/quix. Environment: BENCH_BROKERS, BENCH_IN, BENCH_OUT, BENCH_GROUP.
Default processing guarantee (at-least-once): Quix checkpoints every
``commit_interval`` seconds: flush the producer, then commit offsets.
"""

import os

from quixstreams import Application

app = Application(
    broker_address=os.environ["BENCH_BROKERS"],
    consumer_group=os.environ["BENCH_GROUP"],
    auto_offset_reset="earliest",
    loglevel="WARNING",
)
source = app.topic(os.environ["BENCH_IN"], key_deserializer="bytes", value_deserializer="json")
sink = app.topic(os.environ["BENCH_OUT"], key_serializer="bytes", value_serializer="json")

sdf = app.dataframe(source)
sdf["total"] = sdf["price"] * sdf["qty"]
sdf.to_topic(sink)

if __name__ == "__main__":
    app.run()
