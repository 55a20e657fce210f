"""The partition worker driven directly on an event loop, with a fake producer."""

import asyncio
import random
from typing import Any

import orjson

from streamkit import App
from streamkit.runtime.codecs import Codec
from streamkit.runtime.partition import PartitionWorker
from streamkit.runtime.processor import compile_agent
from streamkit.serde import JsonSerde, StrSerde
from streamkit.types import TopicPartition
from tests.unit.runtime.fakes import FakeMessage, FakeProducer

JSON = Codec(key=StrSerde(), value=JsonSerde())


def make_worker(
    app: App, name: str, producer: FakeProducer, failures: list[BaseException]
) -> PartitionWorker:
    agent = app.agents[name]
    processor = compile_agent(agent, JSON, {"out": JSON}, producer)

    def after_slice(n: int) -> None:
        producer.poll()

    return PartitionWorker(TopicPartition("in", 0), processor, failures.append, after_slice)


def messages(n: int, keys: int) -> list[FakeMessage]:
    return [
        FakeMessage(orjson.dumps({"id": i}), key=f"k{i % keys}".encode(), offset=i)
        for i in range(n)
    ]


async def until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)


def test_concurrency_bounds_in_flight_keeps_key_order_and_commits_contiguously() -> None:
    app = App("t", brokers="127.0.0.1:9092")
    app.topic("out")
    running: set[str] = set()
    peak = 0
    order: dict[str, list[int]] = {}
    rng = random.Random(7)
    delays = [rng.uniform(0, 0.003) for _ in range(400)]

    @app.agent(app.topic("in"), emits=["out"], concurrency=16)
    async def slow(value: Any, ctx: Any) -> Any:
        nonlocal peak
        key = ctx.key
        assert key not in running, f"two records of key {key} ran at once"
        running.add(key)
        peak = max(peak, len(running))
        await asyncio.sleep(delays[value["id"]])
        running.discard(key)
        order.setdefault(key, []).append(value["id"])
        return value

    async def scenario() -> None:
        producer, failures = FakeProducer(), list[BaseException]()
        worker = make_worker(app, "slow", producer, failures)
        worker.start()
        worker.feed(messages(400, keys=40))
        await until(lambda: worker.offsets.to_commit() == 400)
        assert await worker.drain(1.0)
        assert failures == []

    asyncio.run(scenario())
    assert 1 < peak <= 16
    assert all(ids == sorted(ids) for ids in order.values())
    assert sum(len(ids) for ids in order.values()) == 400


def test_a_held_record_holds_back_the_commit_position_only() -> None:
    app = App("t", brokers="127.0.0.1:9092")
    app.topic("out")
    release = asyncio.Event()
    done: list[int] = []

    @app.agent(app.topic("in"), emits=["out"], concurrency=8)
    async def hold(value: Any) -> Any:
        if value["id"] == 3:
            await release.wait()
        done.append(value["id"])
        return value

    async def scenario() -> None:
        producer, failures = FakeProducer(), list[BaseException]()
        worker = make_worker(app, "hold", producer, failures)
        worker.start()
        worker.feed(messages(20, keys=20))
        await until(lambda: len(done) == 19)
        # Everything after offset 3 finished, yet the position stops at 3.
        assert worker.offsets.to_commit() == 3
        release.set()
        await until(lambda: worker.offsets.to_commit() == 20)
        assert failures == []

    asyncio.run(scenario())


def test_drain_abandons_records_past_the_deadline() -> None:
    app = App("t", brokers="127.0.0.1:9092")
    app.topic("out")

    @app.agent(app.topic("in"), emits=["out"], concurrency=4)
    async def forever(value: Any) -> Any:
        await asyncio.Event().wait()

    async def scenario() -> None:
        worker = make_worker(app, "forever", FakeProducer(), [])
        worker.start()
        worker.feed(messages(4, keys=4))
        await until(lambda: worker.taken == 4)
        assert await worker.drain(0.05) is False
        assert worker.offsets.to_commit() is None

    asyncio.run(scenario())


def test_sync_agent_failure_is_reported_and_stops_the_partition() -> None:
    app = App("t", brokers="127.0.0.1:9092")
    app.topic("out")

    @app.agent(app.topic("in"), emits=["out"])
    def boom(value: Any) -> Any:
        if value["id"] == 2:
            raise RuntimeError("bad")
        return value

    async def scenario() -> list[BaseException]:
        producer, failures = FakeProducer(), list[BaseException]()
        worker = make_worker(app, "boom", producer, failures)
        worker.start()
        worker.feed(messages(5, keys=5))
        await until(lambda: bool(failures))
        producer.poll()  # the shutdown flush that follows a failure
        assert worker.offsets.to_commit() == 2
        return failures

    failures = asyncio.run(scenario())
    assert "offset=2" in str(failures[0])


def test_records_fed_while_waiting_on_the_clock_wake_the_partition_at_once() -> None:
    # The wait created its "woken" task, which cleared the wakeup event only
    # when it first ran: a feed() in between was forgotten, and the
    # partition slept until the clock's due time with records buffered (a
    # window's idle wait, or a retry tier's not-yet-due head).
    app = App("t", brokers="127.0.0.1:9092")
    app.topic("out")

    @app.agent(app.topic("in"), emits=["out"])
    def forward(value: Any) -> Any:
        return value

    async def scenario() -> None:
        worker = make_worker(app, "forward", FakeProducer(), [])
        loop = asyncio.get_running_loop()
        waiting = loop.create_task(worker._wait_until(worker._clock.time() + 3600))
        loop.call_soon(worker.feed, messages(1, keys=1))  # lands between the two steps
        await asyncio.wait_for(waiting, 2.0)

    asyncio.run(scenario())
