"""Quix Streams contender, written the way the Quix docs show a StreamingDataFrame.

Runs in bench/.venvs/quix. Environment: BENCH_BROKERS, BENCH_IN, BENCH_OUT, BENCH_GROUP,
and optionally:

    BENCH_GUARANTEE         ``at-least-once`` (Quix's default) or ``exactly-once``
    BENCH_COMMIT_INTERVAL   seconds between checkpoints (Quix's default: 5.0)

At least once, Quix checkpoints every ``commit_interval`` seconds: flush the
producer, then commit offsets. Exactly once, its producer is transactional
(``transactional.id`` set by ``Application``) and each checkpoint is one
transaction: flush, ``send_offsets_to_transaction``, ``commit_transaction``,
``begin_transaction``.
"""

import os

from quixstreams import Application

settings = {}
if os.environ.get("BENCH_GUARANTEE"):
    settings["processing_guarantee"] = os.environ["BENCH_GUARANTEE"]
if os.environ.get("BENCH_COMMIT_INTERVAL"):
    settings["commit_interval"] = float(os.environ["BENCH_COMMIT_INTERVAL"])

app = Application(
    broker_address=os.environ["BENCH_BROKERS"],
    consumer_group=os.environ["BENCH_GROUP"],
    auto_offset_reset="earliest",
    loglevel="WARNING",
    **settings,
)
source = app.topic(os.environ["BENCH_IN"], key_deserializer="bytes", value_deserializer="json")
sink = app.topic(os.environ["BENCH_OUT"], key_serializer="bytes", value_serializer="json")

sdf = app.dataframe(source)
sdf["total"] = sdf["price"] * sdf["qty"]
sdf.to_topic(sink)

if __name__ == "__main__":
    app.run()
