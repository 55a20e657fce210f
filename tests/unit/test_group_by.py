"""Re-keying with group_by: through <app>.<agent>.repartition, keeping timestamps and failures."""

from __future__ import annotations

from typing import Any

import pytest

from streamkit import App, Context, DeclarationError, GroupBy, RetryPolicy, Tumbling
from streamkit.ops.topology import build_graph
from streamkit.testing import TestApp
from streamkit.windows import count


def per_customer(group_by: Any = None) -> tuple[App, Any, Any]:
    app = App("shop")
    orders = app.topic("orders", partitions=3)
    totals_out = app.topic("totals", partitions=3)
    totals = app.table("totals", default=0)

    @app.agent(
        orders,
        emits=[totals_out],
        tables=[totals],
        group_by=group_by or (lambda order: order["customer"]),
    )
    def total(order: dict[str, Any], ctx: Context) -> dict[str, Any]:
        totals[ctx.key] += order["amount"]
        return {"customer": ctx.key, "total": totals[ctx.key], "partition": ctx.partition}

    return app, orders, totals_out


def test_an_agent_reads_its_source_under_the_new_key_through_the_repartition_topic() -> None:
    app, orders, totals_out = per_customer()
    assert app.agents["total"].source.name == "shop.total.repartition"
    assert app.agents["total.repartition"].source is orders
    with TestApp(app, workers=2) as t:
        for i in range(90):
            t.send(orders, {"customer": f"c{i % 7}", "amount": 1}, key=f"order-{i}")
        t.run_until_idle()
        assert t.table("totals") == {f"c{c}": len(range(c, 90, 7)) for c in range(7)}
        moved = t.records("shop.total.repartition")
        assert len(moved) == 90
        assert {r.key for r in moved} == {f"c{c}" for c in range(7)}
        # Each customer in one partition: a table's key is where its records are.
        partitions: dict[str, set[int]] = {}
        for value in t.output(totals_out):
            partitions.setdefault(value["customer"], set()).add(value["partition"])
        assert all(len(p) == 1 for p in partitions.values()), partitions


def test_a_record_moves_with_its_timestamp_and_headers_so_windows_keep_event_time() -> None:
    app = App("shop")
    orders = app.topic("orders", partitions=2)
    counts = app.topic("counts", partitions=2)
    app.window(
        orders,
        Tumbling(size=60),
        name="per_minute",
        aggregate=count(),
        grace=0,
        emits=[counts],
        group_by=lambda order: order["customer"],
    )
    with TestApp(app) as t:
        for i, second in enumerate([1, 2, 61, 62, 63, 125]):
            t.send(
                orders,
                {"customer": "c1"},
                key=f"o{i}",
                partition=0,  # in this order: with grace=0, any other would be late
                timestamp=second * 1000,
                headers={"trace": f"t{i}"},
            )
        t.run_until_idle()
        moved = t.records("shop.per_minute.repartition")
        assert [r.timestamp for r in moved] == [s * 1000 for s in [1, 2, 61, 62, 63, 125]]
        assert [dict(r.headers)["trace"] for r in moved] == [f"t{i}".encode() for i in range(6)]
        # Closed by event time: [0, 60) and [60, 120); [120, 180) is still open.
        assert [(v["start"], v["value"]) for v in t.output(counts)] == [(0, 2), (60_000, 3)]


def test_a_key_function_that_fails_dead_letters_the_source_record() -> None:
    app, orders, _ = per_customer()
    with TestApp(app) as t:
        t.send(orders, {"amount": 1}, key="o1")  # no customer
        t.send(orders, {"customer": "c1", "amount": 2}, key="o2")
        t.run_until_idle()
        (letter,) = t.dead_letters("total.repartition")
        assert letter.key == b"o1"
        assert letter.stage == "process" and "KeyError" in letter.exception
        assert t.table("totals") == {"c1": 2}


def test_a_record_retried_before_the_move_gets_the_agents_own_retries_after_it() -> None:
    """The move drops the repartition agent's retry headers: they are about another topic.

    Carried into the repartition topic, they made the agent take a record
    that its feeder retried from a tier for one in the agent's own tier
    already: its failure there skipped the agent's tier (to the dead-letter
    topic, with one tier) and counted the feeder's attempts and origin.
    """
    app = App("shop")
    orders = app.topic("orders")
    out = app.topic("out")
    calls = {"key": 0, "agent": 0}

    def customer(order: dict[str, Any]) -> str:
        calls["key"] += 1
        if calls["key"] == 1:
            raise TimeoutError("customer lookup down")
        return str(order["customer"])

    @app.agent(
        orders,
        emits=[out],
        group_by=customer,
        retry=RetryPolicy(attempts=1, retry_topics=(60,)),
    )
    def total(order: dict[str, Any], ctx: Context) -> dict[str, Any]:
        calls["agent"] += 1
        if calls["agent"] == 1:
            raise TimeoutError("store down")
        return {"customer": ctx.key, "topic": ctx.topic}

    with TestApp(app) as t:
        t.send(orders, {"customer": "c1"}, key="o1", headers={"trace": "t1"})
        t.run_until_idle()
        (moved,) = t.records("shop.total.repartition")
        assert moved.headers == [("trace", b"t1")]
        assert t.records("shop.total.dlq") == []
        assert t.output(out) == [{"customer": "c1", "topic": "shop.total.retry.60s"}]


def test_a_group_by_spec_sets_the_key_serde_and_the_partitions() -> None:
    app, *_ = per_customer(GroupBy(lambda o: o["customer"], key_serde="str", partitions=6))
    topic = app.topics["shop.total.repartition"]
    assert (topic.partitions, topic.key_serde, topic.value_serde) == (6, "str", "json")


def test_running_one_agent_runs_the_agent_that_feeds_it() -> None:
    app, *_ = per_customer()
    assert [a.name for a in app.select(["total"])] == ["total.repartition", "total"]


def test_the_topology_shows_the_move() -> None:
    app, *_ = per_customer()
    edges = {(e.agent, e.direction, e.kind, e.topic) for e in build_graph(app).edges}
    assert ("total.repartition", "in", "consumes", "orders") in edges
    assert ("total.repartition", "out", "emits", "shop.total.repartition") in edges
    assert ("total", "in", "consumes", "shop.total.repartition") in edges


def test_group_by_must_be_a_function() -> None:
    with pytest.raises(DeclarationError, match="group_by must be a function"):
        per_customer(group_by="customer")
