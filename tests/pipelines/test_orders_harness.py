"""``pipelines/orders.py`` end to end in the test harness: Avro in, routed JSON out.

``tests/pipelines/test_orders.py`` tests the logic by calling functions; these
tests run the app itself (serdes, routing, keys, commits) without a broker.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from pipelines.orders import app, rates_topic
from pipelines.sample_data import encode_orders, generate_orders, rate_records
from streamkit.testing import TestApp

CREATED = datetime(2024, 6, 1, 12, 30, tzinfo=UTC)


def priced() -> TestApp:
    """The harness with the rates published before the workers start (they load them first)."""
    t = TestApp(app)
    for key, value in rate_records():
        t.send(rates_topic, value, key=key, raw=True)
    return t


def order(order_id: str = "ord-1", **changes: Any) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": "cust-1",
        "currency": "EUR",
        "items": [{"sku": "SKU-A", "quantity": 2, "unit_price": 12.5}],
        "created_at": CREATED,
        "channel": "app",
        **changes,
    }


def test_a_valid_order_is_enriched_and_keyed_by_its_id() -> None:
    with priced() as t:
        t.send("orders.raw", order(), key="ord-1")
        t.run_until_idle()
        [enriched] = t.records("orders.enriched")
        assert enriched.key == "ord-1"
        assert enriched.value["total_eur"] == 25.0
        assert enriched.value["created_at"] == "2024-06-01T12:30:00+00:00"
        assert t.output("orders.review") == []
        assert t.output("orders.invalid") == []


def test_a_valid_order_reaches_the_hourly_window_keyed_by_its_customer() -> None:
    with priced() as t:
        t.send("orders.raw", order(), key="ord-1")
        t.run_until_idle()
        [enriched] = t.records("orders.enriched")
        [moved] = t.records("orders.hourly_revenue.repartition")
        assert moved.key == "cust-1"
        assert (moved.value, moved.timestamp) == (enriched.value, enriched.timestamp)
        assert t.committed("orders.enriched") == {enriched.partition: enriched.offset + 1}


def test_an_expensive_order_also_goes_to_review() -> None:
    big = order(currency="GBP", items=[{"sku": "SKU-B", "quantity": 1, "unit_price": 900.0}])
    with priced() as t:
        t.send("orders.raw", big, key="ord-1")
        t.run_until_idle()
        assert [r["total_eur"] for r in t.output("orders.review")] == [1053.0]
        assert t.output("orders.enriched") == t.output("orders.review")


def test_an_invalid_order_goes_to_invalid_with_its_reasons_and_nothing_stops() -> None:
    with priced() as t:
        t.send("orders.raw", order("ord-1", currency="XBT"), key="ord-1")
        t.send("orders.raw", order("ord-2"), key="ord-2")
        t.run_until_idle()
        [rejected] = t.output("orders.invalid")
        assert rejected["order_id"] == "ord-1"
        assert rejected["reasons"] == ["unknown currency 'XBT'"]
        assert [r["order_id"] for r in t.output("orders.enriched")] == ["ord-2"]


def test_orders_written_with_schema_v1_are_read_with_the_web_channel() -> None:
    v1 = next(s for s in generate_orders(50) if s.version == "v1" and s.kind == "regular")
    [(key, value)] = encode_orders([v1])
    with priced() as t:
        t.send("orders.raw", value, key=key, raw=True)
        t.run_until_idle()
        [enriched] = t.output("orders.enriched")
        assert (enriched["order_id"], enriched["channel"]) == (v1.order_id, "web")


def test_the_sample_mix_is_routed_as_generated() -> None:
    samples = generate_orders(500)
    with priced() as t:
        for key, value in encode_orders(samples):
            t.send("orders.raw", value, key=key, raw=True)
        t.run_until_idle()
        routed = Counter(
            {
                "enriched": len(t.output("orders.enriched")),
                "review": len(t.output("orders.review")),
                "invalid": len(t.output("orders.invalid")),
            }
        )
        assert sum(t.committed("orders.raw").values()) == 500
    kinds = Counter(s.kind for s in samples)
    assert routed == Counter(
        enriched=kinds["regular"] + kinds["high_value"],
        review=kinds["high_value"],
        invalid=kinds["invalid"],
    )


def test_a_new_rate_prices_the_orders_processed_after_it() -> None:
    with priced() as t:
        t.send("orders.raw", order("ord-1", currency="USD"), key="ord-1")
        t.run_until_idle()
        t.send(rates_topic, 0.5, key="USD")
        t.send(rates_topic, None, key="CHF")  # CHF is no longer accepted
        t.run_until_idle()
        t.send("orders.raw", order("ord-2", currency="USD"), key="ord-2")
        t.send("orders.raw", order("ord-3", currency="CHF"), key="ord-3")
        t.run_until_idle()
        assert sorted((e["order_id"], e["total_eur"]) for e in t.output("orders.enriched")) == [
            ("ord-1", 23.0),
            ("ord-2", 12.5),
        ]
        assert [r["reasons"] for r in t.output("orders.invalid")] == [["unknown currency 'CHF'"]]
