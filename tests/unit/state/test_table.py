"""Table declarations: what stops an app at start, before anything connects."""

from __future__ import annotations

from typing import Any

import pytest

from streamkit import App, Context, DeclarationError, RetryPolicy


def counting_app(**table: Any) -> tuple[App, Any]:
    app = App("shop")
    return app, app.table("counts", **table)


def test_a_table_registers_its_compacted_changelog_with_the_sources_partitions() -> None:
    app, counts = counting_app(default=0)
    source = app.topic("orders", partitions=6)

    @app.agent(source, tables=[counts])
    def count(value: Any, ctx: Context) -> None:
        counts[ctx.key] += 1

    changelog = app.topics["shop.counts.changelog"]
    assert changelog.partitions == 6
    assert changelog.config["cleanup.policy"] == "compact"
    assert app.table_agent(counts) is app.agents["count"]


@pytest.mark.parametrize(
    ("table", "source", "agent", "message"),
    [
        ({"key_serde": "bytes"}, {}, {}, "key_serde 'bytes' and its source orders 'str'"),
        ({"partitions": 3}, {"partitions": 6}, {}, "3 partitions and its source orders 6"),
        ({}, {}, {"retry": RetryPolicy(retry_topics=(30,))}, "retry tiers"),
    ],
)
def test_a_table_that_cannot_follow_its_source_is_refused(
    table: dict[str, Any], source: dict[str, Any], agent: dict[str, Any], message: str
) -> None:
    app, counts = counting_app(**table)
    with pytest.raises(DeclarationError, match=message):
        app.agent(app.topic("orders", **source), tables=[counts], name="count", **agent)(
            lambda v: v
        )


def test_a_table_belongs_to_one_agent_of_its_own_app() -> None:
    app, counts = counting_app()
    app.agent(app.topic("a"), tables=[counts], name="first")(lambda v: v)
    with pytest.raises(DeclarationError, match="used by agents first and second"):
        app.agent(app.topic("b"), tables=[counts], name="second")(lambda v: v)
    _, theirs = counting_app()
    with pytest.raises(DeclarationError, match="not declared by app shop"):
        app.agent(app.topic("c"), tables=[theirs], name="third")(lambda v: v)
    with pytest.raises(DeclarationError, match="declared twice"):
        app.table("counts")
    with pytest.raises(DeclarationError, match="invalid table name"):
        app.table("no.dots")
    with pytest.raises(DeclarationError, match="list of tables"):
        app.agent(app.topic("d"), tables=counts, name="fourth")(lambda v: v)
