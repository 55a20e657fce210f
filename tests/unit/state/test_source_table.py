"""Source tables in the test harness: a topic joined per partition on the record key."""

from __future__ import annotations

from typing import Any

import pytest

from streamkit import App, DeclarationError, SourceTable, StateError
from streamkit.ops.topology import build_graph
from streamkit.testing import TestApp


def enrichment(table_partitions: int | None = 3) -> tuple[App, Any, Any, Any, SourceTable]:
    app = App("enrich")
    customers_topic = app.topic("crm.customers", partitions=table_partitions)
    orders = app.topic("orders", partitions=3)
    enriched = app.topic("orders.enriched", partitions=3)
    customers = app.table("customers", source=customers_topic)

    @app.agent(orders, emits=[enriched], tables=[customers])
    def enrich(order: dict[str, Any], ctx: Any) -> dict[str, Any]:
        customer = customers.get(ctx.key)
        return {"id": order["id"], "tier": None if customer is None else customer["tier"]}

    return app, customers_topic, orders, enriched, customers


def test_each_record_reads_its_own_key_from_the_table_loaded_before_it() -> None:
    app, customers_topic, orders, enriched, _ = enrichment()
    t = TestApp(app, workers=2)
    for c in range(12):
        t.send(customers_topic, {"tier": f"t{c}"}, key=f"c{c}")
    for i in range(60):
        t.send(orders, {"id": i}, key=f"c{i % 12}")
    with t:
        t.run_until_idle()
        assert sorted((v["id"], v["tier"]) for v in t.output(enriched)) == [
            (i, f"t{i % 12}") for i in range(60)
        ]


def test_updates_and_tombstones_are_seen_by_the_records_processed_after_them() -> None:
    app, customers_topic, orders, enriched, _ = enrichment()
    with TestApp(app) as t:
        t.send(customers_topic, {"tier": "silver"}, key="c1")
        t.run_until_idle()
        t.send(orders, {"id": 1}, key="c1")
        t.run_until_idle()
        t.send(customers_topic, {"tier": "gold"}, key="c1")
        t.run_until_idle()  # waits for the follower too
        t.send(orders, {"id": 2}, key="c1")
        t.send(customers_topic, None, key="c1")
        t.run_until_idle()
        t.send(orders, {"id": 3}, key="c1")
        t.run_until_idle()
        assert {v["id"]: v["tier"] for v in t.output(enriched)} == {
            1: "silver",
            2: "gold",
            3: None,
        }


def test_a_partition_that_moves_is_loaded_by_its_new_owner_with_the_latest_values() -> None:
    app, customers_topic, orders, enriched, _ = enrichment()
    with TestApp(app, workers=2) as t:
        for c in range(12):
            t.send(customers_topic, {"tier": "old"}, key=f"c{c}")
        t.run_until_idle()
        (first, second) = t.workers
        assert first.topic_tables is not None and second.topic_tables is not None
        for c in range(12):
            t.send(customers_topic, {"tier": "new"}, key=f"c{c}")
        t.run_until_idle()
        t.rebalance(workers=1)
        for i in range(24):
            t.send(orders, {"id": i}, key=f"c{i % 12}")
        t.run_until_idle()
        assert [v["tier"] for v in t.output(enriched)] == ["new"] * 24
        t.rebalance(workers=3)
        for i in range(24, 48):
            t.send(orders, {"id": i}, key=f"c{i % 12}")
        t.run_until_idle()
        assert [v["tier"] for v in t.output(enriched)] == ["new"] * 48


def test_a_table_topic_with_other_partitions_than_the_stream_stops_the_worker_at_start() -> None:
    # Undeclared partition counts can only be compared once the topics exist.
    app, _, orders, _, _ = enrichment(table_partitions=None)
    t = TestApp(app)  # creates crm.customers with 1 partition
    t.send(orders, {"id": 1}, key="c1")
    wanted = r"crm\.customers has 1 partitions and the stream orders joined to it 3"
    with pytest.raises(DeclarationError, match=wanted), t:
        t.run_until_idle()


def test_declaration_errors_name_the_setting() -> None:
    with pytest.raises(DeclarationError, match=r"crm\.customers has 4 partitions and its source"):
        enrichment(table_partitions=4)
    app = App("enrich")
    topic = app.topic("crm.customers", key_serde="json")
    with pytest.raises(DeclarationError, match="ttl, partitions come from its source topic"):
        app.table("a", source=topic, ttl=5, partitions=2)  # type: ignore[call-overload]
    customers = app.table("customers", source=topic)
    with pytest.raises(DeclarationError, match="declared twice"):
        app.table("customers")
    orders = app.topic("orders")
    with pytest.raises(DeclarationError, match="key_serde 'json' and its source orders 'str'"):
        app.agent(orders, tables=[customers], name="enrich")(lambda v: v)
    other = App("other").table("customers", source=App("other").topic("crm.customers"))
    with pytest.raises(DeclarationError, match="not declared by app enrich"):
        app.agent(app.topic("o2"), tables=[other], name="x")(lambda v: v)


def test_the_topology_shows_the_join() -> None:
    app, *_ = enrichment()
    edges = {(e.agent, e.direction, e.kind, e.topic) for e in build_graph(app).edges}
    assert ("enrich", "in", "joins_customers", "crm.customers") in edges


def test_reading_outside_its_agents_says_to_list_it() -> None:
    *_, customers = enrichment()
    with pytest.raises(StateError, match=r"tables=\[customers\]"):
        customers["c1"]
