"""Global tables in the test harness: loaded before processing, followed while running."""

from __future__ import annotations

from typing import Any

import pytest

from streamkit import App, StateError
from streamkit.testing import TestApp


def pricing() -> tuple[App, Any, Any, Any]:
    app = App("pricing")
    rates_topic = app.topic("fx.rates", partitions=2)
    orders = app.topic("orders", partitions=3)
    priced = app.topic("priced", partitions=3)
    rates = app.global_table("rates", source=rates_topic)

    @app.agent(orders, emits=[priced])
    def price(order: dict[str, Any]) -> dict[str, Any]:
        rate = rates.get(order["currency"])
        return {"id": order["id"], "eur": None if rate is None else order["amount"] * rate}

    return app, rates_topic, orders, priced


def test_a_worker_loads_the_table_before_it_processes_a_record() -> None:
    app, rates_topic, orders, priced = pricing()
    t = TestApp(app)
    t.send(rates_topic, 0.5, key="USD")
    t.send(rates_topic, 2.0, key="GBP")
    for i in range(20):
        t.send(orders, {"id": i, "currency": "USD", "amount": 10}, key=f"o{i}")
    with t:
        t.run_until_idle()
        assert [v["eur"] for v in t.output(priced)] == [5.0] * 20


def test_an_update_is_seen_by_the_records_processed_after_it_as_of_processing_time() -> None:
    app, rates_topic, orders, priced = pricing()
    with TestApp(app) as t:
        t.send(rates_topic, 1.0, key="USD")
        t.run_until_idle()  # waits for the follower too
        t.send(orders, {"id": 1, "currency": "USD", "amount": 10}, key="o1")
        t.run_until_idle()
        t.send(rates_topic, 3.0, key="USD")
        t.send(rates_topic, None, key="GBP")  # a tombstone of a key never set
        t.run_until_idle()
        t.send(orders, {"id": 2, "currency": "USD", "amount": 10}, key="o2")
        t.send(rates_topic, None, key="USD")
        t.run_until_idle()
        t.send(orders, {"id": 3, "currency": "USD", "amount": 10}, key="o3")
        t.run_until_idle()
        assert {v["id"]: v["eur"] for v in t.output(priced)} == {1: 10.0, 2: 30.0, 3: None}


def test_every_worker_holds_the_whole_table() -> None:
    app, rates_topic, orders, priced = pricing()
    with TestApp(app, workers=3) as t:
        for i, currency in enumerate(["USD", "GBP", "CHF", "SEK"]):
            t.send(rates_topic, float(i + 1), key=currency)
        t.run_until_idle()
        for i in range(30):
            currency = ["USD", "GBP", "CHF", "SEK"][i % 4]
            t.send(orders, {"id": i, "currency": currency, "amount": 1}, key=f"o{i}")
        t.run_until_idle()
        assert sorted(v["eur"] for v in t.output(priced)) == sorted(
            float(i % 4 + 1) for i in range(30)
        )


def test_a_record_of_the_table_that_does_not_decode_is_skipped_and_the_rest_load() -> None:
    app, rates_topic, orders, priced = pricing()
    t = TestApp(app)
    t.send(rates_topic, b"{not json", key=b"USD", raw=True)
    t.send(rates_topic, 4.0, key="GBP")
    t.send(orders, {"id": 1, "currency": "GBP", "amount": 1}, key="o1")
    with t:
        t.run_until_idle()
        assert t.output(priced) == [{"id": 1, "eur": 4.0}]
        (worker,) = t.workers
        assert worker.topic_tables is not None and worker.topic_tables.skipped == 1


def test_reading_outside_an_agent_says_where_reads_belong() -> None:
    app, *_ = pricing()
    with pytest.raises(StateError, match="outside an agent"):
        app.global_tables["rates"]["USD"]
