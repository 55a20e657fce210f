from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from streamkit import App, DeclarationError
from streamkit.agent import Shape
from streamkit.context import Context


@pytest.fixture
def app() -> App:
    return App("t", brokers="127.0.0.1:9092")


def test_shapes_decided_at_declaration(app: App) -> None:
    src = app.topic("in")

    @app.agent(src, name="a")
    def plain(value: Any) -> Any:
        return value

    @app.agent(app.topic("in2"), name="b")
    async def coro(value: Any, ctx: Context) -> Any:
        return value

    @app.agent(app.topic("in3"), name="c")
    def gen(value: Any) -> Iterator[Any]:
        yield value

    @app.agent(app.topic("in4"), name="d")
    async def agen(value: Any, ctx: Context) -> AsyncIterator[Any]:
        yield value

    agents = app.agents
    assert (agents["a"].shape, agents["a"].is_async, agents["a"].takes_ctx) == (
        Shape.RETURN,
        False,
        False,
    )
    assert (agents["b"].shape, agents["b"].is_async, agents["b"].takes_ctx) == (
        Shape.RETURN,
        True,
        True,
    )
    assert (agents["c"].shape, agents["c"].is_async) == (Shape.GENERATOR, False)
    assert (agents["d"].shape, agents["d"].is_async) == (Shape.ASYNC_GENERATOR, True)


def test_decorator_returns_the_function_unchanged(app: App) -> None:
    def f(value: int) -> int:
        return value + 1

    assert app.agent(app.topic("in"))(f) is f
    assert f(1) == 2


@pytest.mark.parametrize(
    "fn",
    [lambda: None, lambda a, b, c: None],
    ids=["no-args", "three-args"],
)
def test_bad_signatures(app: App, fn: Callable[..., Any]) -> None:
    with pytest.raises(DeclarationError, match=r"\(value\) or \(value, ctx\)"):
        app.agent(app.topic("in"), name="x")(fn)


def test_concurrency_needs_async(app: App) -> None:
    with pytest.raises(DeclarationError, match="async def"):

        @app.agent(app.topic("in"), concurrency=4)
        def f(value: Any) -> Any:
            return value


def test_two_agents_on_one_topic_rejected(app: App) -> None:
    src = app.topic("in")
    app.agent(src, name="a")(lambda v: v)
    with pytest.raises(DeclarationError, match="both consume in"):
        app.agent(src, name="b")(lambda v: v)


def test_duplicate_agent_name(app: App) -> None:
    app.agent(app.topic("in"), name="a")(lambda v: v)
    with pytest.raises(DeclarationError, match="declared twice"):
        app.agent(app.topic("in2"), name="a")(lambda v: v)


def test_emit_to_undeclared_topic_fails_before_running(app: App) -> None:
    @app.agent(app.topic("in"), emits=["nowhere"])
    def f(value: Any) -> Any:
        return value

    with pytest.raises(DeclarationError, match=r"'nowhere'.*app.topic"):
        app.emit_targets(app.agents["f"])


def test_emits_by_name_resolve(app: App) -> None:
    out = app.topic("out")

    @app.agent(app.topic("in"), emits=["out"])
    def f(value: Any) -> Any:
        return value

    assert app.emit_targets(app.agents["f"]) == (out,)


def test_select_unknown_agent(app: App) -> None:
    app.agent(app.topic("in"), name="a")(lambda v: v)
    with pytest.raises(DeclarationError, match="unknown agent 'b'"):
        app.select(["b"])


def test_topic_redeclared_differently(app: App) -> None:
    app.topic("in", partitions=4)
    assert app.topic("in", partitions=4).partitions == 4
    with pytest.raises(DeclarationError, match="declared twice"):
        app.topic("in", partitions=8)


@pytest.mark.parametrize("name", ["", "has space", "x" * 250, ".."])
def test_invalid_topic_names(app: App, name: str) -> None:
    with pytest.raises(DeclarationError, match="invalid topic name"):
        app.topic(name)
