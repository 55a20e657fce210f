"""FastStream contender: a subscriber with a publisher, as the FastStream docs show.

Runs in bench/.venvs/faststream (``faststream[confluent]``, librdkafka underneath).
Environment: BENCH_BROKERS, BENCH_IN, BENCH_OUT, BENCH_GROUP.
At least once is ``ack_policy=AckPolicy.ACK``: the offset is committed after the
handler returned and its result was published (FastStream's default,
ACK_FIRST, auto-commits on receipt: at most once). ``KafkaResponse`` keeps the key.
"""

import asyncio
import logging
import os
from typing import Any

from faststream import AckPolicy, FastStream
from faststream.confluent import KafkaBroker, KafkaMessage, KafkaResponse

# FastStream logs "Received" and "Processed" for every message at ``log_level``;
# DEBUG keeps them out, as a service under load would (its logger stays at INFO).
broker = KafkaBroker(os.environ["BENCH_BROKERS"], log_level=logging.DEBUG)
app = FastStream(broker)


@broker.subscriber(
    os.environ["BENCH_IN"],
    group_id=os.environ["BENCH_GROUP"],
    auto_offset_reset="earliest",
    ack_policy=AckPolicy.ACK,
)
@broker.publisher(os.environ["BENCH_OUT"])
async def enrich(body: dict[str, Any], msg: KafkaMessage) -> KafkaResponse:
    body["total"] = body["price"] * body["qty"]
    return KafkaResponse(body, key=msg.raw_message.key())


if __name__ == "__main__":
    asyncio.run(app.run())
