import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest

from streamkit import AgentError, App, Context, DeclarationError
from streamkit.runtime.codecs import Codec
from streamkit.runtime.offsets import PartitionOffsets
from streamkit.runtime.processor import Processor, compile_agent
from streamkit.serde import JsonSerde, StrSerde
from tests.unit.runtime.fakes import FakeMessage, FakeProducer

JSON = Codec(key=StrSerde(), value=JsonSerde())


def build(app: App, name: str, producer: FakeProducer) -> Processor:
    agent = app.agents[name]
    targets = {t.name: JSON for t in app.emit_targets(agent)}
    return compile_agent(agent, JSON, targets, producer)


def run(processor: Processor, msg: FakeMessage, offsets: PartitionOffsets) -> None:
    ticket = offsets.start(msg.offset())
    if processor.sync is not None:
        processor.sync(msg, ticket)
    else:
        assert processor.run_async is not None
        asyncio.run(processor.run_async(msg, ticket))


@pytest.fixture
def app() -> App:
    app = App("t", brokers="127.0.0.1:9092")
    app.topic("out1")
    app.topic("out2")
    return app


def values(producer: FakeProducer) -> list[tuple[str, Any, bytes | None]]:
    return [(s["topic"], orjson.loads(s["value"]), s["key"]) for s in producer.sent]


def test_returned_value_goes_to_every_target_with_input_key(app: App) -> None:
    @app.agent(app.topic("in"), emits=["out1", "out2"])
    def f(value: Any) -> Any:
        return {"n": value["n"] + 1}

    producer = FakeProducer()
    offsets = PartitionOffsets()
    run(build(app, "f", producer), FakeMessage(b'{"n": 1}', key=b"abc", offset=7), offsets)
    assert values(producer) == [("out1", {"n": 2}, b"abc"), ("out2", {"n": 2}, b"abc")]
    assert offsets.advance() is None, "committable before the broker acknowledged"
    producer.poll()
    assert offsets.advance() == 8


@pytest.mark.parametrize(
    ("result", "expected"),
    [(None, []), ([1, 2, 3], [1, 2, 3]), ({"a": 1}, [{"a": 1}])],
)
def test_return_rules(app: App, result: Any, expected: list[Any]) -> None:
    @app.agent(app.topic("in"), emits=["out1"])
    def f(value: Any) -> Any:
        return result

    producer = FakeProducer()
    offsets = PartitionOffsets()
    run(build(app, "f", producer), FakeMessage(b"{}"), offsets)
    assert [v for _, v, _ in values(producer)] == expected
    producer.poll()
    assert offsets.advance() == 1


@pytest.mark.parametrize("targets", [["out1"], ["out1", "out2"]])
def test_emits_are_counted_per_target(app: App, targets: list[str]) -> None:
    # One target takes the flattened path, two the general one: same counts.
    @app.agent(app.topic("in"), emits=targets)
    def f(value: Any) -> Any:
        return [value, value] if value else None

    producer = FakeProducer()
    processor = build(app, "f", producer)
    for raw in (b"1", b"0", b"2"):
        run(processor, FakeMessage(raw), PartitionOffsets())
    assert processor.emitter is not None
    assert processor.emitter.emitted == dict.fromkeys(targets, 4)


def test_generator_and_async_generator(app: App) -> None:
    @app.agent(app.topic("in"), emits=["out1"])
    def gen(value: Any) -> Iterator[int]:
        yield from range(value)

    @app.agent(app.topic("in2"), emits=["out1"])
    async def agen(value: Any) -> AsyncIterator[int]:
        for i in range(value):
            await asyncio.sleep(0)
            yield i * 10

    producer = FakeProducer()
    run(build(app, "gen", producer), FakeMessage(b"3"), PartitionOffsets())
    run(build(app, "agen", producer), FakeMessage(b"2"), PartitionOffsets())
    assert [v for _, v, _ in values(producer)] == [0, 1, 2, 0, 10]


def test_ctx_emit_with_explicit_key_and_headers(app: App) -> None:
    @app.agent(app.topic("in"), emits=["out1", "out2"])
    async def route(value: Any, ctx: Context) -> None:
        assert (ctx.topic, ctx.partition, ctx.offset, ctx.key) == ("in", 0, 3, "k1")
        ctx.emit("out2", value, key="other", headers=[("h", b"1")])
        ctx.emit("out1", value)

    producer = FakeProducer()
    run(build(app, "route", producer), FakeMessage(b"5", key=b"k1", offset=3), PartitionOffsets())
    assert [(s["topic"], s["key"], s["headers"]) for s in producer.sent] == [
        ("out2", b"other", [("h", b"1")]),
        ("out1", b"k1", None),
    ]


def test_ctx_emit_to_undeclared_topic_stops_instead_of_dead_lettering(app: App) -> None:
    @app.agent(app.topic("in"), emits=["out1"])
    def f(value: Any, ctx: Context) -> None:
        ctx.emit("out2", value)

    # The code's mistake, not the record's: retrying or dead-lettering would
    # only move every record to the dead-letter topic.
    with pytest.raises(DeclarationError, match="not in this agent's emits"):
        run(build(app, "f", FakeProducer()), FakeMessage(b"1", offset=9), PartitionOffsets())


def test_malformed_input_names_the_record(app: App) -> None:
    @app.agent(app.topic("in"), emits=["out1"])
    def f(value: Any) -> Any:
        return value

    offsets = PartitionOffsets()
    with pytest.raises(AgentError) as info:
        run(build(app, "f", FakeProducer()), FakeMessage(b"{nope", partition=2, offset=41), offsets)
    assert (info.value.topic, info.value.partition, info.value.offset) == ("in", 2, 41)
    assert "cannot decode value" in str(info.value)
    assert offsets.advance() is None


def test_agent_exception_keeps_offset_uncommitted(app: App) -> None:
    @app.agent(app.topic("in"), emits=["out1"])
    def f(value: Any) -> Any:
        raise ValueError("boom")

    offsets = PartitionOffsets()
    with pytest.raises(AgentError, match="agent f raised ValueError"):
        run(build(app, "f", FakeProducer()), FakeMessage(b"1"), offsets)
    assert offsets.advance() is None
    blocked = offsets.blocked_by()
    assert blocked is not None and blocked.offset == 0


def test_tombstone_reaches_agent_as_none(app: App) -> None:
    seen: list[Any] = []

    @app.agent(app.topic("in"), emits=["out1"])
    def f(value: Any) -> None:
        seen.append(value)

    run(build(app, "f", FakeProducer()), FakeMessage(None), PartitionOffsets())
    assert seen == [None]


def test_full_producer_queue_waits_instead_of_dropping(app: App) -> None:
    @app.agent(app.topic("in"), emits=["out1"])
    def f(value: Any) -> Any:
        return value

    producer = FakeProducer(full_times=3)
    run(build(app, "f", producer), FakeMessage(b"1"), PartitionOffsets())
    assert len(producer.sent) == 1
    assert producer.polls >= 3


def test_failed_delivery_blocks_the_position(app: App) -> None:
    @app.agent(app.topic("in"), emits=["out1"])
    def f(value: Any) -> Any:
        return value

    producer = FakeProducer(fail_with="MSG_TIMED_OUT")
    offsets = PartitionOffsets()
    run(build(app, "f", producer), FakeMessage(b"1"), offsets)
    producer.poll()
    assert offsets.advance() is None
    failed = offsets.failed()
    assert failed is not None and failed.error == "MSG_TIMED_OUT"


def test_a_key_the_target_cannot_encode_names_the_target_topic(app: App) -> None:
    @app.agent(app.topic("in"), emits=["out1"])
    def f(value: Any, ctx: Context) -> None:
        ctx.emit("out1", value, key=123)

    with pytest.raises(AgentError, match="topic out1: str: accepts only str, got int 123"):
        run(build(app, "f", FakeProducer()), FakeMessage(b"1", offset=9), PartitionOffsets())
