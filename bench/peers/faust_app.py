"""faust-streaming contender: one agent iterating its stream, as the faust docs show.

Runs in bench/.venvs/faust. Environment: BENCH_BROKERS, BENCH_IN, BENCH_OUT, BENCH_GROUP.
faust acks an event when the agent moves on to the next one and commits acked
offsets every ``broker_commit_every`` events or ``broker_commit_interval`` seconds.
"""

import os

import faust

app = faust.App(
    os.environ["BENCH_GROUP"],
    broker=f"kafka://{os.environ['BENCH_BROKERS']}",
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    topic_partitions=6,
)
source = app.topic(os.environ["BENCH_IN"], key_serializer="raw", value_serializer="json")
sink = app.topic(os.environ["BENCH_OUT"], key_serializer="raw", value_serializer="json")


@app.agent(source)
async def enrich(stream):
    async for key, value in stream.items():
        value["total"] = value["price"] * value["qty"]
        await sink.send(key=key, value=value)


if __name__ == "__main__":
    faust.Worker(app, loglevel="warning").execute_from_commandline()
