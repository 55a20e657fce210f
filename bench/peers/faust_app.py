"""faust-streaming contender: one agent iterating its stream, as the faust docs show.

Runs in bench/.venvs/faust. Environment: BENCH_BROKERS, BENCH_IN, BENCH_OUT, BENCH_GROUP;
for the I/O-bound workload BENCH_IO_MS (an ``asyncio.sleep`` per record) and
BENCH_CONCURRENCY (faust's ``concurrency``: that many agent instances).
faust acks an event when the agent moves on to the next one and commits acked
offsets every ``broker_commit_every`` events or ``broker_commit_interval`` seconds.
"""

import asyncio
import os

import faust

IO_S = float(os.environ.get("BENCH_IO_MS", "0")) / 1000

app = faust.App(
    os.environ["BENCH_GROUP"],
    broker=f"kafka://{os.environ['BENCH_BROKERS']}",
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    topic_partitions=6,
)
source = app.topic(os.environ["BENCH_IN"], key_serializer="raw", value_serializer="json")
sink = app.topic(os.environ["BENCH_OUT"], key_serializer="raw", value_serializer="json")


@app.agent(source, concurrency=int(os.environ.get("BENCH_CONCURRENCY", "1")))
async def enrich(stream):
    async for key, value in stream.items():
        if IO_S:
            await asyncio.sleep(IO_S)  # the other service's answer
        value["total"] = value["price"] * value["qty"]
        await sink.send(key=key, value=value)


if __name__ == "__main__":
    faust.Worker(app, loglevel="warning").execute_from_commandline()
