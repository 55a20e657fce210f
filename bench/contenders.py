"""What each benchmark contender runs: the same decode, add a field, encode, produce.

Each contender is a module-level function run in its own process, so they
share nothing but the broker. ``raw_loop`` is the hand-written
confluent-kafka ceiling: batched consume, produce, store offsets only after
delivery, periodic commit.
"""

from __future__ import annotations

from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from streamkit import App


def transform(value: dict[str, Any]) -> dict[str, Any]:
    value["total"] = value["price"] * value["qty"]
    return value


def raw_loop(bootstrap: str, source: str, sink: str, group: str, n: int) -> None:
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

    def on_delivery(err: Any, msg: Any, src: Any = None) -> None:
        pass

    pending: list[TopicPartition] = []
    while done < n:
        msgs = consumer.consume(500, timeout=0.5)
        for msg in msgs:
            if msg.error():
                continue
            out = orjson.dumps(transform(orjson.loads(msg.value())))
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


def streamkit_app(source: str, sink: str, group: str, is_async: bool) -> App:
    app = App(group, group_id=group)
    src = app.topic(source, value_serde="json", key_serde="bytes")
    out = app.topic(sink, value_serde="json", key_serde="bytes")
    if is_async:

        @app.agent(src, emits=[out], name="enrich")
        async def enrich_async(value: dict[str, Any]) -> dict[str, Any]:
            return transform(value)

    else:

        @app.agent(src, emits=[out], name="enrich")
        def enrich(value: dict[str, Any]) -> dict[str, Any]:
            return transform(value)

    return app
