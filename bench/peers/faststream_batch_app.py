"""FastStream contender, batch form: a batch subscriber publishing each batch at once.

Same environment and venv as ``faststream_app.py``. FastStream's docs offer
``batch=True`` for throughput; with ``AckPolicy.ACK`` the offsets are committed
once per batch, after ``publish_batch`` returned (it waits for delivery).
"""

import asyncio
import logging
import os
from typing import Any

from faststream import AckPolicy, FastStream
from faststream.confluent import KafkaBroker, KafkaMessage, KafkaResponse

# DEBUG keeps the per-message access log lines out, as in faststream_app.py.
broker = KafkaBroker(os.environ["BENCH_BROKERS"], log_level=logging.DEBUG)
app = FastStream(broker)
OUT = os.environ["BENCH_OUT"]


@broker.subscriber(
    os.environ["BENCH_IN"],
    group_id=os.environ["BENCH_GROUP"],
    auto_offset_reset="earliest",
    ack_policy=AckPolicy.ACK,
    batch=True,
    max_records=500,
)
async def enrich(bodies: list[dict[str, Any]], msg: KafkaMessage) -> None:
    keys = [m.key() for m in msg.raw_message]
    for body in bodies:
        body["total"] = body["price"] * body["qty"]
    await broker.publish_batch(
        *(KafkaResponse(b, key=k) for b, k in zip(bodies, keys, strict=True)), topic=OUT
    )


if __name__ == "__main__":
    asyncio.run(app.run())
