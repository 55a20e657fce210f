"""The orders pipeline: validate shop orders, price them in EUR, route them.

::

    orders.raw (Avro shop.Order, key = order id)      orders.rates (EUR per unit, key = currency)
      └── process_order  ◄── joins the global table `rates` ──┘
            ├── orders.enriched   every valid order, with line totals and its total in EUR
            ├── orders.review     valid orders worth REVIEW_THRESHOLD_EUR or more (also enriched)
            └── orders.invalid    orders that fail validation, with the reasons

    orders.enriched
      └── hourly_revenue.repartition (internal, from group_by=customer_id)
            └── orders.hourly_revenue.repartition  the enriched orders again, key = customer id
                  └── hourly_revenue (tumbling 1 h, final, 2 h grace)
                        └── orders.revenue.hourly  EUR per customer and hour of created_at

The per-customer windows need records keyed by customer: ``group_by=``
re-keys the enriched orders through ``orders.hourly_revenue.repartition``
(see :mod:`streamkit.group_by`), so the agent only writes what it decides.
``pipelines.sessions`` reads ``orders.enriched`` in a group of its own and
re-keys it the same way, through a repartition topic of its own.

A bad order is a business result, not a crash: it goes to ``orders.invalid``
and the pipeline moves on. Records written with ``order.v1.avsc`` (before
``channel`` existed) are read as the current version, with ``channel="web"``.

Run it with ``make demo``, or ``streamkit run pipelines.orders:app``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypedDict

from streamkit import App, Context, Topic, Tumbling, Window
from streamkit.windows import sum_of

app = App("orders")

raw = app.topic("orders.raw", value_serde="avro:shop.Order", key_serde="str", partitions=4)
enriched = app.topic("orders.enriched", value_serde="json", partitions=4)
review = app.topic("orders.review", value_serde="json", partitions=4)
invalid = app.topic("orders.invalid", value_serde="json", partitions=4)
hourly = app.topic("orders.revenue.hourly", value_serde="json", partitions=4)

# EUR per unit of each accepted currency, a global table every worker holds
# whole and follows: a new rate applies to the orders processed after it.
# An unknown currency (no rate) makes an order invalid.
rates_topic = app.topic(
    "orders.rates", value_serde="json", partitions=1, config={"cleanup.policy": "compact"}
)
rates = app.global_table("rates", source=rates_topic)
# The rates the sample data is priced with, and make demo publishes to orders.rates.
EUR_RATES = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17, "CHF": 1.04, "SEK": 0.087, "JPY": 0.0061}
REVIEW_THRESHOLD_EUR = 1000.0
# Grace of the per-customer windows. The repartition agent (group_by=)
# interleaves the four orders.enriched partitions into
# orders.hourly_revenue.repartition a slice of work at a time, so a backlog
# (make demo sends 4 hours of orders at once) arrives out of event-time
# order by the event time one slice covers, times how unevenly the
# partitions progress: up to 120 to 215 minutes in make demo's runs (183 to
# 250 in pipelines.sessions' own repartition topic; 80 to 112 when
# process_order re-keyed by hand), so 2 hours sent 0 to 1,201 (sessions:
# 434 to 2,130) of the 9,792 orders to the late topics, as the demo says.
# A live stream is out of order by seconds; size grace to the disorder you
# replay, and watch streamkit_window_late_records_total.
GRACE_S = 2 * 3600


class LineItem(TypedDict):
    sku: str
    quantity: int
    unit_price: float


class Order(TypedDict):
    """A ``shop.Order`` as the Avro serde decodes it (the current schema's shape)."""

    order_id: str
    customer_id: str
    currency: str
    items: list[LineItem]
    created_at: datetime
    channel: str


def validate(order: Order, rates: Mapping[str, float] = EUR_RATES) -> list[str]:
    """Return why ``order`` cannot be processed; empty when it is valid."""
    reasons = []
    if order["currency"] not in rates:
        reasons.append(f"unknown currency {order['currency']!r}")
    if not order["items"]:
        reasons.append("no line items")
    for item in order["items"]:
        if item["quantity"] <= 0:
            reasons.append(f"{item['sku']}: quantity must be positive, got {item['quantity']}")
        # `not > 0` rather than `<= 0`, so a NaN price is rejected too.
        if not item["unit_price"] > 0:
            reasons.append(f"{item['sku']}: unit price must be positive, got {item['unit_price']}")
    return reasons


def enrich(order: Order, rates: Mapping[str, float] = EUR_RATES) -> dict[str, Any]:
    """Add line totals, the order total, its EUR value and the number of units."""
    line_totals = [round(item["quantity"] * item["unit_price"], 2) for item in order["items"]]
    total = round(sum(line_totals), 2)
    items = [
        {**item, "line_total": line_total}
        for item, line_total in zip(order["items"], line_totals, strict=True)
    ]
    return {
        "order_id": order["order_id"],
        "customer_id": order["customer_id"],
        "channel": order["channel"],
        "created_at": order["created_at"].isoformat(),
        "currency": order["currency"],
        "items": items,
        "item_count": sum(item["quantity"] for item in order["items"]),
        "total": total,
        "total_eur": round(total * rates[order["currency"]], 2),
    }


def route(
    order: Order, rates: Mapping[str, float] = EUR_RATES
) -> list[tuple[Topic, dict[str, Any]]]:
    """Decide where ``order`` goes: the pure core of the agent, easy to test."""
    reasons = validate(order, rates)
    if reasons:
        return [(invalid, {"order_id": order["order_id"], "reasons": reasons, "order": order})]
    result = enrich(order, rates)
    if result["total_eur"] >= REVIEW_THRESHOLD_EUR:
        return [(enriched, result), (review, result)]
    return [(enriched, result)]


@app.agent(raw, emits=[enriched, review, invalid])
def process_order(order: Order, ctx: Context) -> None:
    for topic, value in route(order, rates):
        ctx.emit(topic, value)  # keyed by order id, like the input


def customer_id(order: dict[str, Any]) -> str:
    """Whose an enriched order is: the key the per-customer windows group by."""
    return str(order["customer_id"])


def created_at(order: dict[str, Any]) -> datetime:
    """An enriched order's event time: when the shop created it, not when it was sent."""
    return datetime.fromisoformat(order["created_at"])


def iso(ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC time."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def hourly_result(customer: str, window: Window, eur: float) -> dict[str, Any]:
    """One customer's revenue in one hour."""
    return {"customer_id": customer, "hour": iso(window.start), "revenue_eur": round(eur, 2)}


# Final: one record per customer and hour, once stream time (the newest
# created_at of the repartition topic's partition) is GRACE_S past the hour's end.
hourly_revenue = app.window(
    enriched,
    Tumbling(size=3600),
    name="hourly_revenue",
    aggregate=sum_of(lambda order: order["total_eur"]),
    grace=GRACE_S,
    emits=[hourly],
    timestamp=created_at,
    result=hourly_result,
    group_by=customer_id,  # through orders.hourly_revenue.repartition
)
