"""What each benchmark contender runs: the same decode, add a field, encode, produce.

Each contender is a module-level function run in its own process, so they
share nothing but the broker. ``raw_loop`` is the hand-written
confluent-kafka ceiling: batched consume, produce, store offsets only after
delivery, periodic commit.

Three workloads (``bench/README.md``):

- ``json``: ~150-byte JSON records, the transform adds ``total``.
- ``avro``: the same records in Avro (``bench/schemas/order.avsc``),
  single-object encoded as streamkit writes Avro without a registry.
- ``io``: the JSON workload with a simulated 1 ms call to another service
  (``await asyncio.sleep(IO_DELAY_S)``) per record, for async concurrency.
- ``cpu``: the JSON workload plus about 40 us of pure-Python work per
  record (:func:`busy`), an agent bound by its own CPU: what ``streamkit
  run --processes N`` is for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from streamkit import App

SCHEMAS = Path(__file__).resolve().parent / "schemas"
AVRO_VALUE = "avro:bench.Order"
IO_DELAY_S = 0.001
# Single-object encoding: C3 01 + 8-byte fingerprint, then the Avro body.
_AVRO_HEADER = 10

Codec = tuple[Callable[[bytes], Any], Callable[[Any], bytes]]


def transform(value: dict[str, Any]) -> dict[str, Any]:
    value["total"] = value["price"] * value["qty"]
    return value


# Iterations of busy(): about 40 us of one core per record on the bench
# machine, so one process makes about 20,000 records/s and the broker and
# librdkafka threads leave the second core to a second process.
BUSY_STEPS = 520


def busy(value: dict[str, Any]) -> dict[str, Any]:
    """The transform after CPU-bound work: a checksum a real agent might compute."""
    acc = 0
    for i in range(BUSY_STEPS):
        acc = (acc * 31 + i) & 0xFFFFFFFF
    value["check"] = acc
    return transform(value)


def json_codec() -> Codec:
    return orjson.loads, orjson.dumps


def avro_codec(header: bytes) -> Codec:
    """fastavro by hand; ``header`` is the input's own prefix (same schema in and out)."""
    schema = parse_schema(orjson.loads((SCHEMAS / "order.avsc").read_bytes()))

    def decode(data: bytes) -> Any:
        return schemaless_reader(BytesIO(data[_AVRO_HEADER:]), schema, None)

    def encode(value: Any) -> bytes:
        out = BytesIO(header)
        out.seek(_AVRO_HEADER)
        schemaless_writer(out, schema, value)
        return out.getvalue()

    return decode, encode


def raw_loop(
    bootstrap: str, source: str, sink: str, group: str, n: int, workload: str = "json"
) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
            "partition.assignment.strategy": "cooperative-sticky",
        }
    )
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    consumer.subscribe([source])
    done = 0
    # Avro's header comes from the first record; JSON needs nothing from it.
    decode: Callable[[bytes], Any] | None = None
    encode: Callable[[Any], bytes] = orjson.dumps
    if workload == "json":
        decode, encode = json_codec()

    pending: list[TopicPartition] = []
    while done < n:
        msgs = consumer.consume(500, timeout=0.5)
        for msg in msgs:
            if msg.error():
                continue
            if decode is None:
                decode, encode = avro_codec(msg.value()[:_AVRO_HEADER])
            out = encode(transform(decode(msg.value())))
            while True:
                try:
                    producer.produce(sink, out, msg.key())
                    break
                except BufferError:
                    producer.poll(0.05)
            pending.append(TopicPartition(msg.topic(), msg.partition(), msg.offset() + 1))
        done += len(msgs)
        producer.poll(0)
        if len(pending) >= 5000:
            # Store offsets only once everything before them is delivered.
            producer.flush()
            consumer.store_offsets(offsets=pending)
            pending = []
    producer.flush()
    if pending:
        consumer.store_offsets(offsets=pending)
    consumer.close()


def streamkit_app(
    source: str,
    sink: str,
    group: str,
    is_async: bool,
    *,
    workload: str = "json",
    concurrency: int = 1,
) -> App:
    app = App(group, group_id=group, schemas_dir=str(SCHEMAS))
    serde = AVRO_VALUE if workload == "avro" else "json"
    src = app.topic(source, value_serde=serde, key_serde="bytes")
    out = app.topic(sink, value_serde=serde, key_serde="bytes")
    if workload == "io":

        @app.agent(src, emits=[out], name="enrich", concurrency=concurrency)
        async def enrich_io(value: dict[str, Any]) -> dict[str, Any]:
            await asyncio.sleep(IO_DELAY_S)  # the other service's answer
            return transform(value)

    elif is_async:

        @app.agent(src, emits=[out], name="enrich")
        async def enrich_async(value: dict[str, Any]) -> dict[str, Any]:
            return transform(value)

    elif workload == "cpu":

        @app.agent(src, emits=[out], name="enrich")
        def enrich_cpu(value: dict[str, Any]) -> dict[str, Any]:
            return busy(value)

    else:

        @app.agent(src, emits=[out], name="enrich")
        def enrich(value: dict[str, Any]) -> dict[str, Any]:
            return transform(value)

    return app
