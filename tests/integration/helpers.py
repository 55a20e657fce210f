"""Helpers for integration tests: produce, read back, inspect groups, run workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parents[2]
# The env-configurable pipeline most worker tests run (see its docstring).
APP = "tests.integration.apps.configurable:app"
KEYS = 97
# A killed worker's partitions move after this long (classic protocol); the
# test broker sets the KIP-848 equivalent broker-side. Only tests that kill
# or add members need it: the default, 45 s, would dominate their run time.
FAST_FAILOVER = {"STREAMKIT_SESSION_TIMEOUT_MS": "6000"}


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    headers: list[tuple[str, bytes]]
    timestamp: int = 0


def produce(bootstrap: str, topic: str, records: list[tuple[Any, bytes]], **conf: Any) -> None:
    """Produce and wait until every record is acknowledged."""
    # Idempotent: retries after NOT_LEADER (common right after topic creation)
    # must not reorder records, or per-key order tests fail for the wrong reason.
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True, **conf}
    )
    failures: list[Any] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    for key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0, "records still queued after 60 s"
    assert not failures, failures[:3]


def read_topic(
    bootstrap: str, topic: str, expected: int, timeout: float = 60.0, idle: float = 1.0
) -> list[Record]:
    """Read a topic from the start until ``expected`` records and ``idle`` s of quiet.

    Reading on past ``expected`` for a short quiet spell catches duplicates
    and stray records instead of stopping exactly at the count.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    out: list[Record] = []
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msgs = consumer.consume(1000, timeout=0.2)
            if msgs:
                quiet_since = time.monotonic()
            for m in msgs:
                assert m.error() is None, m.error()
                partition, offset = m.partition(), m.offset()
                assert partition is not None and offset is not None
                record = Record(m.key(), m.value(), partition, offset, m.headers() or [])
                record.timestamp = m.timestamp()[1]
                out.append(record)
            if len(out) >= expected and time.monotonic() - quiet_since >= idle:
                break
    finally:
        consumer.close()
    return out


def committed(
    bootstrap: str, group: str, topic: str, partitions: int, **conf: Any
) -> dict[int, int]:
    """The group's committed offsets per partition (-1001 when none).

    Retries while the group's coordinator is still being found or loaded
    (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS), as for a group asked
    about for the first time on a busy broker. ``conf`` adds client
    properties, as for a secured broker.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, **conf, "group.id": group})
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                result = consumer.committed(
                    [TopicPartition(topic, p) for p in range(partitions)], timeout=10
                )
                return {tp.partition: tp.offset for tp in result}
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        consumer.close()


class WorkerProcess:
    """A ``streamkit run`` subprocess with its output captured to a file."""

    def __init__(self, target: str, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamkit", "run", target],
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"worker never logged {text!r}; output:\n{self.output()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if not self._log.closed:
            self._log.close()


def delete_topics(admin: AdminClient, names: list[str], timeout: float = 60.0) -> None:
    """Delete the topics that exist and wait until the metadata forgets them.

    Deletion is acknowledged before the broker's metadata drops the topics;
    recreating them earlier would silently find the old ones.
    """
    present = sorted(set(admin.list_topics(timeout=timeout).topics) & set(names))
    if not present:
        return
    for future in admin.delete_topics(present, operation_timeout=timeout).values():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            error = exc.args[0]
            if not (
                isinstance(error, KafkaError) and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            ):
                raise
    deadline = time.monotonic() + timeout
    while set(admin.list_topics(timeout=timeout).topics) & set(present):
        assert time.monotonic() < deadline, f"topics {present} still exist after deletion"
        time.sleep(0.05)


def end_offsets(bootstrap: str, topic: str, timeout: float = 60.0, **conf: Any) -> dict[int, int]:
    """The high watermark of every partition of ``topic``; ``conf`` adds client properties."""
    consumer = Consumer({"bootstrap.servers": bootstrap, **conf, "group.id": "end-offsets-probe"})
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def wait_until_committed(
    bootstrap: str,
    group: str,
    topic: str,
    worker: WorkerProcess,
    timeout: float = 60.0,
    transactional: bool = False,
    **conf: Any,
) -> None:
    """Poll until ``group`` has committed every record of ``topic``, failing fast if
    the worker exits.

    A ``transactional`` topic ends with its last commit marker, which a
    consumer steps past only when something follows: one offset short is all.
    ``conf`` adds client properties, as for a secured broker.
    """
    ends = end_offsets(bootstrap, topic, **conf)
    slack = 1 if transactional else 0
    deadline = time.monotonic() + timeout
    while True:
        positions = committed(bootstrap, group, topic, len(ends), **conf)
        if all(positions[p] >= end - slack for p, end in ends.items()):
            return
        assert worker.proc.poll() is None, f"worker exited early:\n{worker.output()[-3000:]}"
        assert time.monotonic() < deadline, f"not drained: committed {positions}, ends {ends}"
        time.sleep(0.1)


def keyed_records(n: int) -> list[tuple[bytes, bytes]]:
    """``n`` JSON records over ``KEYS`` keys; ``n`` counts up per key to check order."""
    per_key: Counter[int] = Counter()
    out = []
    for i in range(n):
        k = i % KEYS
        out.append((f"k{k}".encode(), json.dumps({"id": i, "n": per_key[k]}).encode()))
        per_key[k] += 1
    return out


def topic_size(bootstrap: str, topic: str, timeout: float = 30.0, **conf: Any) -> int:
    """Records in ``topic`` (sum of high watermarks); ``conf`` adds client properties.

    Retries NOT_LEADER and the like: right after creation, or while the
    machine is loaded, a partition's leader can take a moment to answer.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, **conf, "group.id": "size-probe"})
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                meta = consumer.list_topics(topic, timeout=10).topics[topic]
                return sum(
                    consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in meta.partitions
                )
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        consumer.close()


def command_env(bootstrap: str, **env: str) -> dict[str, str]:
    """This process's environment for a CLI command on the test broker, plus ``env``.

    ``PYTHONPATH`` is the repository root, so ``tests.integration.apps.*``
    targets import as they do for a worker.
    """
    return {**os.environ, "STREAMKIT_BROKERS": bootstrap, "PYTHONPATH": str(ROOT), **env}


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def owned_at_end(worker: WorkerProcess) -> set[int]:
    """Partitions a worker owned when it stopped, replayed from its lifecycle log."""
    owned: set[int] = set()
    for line in worker.output().splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        parts = {
            int(p.rsplit("[", 1)[1].rstrip("]"))
            for p in str(event.get("partitions", "")).split(", ")
            if "[" in p
        }
        if event.get("event") == "partitions assigned":
            owned |= parts
        elif str(event.get("event", "")).startswith(("partitions revoked", "partitions lost")):
            owned -= parts
    return owned


def assigned_count(worker: WorkerProcess) -> int:
    return len(owned_at_end(worker))
