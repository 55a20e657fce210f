"""Two ways to run the same contract: the in-memory broker and a real one.

Both drivers run real workers (:class:`~streamkit.runtime.worker.Worker`) in this
process, on a :class:`~streamkit.runtime.host.WorkerThread`, with the same
settings; only the backend differs. A "crash" makes a worker's clients dead
at once (nothing more is committed, acknowledged or revoked) and then stops
it: on the memory broker through its clients' ``crash()``, on Kafka through
a thin wrapper, since librdkafka has no such switch. The new worker then
starts at whatever the group committed, on either broker.
"""

from __future__ import annotations

import gc
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamkit import App
from streamkit.backends.base import Backend
from streamkit.backends.kafka import KafkaBackend
from streamkit.backends.memory import MemoryBackend, MemoryConsumer, MemoryProducer
from streamkit.backends.memory_broker import MemoryBroker
from streamkit.config import AppConfig
from streamkit.pytest_plugin import NameFactory, TopicFactory
from streamkit.runtime.host import WorkerThread
from streamkit.runtime.worker import Worker

# Long enough for a group join on a loaded CI machine; a healthy run needs
# a fraction of it, and a failure names what it waited for.
WAIT_S = 30.0


@dataclass(frozen=True)
class Stored:
    """A record read back from a topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Running:
    """A worker started by a driver."""

    worker: Worker
    future: Any  # concurrent.futures.Future[int]

    def exit_code(self, timeout: float = WAIT_S) -> int:
        code: int = self.future.result(timeout)
        return code

    def partitions(self, thread: WorkerThread) -> set[tuple[str, int]]:
        return thread.call(lambda: {(tp[0], tp[1]) for tp in self.worker.workers}, WAIT_S)


class Cluster(Protocol):
    """What a contract test needs from a broker, whichever it is."""

    name: str
    thread: WorkerThread

    def topic(self, partitions: int) -> str: ...
    def named_topic(self, name: str, partitions: int, config: dict[str, str]) -> str: ...
    def group(self) -> str: ...
    def produce(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None: ...
    def read(self, topic: str) -> list[Stored]: ...
    def committed(self, group: str, topic: str) -> dict[int, int]: ...
    def end_offsets(self, topic: str) -> dict[int, int]: ...
    def start(self, app: App, **settings: Any) -> Running: ...
    def stop(self, running: Running) -> int: ...
    def crash(self, running: Running) -> None: ...
    def wait_until(self, check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None: ...
    def close(self) -> None: ...


class _Base:
    name = "base"

    def __init__(self, backend: Backend, brokers: str) -> None:
        self.thread = WorkerThread(f"contract-{self.name}")
        self._backend = backend
        self._brokers = brokers
        self._running: list[Running] = []

    def start(self, app: App, **settings: Any) -> Running:
        config = AppConfig.load(
            app.name, {**app.settings, "brokers": self._brokers, **settings}, env={}
        )
        worker = Worker(app, app.select(), config, backend=self._backend, handle_signals=False)
        running = Running(worker, self.thread.start(worker))
        self._running.append(running)
        return running

    def stop(self, running: Running) -> int:
        running.worker.stop()
        return running.exit_code()

    def close(self) -> None:
        try:
            for running in self._running:
                running.worker.stop()
            for running in self._running:
                running.future.result(WAIT_S)
        finally:
            self._running.clear()  # let the clients go before the broker does
            self.thread.close()


class MemoryCluster(_Base):
    """The in-memory broker, on the real clock (as the Kafka driver is)."""

    name = "memory"

    def __init__(self) -> None:
        self.broker = MemoryBroker()
        super().__init__(MemoryBackend(self.broker), "memory:9092")
        self._names = 0

    def topic(self, partitions: int) -> str:
        self._names += 1
        name = f"topic-{self._names}"
        self.broker.create_topic(name, partitions)
        return name

    def named_topic(self, name: str, partitions: int, config: dict[str, str]) -> str:
        self.broker.create_topic(name, partitions)  # configs mean nothing to the memory broker
        return name

    def group(self) -> str:
        self._names += 1
        return f"group-{self._names}"

    def produce(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
        producer = MemoryProducer(self.broker)
        for key, value in records:
            producer.produce(topic, value=value, key=key)
        producer.flush()

    def read(self, topic: str) -> list[Stored]:
        return [
            Stored(m.partition(), m.offset(), m.key(), m.value())
            for m in self.broker.messages(topic)
        ]

    def committed(self, group: str, topic: str) -> dict[int, int]:
        return {tp.partition: o for tp, o in self.broker.committed(group, topic).items()}

    def end_offsets(self, topic: str) -> dict[int, int]:
        return self.broker.end_offsets(topic)

    def crash(self, running: Running) -> None:
        consumer, producer = running.worker.consumer, running.worker.producer
        assert isinstance(consumer, MemoryConsumer) and isinstance(producer, MemoryProducer)
        consumer.crash()
        producer.crash()
        self.stop(running)

    def wait_until(self, check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        # Event-driven: every commit, poll and membership change wakes us.
        deadline = time.monotonic() + timeout
        broker = self.broker
        while True:
            with broker.progress:
                seen = broker.progress_seq
            if check():
                return
            with broker.progress:
                while broker.progress_seq == seen:
                    remaining = deadline - time.monotonic()
                    assert remaining > 0, f"{self.name}: timed out waiting for {what}"
                    broker.progress.wait(remaining)


class _Crashable:
    """Wraps a librdkafka client; after ``crash()`` nothing more reaches the broker."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.crashed = False
        self._woken = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def crash(self) -> None:
        self.crashed = True
        self._woken.set()


class _CrashableConsumer(_Crashable):
    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        if self.crashed:
            # A dead process polls nothing; wait for the worker's next command.
            self._woken.wait(timeout if timeout >= 0 else None)
            self._woken.clear()
            return []
        msgs: list[Any] = self._client.consume(num_messages=num_messages, timeout=timeout)
        return msgs

    def wake_consume(self) -> None:
        if self.crashed:
            self._woken.set()

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        if self.crashed:
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_MEMBER_ID, "crashed"))
        return self._client.commit(*args, **kwargs)


class _CrashableProducer(_Crashable):
    def produce(self, *args: Any, **kwargs: Any) -> None:
        if not self.crashed:
            self._client.produce(*args, **kwargs)

    def poll(self, timeout: float = 0) -> int:
        return 0 if self.crashed else int(self._client.poll(timeout))

    def flush(self, timeout: float = -1) -> int:
        return 0 if self.crashed else int(self._client.flush(timeout))

    def bury(self) -> None:
        """What the dead process still had queued dies with it."""
        self._client.purge()
        self._client.flush(0)


class _CrashableKafkaBackend(KafkaBackend):
    def consumer(self, config: AppConfig, **callbacks: Any) -> Any:
        return _CrashableConsumer(super().consumer(config, **callbacks))

    def producer(self, config: AppConfig, **callbacks: Any) -> Any:
        return _CrashableProducer(super().producer(config, **callbacks))


class KafkaCluster(_Base):
    """A real broker (the pytest plugin's ``kafka_bootstrap``)."""

    name = "kafka"

    def __init__(self, bootstrap: str, new_topic: TopicFactory, unique_name: NameFactory) -> None:
        super().__init__(_CrashableKafkaBackend(), bootstrap)
        self._bootstrap = bootstrap
        self._new_topic = new_topic
        self._unique_name = unique_name

    def topic(self, partitions: int) -> str:
        return self._new_topic(partitions=partitions)

    def named_topic(self, name: str, partitions: int, config: dict[str, str]) -> str:
        return self._new_topic(partitions=partitions, name=name, config=config)

    def group(self) -> str:
        return self._unique_name("group")

    def produce(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
        # The client's default partitioner, untouched: that is what the
        # memory broker must match.
        producer = Producer({"bootstrap.servers": self._bootstrap, "linger.ms": 5})
        failures: list[Any] = []
        for key, value in records:
            producer.produce(
                topic,
                value=value,
                key=key,
                on_delivery=lambda e, _m: failures.append(e) if e else None,
            )
        assert producer.flush(WAIT_S) == 0
        assert not failures, failures[:3]

    def _consumer(self) -> Consumer:
        return Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": self._unique_name("reader"),
                "enable.auto.commit": False,
            }
        )

    def read(self, topic: str) -> list[Stored]:
        ends = self.end_offsets(topic)
        consumer = self._consumer()
        out: list[Stored] = []
        try:
            consumer.assign([KafkaTopicPartition(topic, p, 0) for p in ends])
            seen = dict.fromkeys(ends, 0)
            deadline = time.monotonic() + WAIT_S
            while any(seen[p] < end for p, end in ends.items()):
                assert time.monotonic() < deadline, f"could not read {topic} to its end"
                for m in consumer.consume(1000, timeout=0.5):
                    assert m.error() is None, m.error()
                    p, o = m.partition() or 0, m.offset() or 0
                    out.append(Stored(p, o, m.key(), m.value()))
                    seen[p] = o + 1
        finally:
            consumer.close()
        return sorted(out, key=lambda s: (s.partition, s.offset))

    def committed(self, group: str, topic: str) -> dict[int, int]:
        consumer = Consumer({"bootstrap.servers": self._bootstrap, "group.id": group})
        try:
            parts = [KafkaTopicPartition(topic, p) for p in self.end_offsets(topic)]
            return {
                tp.partition: tp.offset
                for tp in consumer.committed(parts, timeout=WAIT_S)
                if tp.offset >= 0
            }
        finally:
            consumer.close()

    def end_offsets(self, topic: str) -> dict[int, int]:
        consumer = self._consumer()
        try:
            meta = consumer.list_topics(topic, timeout=WAIT_S).topics[topic]
            return {
                p: consumer.get_watermark_offsets(KafkaTopicPartition(topic, p), timeout=WAIT_S)[1]
                for p in sorted(meta.partitions)
            }
        finally:
            consumer.close()

    def close(self) -> None:
        super().close()
        # Workers hold reference cycles; collect them now, or their librdkafka
        # clients outlive the session's broker and log connection errors.
        gc.collect()

    def crash(self, running: Running) -> None:
        consumer, producer = running.worker.consumer, running.worker.producer
        assert isinstance(consumer, _Crashable) and isinstance(producer, _Crashable)
        consumer.crash()
        producer.crash()
        self.stop(running)
        assert isinstance(producer, _CrashableProducer)
        producer.bury()

    def wait_until(self, check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        # A real broker announces nothing: ask again every 50 ms, bounded.
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"{self.name}: timed out waiting for {what}"
            time.sleep(0.05)


def default_partition(key: bytes, partitions: int) -> int:
    """librdkafka's ``consistent_random`` for a non-empty key, written out independently."""
    return zlib.crc32(key) % partitions
