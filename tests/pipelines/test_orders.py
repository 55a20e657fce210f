"""The orders pipeline's logic, with no broker: the agent and its helpers called directly."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from pipelines import orders
from pipelines.orders import Order, enrich, process_order, route, validate
from pipelines.sample_data import SCHEMAS_DIR, SampleOrder, encode_orders, generate_orders
from streamkit import Context, Topic
from streamkit.context import KEEP_KEY
from streamkit.serde import AvroSerde, SchemaStore, resolve_serde

CREATED = datetime(2024, 6, 1, 12, 30, tzinfo=UTC)


def make_order(**changes: Any) -> Order:
    """A valid EUR order of 2 x 12.50 + 1 x 5.00 = 30.00, with ``changes`` applied."""
    order: dict[str, Any] = {
        "order_id": "ord-1",
        "customer_id": "cust-1",
        "currency": "EUR",
        "items": [
            {"sku": "SKU-A", "quantity": 2, "unit_price": 12.5},
            {"sku": "SKU-B", "quantity": 1, "unit_price": 5.0},
        ],
        "created_at": CREATED,
        "channel": "app",
        **changes,
    }
    return cast(Order, order)


def item(quantity: int = 1, unit_price: float = 10.0, sku: str = "SKU-X") -> dict[str, Any]:
    return {"sku": sku, "quantity": quantity, "unit_price": unit_price}


def names(routed: list[tuple[Topic, dict[str, Any]]]) -> list[str]:
    return [topic.name for topic, _ in routed]


class FakeContext:
    """Records ``ctx.emit`` calls the way the runtime would receive them."""

    def __init__(self) -> None:
        self.emitted: list[tuple[str, Any, Any]] = []

    def emit(
        self, topic: str | Topic, value: Any, key: Any = KEEP_KEY, headers: Any = None
    ) -> None:
        self.emitted.append((str(topic), value, key))


# -- validate ----------------------------------------------------------------


def test_a_valid_order_has_no_reasons() -> None:
    assert validate(make_order()) == []


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"currency": "XBT"}, "unknown currency 'XBT'"),
        ({"currency": "eur"}, "unknown currency 'eur'"),
        ({"items": []}, "no line items"),
        ({"items": [item(quantity=0)]}, "SKU-X: quantity must be positive, got 0"),
        ({"items": [item(quantity=-2)]}, "SKU-X: quantity must be positive, got -2"),
        ({"items": [item(unit_price=0.0)]}, "SKU-X: unit price must be positive, got 0.0"),
        ({"items": [item(unit_price=-3.5)]}, "SKU-X: unit price must be positive, got -3.5"),
        ({"items": [item(unit_price=math.nan)]}, "SKU-X: unit price must be positive, got nan"),
    ],
)
def test_an_invalid_order_says_why(changes: dict[str, Any], reason: str) -> None:
    assert validate(make_order(**changes)) == [reason]


def test_every_problem_of_an_order_is_reported() -> None:
    order = make_order(
        currency="ZZZ",
        items=[
            item(quantity=0, sku="SKU-1"),
            item(sku="SKU-2"),
            item(unit_price=-1.0, sku="SKU-3"),
        ],
    )
    assert validate(order) == [
        "unknown currency 'ZZZ'",
        "SKU-1: quantity must be positive, got 0",
        "SKU-3: unit price must be positive, got -1.0",
    ]


def test_every_currency_in_the_rate_table_is_accepted() -> None:
    for currency in orders.EUR_RATES:
        assert validate(make_order(currency=currency)) == [], currency


# -- enrich ------------------------------------------------------------------


def test_enrich_adds_line_totals_total_and_unit_count() -> None:
    result = enrich(make_order())
    assert [line["line_total"] for line in result["items"]] == [25.0, 5.0]
    assert result["total"] == 30.0
    assert result["total_eur"] == 30.0
    assert result["item_count"] == 3


def test_enrich_keeps_the_order_fields() -> None:
    result = enrich(make_order())
    assert result["order_id"] == "ord-1"
    assert result["customer_id"] == "cust-1"
    assert result["channel"] == "app"
    assert result["currency"] == "EUR"
    assert result["created_at"] == "2024-06-01T12:30:00+00:00"
    assert result["items"][0] == {
        "sku": "SKU-A",
        "quantity": 2,
        "unit_price": 12.5,
        "line_total": 25.0,
    }


@pytest.mark.parametrize(
    ("currency", "unit_price", "total_eur"),
    [("USD", 100.0, 276.0), ("GBP", 10.0, 35.1), ("CHF", 50.0, 156.0), ("SEK", 100.0, 26.1)],
)
def test_enrich_converts_the_total_to_eur(
    currency: str, unit_price: float, total_eur: float
) -> None:
    result = enrich(make_order(currency=currency, items=[item(quantity=3, unit_price=unit_price)]))
    assert result["total"] == round(3 * unit_price, 2)
    assert result["total_eur"] == total_eur


def test_enrich_rounds_money_to_cents() -> None:
    # 3 x 0.1 is 0.30000000000000004 in binary floating point.
    result = enrich(make_order(items=[item(quantity=3, unit_price=0.1)] * 3))
    assert [line["line_total"] for line in result["items"]] == [0.3, 0.3, 0.3]
    assert result["total"] == 0.9
    # 199 JPY x 0.0061 = 1.2139 EUR.
    assert enrich(make_order(currency="JPY", items=[item(unit_price=199.0)]))["total_eur"] == 1.21


# -- route -------------------------------------------------------------------


def test_a_regular_order_goes_to_enriched_only() -> None:
    routed = route(make_order())
    assert names(routed) == ["orders.enriched"]
    assert routed[0][1] == enrich(make_order())


def test_a_high_value_order_goes_to_enriched_and_review() -> None:
    order = make_order(currency="USD", items=[item(quantity=2, unit_price=600.0)])  # 1,104 EUR
    routed = route(order)
    assert names(routed) == ["orders.enriched", "orders.review"]
    assert routed[0][1] == routed[1][1] == enrich(order)


@pytest.mark.parametrize(("unit_price", "reviewed"), [(999.99, False), (1000.0, True)])
def test_the_review_threshold_is_inclusive(unit_price: float, reviewed: bool) -> None:
    routed = route(make_order(items=[item(unit_price=unit_price)]))
    assert ("orders.review" in names(routed)) is reviewed


def test_the_threshold_applies_to_the_eur_total_not_the_order_currency() -> None:
    # 150,000 JPY is 915 EUR: a big number, but no review.
    assert names(route(make_order(currency="JPY", items=[item(unit_price=150_000.0)]))) == [
        "orders.enriched"
    ]


def test_an_invalid_order_goes_to_invalid_only_with_its_reasons() -> None:
    order = make_order(items=[])
    assert route(order) == [
        (orders.invalid, {"order_id": "ord-1", "reasons": ["no line items"], "order": order})
    ]


def test_an_invalid_high_value_order_is_not_reviewed() -> None:
    order = make_order(currency="XBT", items=[item(unit_price=50_000.0)])
    assert names(route(order)) == ["orders.invalid"]


# -- the agent -----------------------------------------------------------------


@pytest.mark.parametrize(
    "order",
    [
        make_order(),
        make_order(items=[item(unit_price=2000.0)]),
        make_order(items=[item(quantity=0)]),
    ],
    ids=["regular", "high-value", "invalid"],
)
def test_the_agent_emits_what_route_decides_keyed_like_the_input(order: Order) -> None:
    ctx = FakeContext()
    # Called outside the runtime: the global table is this dict, as loaded.
    token = orders.rates.current.set(dict(orders.EUR_RATES))
    try:
        assert process_order(order, cast(Context, ctx)) is None  # nothing returned: emits only
    finally:
        orders.rates.current.reset(token)
    # Only what route decides: the windows re-key orders.enriched themselves (group_by=).
    assert ctx.emitted == [(topic.name, value, KEEP_KEY) for topic, value in route(order)]


def test_the_app_declares_the_agent_and_its_topics() -> None:
    agent = orders.app.agents["process_order"]
    assert agent.source is orders.raw
    assert orders.app.emit_targets(agent) == (orders.enriched, orders.review, orders.invalid)
    assert agent.takes_ctx and not agent.is_async
    assert (orders.raw.value_serde, orders.raw.key_serde) == ("avro:shop.Order", "str")
    assert {t.name: (t.value_serde, t.partitions) for t in orders.app.topics.values()} == {
        "orders.raw": ("avro:shop.Order", 4),
        "orders.enriched": ("json", 4),
        "orders.review": ("json", 4),
        "orders.invalid": ("json", 4),
        # Failed records keep their bytes as they were: the dead-letter topic
        # is raw, with the source's partition count.
        "orders.process_order.dlq": ("bytes", 4),
        "orders.rates": ("json", 1),
        "orders.revenue.hourly": ("json", 4),
        # The hourly revenue window's store, late records and dead letters.
        "orders.hourly_revenue-windows.changelog": ("json", 4),
        "orders.hourly_revenue.late": ("json", 4),
        "orders.hourly_revenue.dlq": ("bytes", 4),
        # group_by=: the enriched orders re-keyed by customer for the window,
        # and the dead letters of the agent that moves them.
        "orders.hourly_revenue.repartition": ("json", 4),
        "orders.hourly_revenue.repartition.dlq": ("bytes", 4),
    }


# -- schema evolution and sample data ------------------------------------------


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return SchemaStore(SCHEMAS_DIR)


@pytest.fixture(scope="module")
def samples() -> list[SampleOrder]:
    return generate_orders(10_000)


def test_a_v1_record_reads_as_v2_with_the_channel_default(store: SchemaStore) -> None:
    v1, current = store.get("shop.Order", "v1"), store.get("shop.Order")
    assert v1.fingerprint != current.fingerprint
    written = {k: v for k, v in make_order().items() if k != "channel"}
    data = resolve_serde("avro:shop.Order@v1", schemas=store).serialize(written)
    assert data[2:10] == v1.fingerprint  # tagged as written with v1
    decoded = resolve_serde("avro:shop.Order", schemas=store).deserialize(data)
    assert decoded == {**written, "channel": "web"}


def test_sample_orders_are_deterministic() -> None:
    assert generate_orders(200) == generate_orders(200)
    assert generate_orders(200, seed=1) != generate_orders(200, seed=2)
    assert [s.order_id for s in generate_orders(3)] == ["ord-00001", "ord-00002", "ord-00003"]


def test_sample_orders_have_the_documented_mix(samples: list[SampleOrder]) -> None:
    kinds = Counter(s.kind for s in samples)
    versions = Counter(s.version for s in samples)
    currencies = {s.order["currency"] for s in samples if s.kind != "invalid"}
    assert 150 <= kinds["invalid"] <= 250  # about 2%
    assert 400 <= kinds["high_value"] <= 600  # about 5%
    assert 1700 <= versions["v1"] <= 2300  # about 20%
    assert currencies == set(orders.EUR_RATES)
    assert all("channel" not in s.order for s in samples if s.version == "v1")


def test_the_pipeline_treats_every_sample_order_as_intended(
    samples: list[SampleOrder], store: SchemaStore
) -> None:
    # Through the bytes, as the worker sees them: encoded with the version
    # each sample names, decoded with the topic's serde.
    serde = resolve_serde(orders.raw.value_serde, schemas=store)
    assert isinstance(serde, AvroSerde)
    expected = {
        "regular": ["orders.enriched"],
        "high_value": ["orders.enriched", "orders.review"],
        "invalid": ["orders.invalid"],
    }
    for sample, (key, value) in zip(samples, encode_orders(samples, store), strict=True):
        decoded = serde.deserialize(value)
        assert key == sample.order_id.encode()
        assert names(route(decoded)) == expected[sample.kind], sample
        if sample.version == "v1":
            assert decoded["channel"] == "web"
        else:
            assert decoded["channel"] == sample.order["channel"]
