"""``pipelines/example.py`` end to end on the real broker, exactly as users run it."""

from __future__ import annotations

import signal
from collections import defaultdict
from collections.abc import Callable

import orjson

from pipelines import example
from streamkit import App
from streamkit.pytest_plugin import NameFactory
from tests.integration.helpers import (
    WorkerProcess,
    committed,
    end_offsets,
    produce,
    read_topic,
    wait_until_committed,
)

N = 20_000
KEYS = 250


def test_example_doubles_every_record_once_keeping_keys_and_order(
    kafka_bootstrap: str,
    fresh_topics: Callable[[App], None],
    start_worker: Callable[..., WorkerProcess],
    unique_name: NameFactory,
) -> None:
    fresh_topics(example.app)
    # n counts up per key, so per-key order is visible in the output.
    inputs = [
        (f"user-{i % KEYS}".encode(), orjson.dumps({"id": i, "n": i // KEYS})) for i in range(N)
    ]
    produce(kafka_bootstrap, example.source.name, inputs)
    group = unique_name("example")
    worker = start_worker("pipelines.example:app", STREAMKIT_GROUP_ID=group)

    out = read_topic(kafka_bootstrap, example.sink.name, N)
    values = [orjson.loads(r.value or b"") for r in out]
    assert sorted(v["id"] for v in values) == list(range(N)), "not exactly one output per input"
    seen: dict[bytes, list[int]] = defaultdict(list)
    for record, value in sorted(
        zip(out, values, strict=True), key=lambda rv: (rv[0].partition, rv[0].offset)
    ):
        assert value["n"] == 2 * (value["id"] // KEYS)
        assert record.key == f"user-{value['id'] % KEYS}".encode()
        seen[record.key].append(value["id"])
    for key, ids in seen.items():
        assert ids == sorted(ids), f"order broken for key {key!r}"

    wait_until_committed(kafka_bootstrap, group, example.source.name, worker)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()[-2000:]
    log = worker.output()
    for line in ('"event": "started"', '"event": "partitions assigned"', '"event": "stopped"'):
        assert line in log
    ends = end_offsets(kafka_bootstrap, example.source.name)
    assert committed(kafka_bootstrap, group, example.source.name, len(ends)) == ends
