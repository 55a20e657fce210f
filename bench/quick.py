"""Quick side-by-side throughput check: raw loop vs streamkit (sync, async).

Usage: python -m bench.quick BOOTSTRAP [N]
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
import uuid
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench import contenders
from streamkit.backends.kafka import ensure_topics
from streamkit.topics import Topic


def make_topic(admin: AdminClient, name: str, partitions: int) -> None:
    ensure_topics(admin, [Topic(name, partitions=partitions)])


def record(i: int) -> dict[str, Any]:
    """The i-th benchmark record: about 150 bytes of JSON, keyed ``k{i % 1000}``."""
    return {
        "id": i,
        "sku": f"sku-{i % 1000:05d}",
        "price": 19.99,
        "qty": i % 7 + 1,
        "customer": f"cust-{i % 5000:06d}",
        "note": "x" * 40,
    }


def fill(bootstrap: str, topic: str, n: int, *, avro: bool = False) -> None:
    """N keyed records of about 150 bytes: JSON, or Avro the way streamkit writes it."""
    encode = orjson.dumps
    if avro:
        from streamkit.serde import SchemaStore, resolve_serde

        store = SchemaStore(str(contenders.SCHEMAS))
        encode = resolve_serde(contenders.AVRO_VALUE, schemas=store).serialize
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(n):
        value = record(i)
        if avro:
            value["total"] = None  # the schema's optional output field
        while True:
            try:
                p.produce(topic, encode(value), f"k{i % 1000}".encode())
                break
            except BufferError:
                p.poll(0.05)
    p.flush()


def size(bootstrap: str, topic: str, parts: int) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "sz"})
    try:
        return sum(c.get_watermark_offsets(TopicPartition(topic, p))[1] for p in range(parts))
    except Exception:
        return 0  # partition leaders still settling right after creation
    finally:
        c.close()


EXTRA: dict = {}


def run_streamkit(bootstrap: str, source: str, sink: str, group: str, is_async: bool) -> None:
    app = contenders.streamkit_app(source, sink, group, is_async)
    app.run(brokers=bootstrap, create_topics=False, log_format="json", log_level="warning", **EXTRA)


def measure(name: str, target, args, bootstrap: str, sink: str, n: int) -> float:
    start = time.monotonic()
    proc = multiprocessing.Process(target=target, args=args)
    proc.start()
    while size(bootstrap, sink, 6) < n:
        time.sleep(0.05)
        if not proc.is_alive() and size(bootstrap, sink, 6) < n:
            raise SystemExit(f"{name} died")
    elapsed = time.monotonic() - start
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGTERM)
    proc.join(30)
    return elapsed


def main() -> None:
    bootstrap = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
    admin = AdminClient({"bootstrap.servers": bootstrap})
    run_id = uuid.uuid4().hex[:6]
    source = f"bench-{run_id}-in"
    make_topic(admin, source, 6)
    fill(bootstrap, source, n)
    results = {}
    for name in ["raw", "streamkit-sync", "streamkit-async"]:
        sink = f"bench-{run_id}-{name}-out"
        make_topic(admin, sink, 6)
        group = f"bench-{run_id}-{name}"
        if name == "raw":
            t = measure(
                name, contenders.raw_loop, (bootstrap, source, sink, group, n), bootstrap, sink, n
            )
        else:
            t = measure(
                name,
                run_streamkit,
                (bootstrap, source, sink, group, name.endswith("async")),
                bootstrap,
                sink,
                n,
            )
        results[name] = n / t
        print(f"{name}: {n / t:,.0f} records/s")
    for name, rate in results.items():
        print(f"{name}: {rate / results['raw']:.2f}x raw")
    admin.delete_topics([source] + [f"bench-{run_id}-{k}-out" for k in results])


if __name__ == "__main__":
    main()
