"""The smallest pipeline: double a number. Used by the README and the end-to-end tests."""

from streamkit import App

app = App(
    "example"
)  # group id = app name; brokers from STREAMKIT_BROKERS unless brokers="host:port" is given

source = app.topic("example.in", value_serde="json", partitions=4)
sink = app.topic("example.out", value_serde="json", partitions=4)


@app.agent(source, emits=[sink])
def double(value, ctx):  # ctx: key, headers, topic, partition, offset, timestamp, emit(...)
    return {"id": value["id"], "n": value["n"] * 2}
