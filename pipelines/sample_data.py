"""Deterministic sample orders for the orders pipeline, and producing them to Kafka.

The same seed always gives the same orders, byte for byte. The mix:

* currencies weighted like a European shop (EUR most, JPY least);
* about 2% invalid (unknown currency, no items, zero quantity, negative price);
* about 5% high value (a line worth 1,100-4,000 EUR, so over the review threshold);
* the rest regular: at most 4 lines x 3 units x 60 EUR = 720 EUR, under the threshold;
* about 20% written with the old schema ``shop.Order`` v1, which has no ``channel``.

Each :class:`SampleOrder` records what the generator meant it to be, so tests
and the demo can check the pipeline against intent rather than against itself.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from confluent_kafka import KafkaError, Producer

from pipelines.orders import EUR_RATES, rates_topic, raw
from streamkit.serde import SchemaStore, resolve_serde

SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "schemas"

Client = str | Mapping[str, str]
"""Bootstrap servers, or librdkafka properties that include them."""

Kind = Literal["regular", "high_value", "invalid"]
SchemaVersion = Literal["v1", "v2"]

CURRENCY_WEIGHTS = {"EUR": 40, "USD": 25, "GBP": 15, "CHF": 8, "SEK": 7, "JPY": 5}
CHANNEL_WEIGHTS = {"web": 5, "app": 3, "store": 2}
INVALID_SHARE = 0.02
HIGH_VALUE_SHARE = 0.05
V1_SHARE = 0.2
# Serde specs per schema version: v2 is the current file (order.avsc), so
# the topic's own spec; v1 pins order.v1.avsc.
SPECS: dict[SchemaVersion, str] = {"v1": "avro:shop.Order@v1", "v2": "avro:shop.Order"}

_START_MS = int(datetime(2024, 6, 1, tzinfo=UTC).timestamp() * 1000)
_DEFECTS = ("unknown_currency", "no_items", "zero_quantity", "negative_price")


@dataclass(frozen=True, slots=True)
class SampleOrder:
    """One generated order and what it is meant to be.

    Attributes:
        order: The record as written; v1 orders have no ``channel``.
        version: The schema version it is written with.
        kind: What the pipeline should make of it.
    """

    order: dict[str, Any]
    version: SchemaVersion
    kind: Kind

    @property
    def order_id(self) -> str:
        """The order id, which is also the record key."""
        return str(self.order["order_id"])


def generate_orders(count: int, seed: int = 2024) -> list[SampleOrder]:
    """Return ``count`` orders, the same ones for the same ``seed``."""
    rng = random.Random(seed)
    return [_order(rng, number) for number in range(1, count + 1)]


def _order(rng: random.Random, number: int) -> SampleOrder:
    roll = rng.random()
    kind: Kind = (
        "invalid"
        if roll < INVALID_SHARE
        else "high_value"
        if roll < INVALID_SHARE + HIGH_VALUE_SHARE
        else "regular"
    )
    currency = rng.choices(list(CURRENCY_WEIGHTS), weights=list(CURRENCY_WEIGHTS.values()))[0]
    items = [_item(rng, currency, rng.randint(1, 3), rng.uniform(2, 60)) for _ in range(4)]
    items = items[: rng.randint(1, 4)]
    if kind == "high_value":
        items.append(_item(rng, currency, 1, rng.uniform(1100, 4000)))
    order: dict[str, Any] = {
        "order_id": f"ord-{number:05d}",
        "customer_id": f"cust-{rng.randint(1, 1500):04d}",
        "currency": currency,
        "items": items,
        "created_at": _START_MS + number * 1500 + rng.randint(0, 999),
    }
    if kind == "invalid":
        _break(rng, order)
    version: SchemaVersion = "v1" if rng.random() < V1_SHARE else "v2"
    if version == "v2":
        order["channel"] = rng.choices(list(CHANNEL_WEIGHTS), list(CHANNEL_WEIGHTS.values()))[0]
    return SampleOrder(order, version, kind)


def _item(rng: random.Random, currency: str, quantity: int, eur_price: float) -> dict[str, Any]:
    # Prices are drawn in EUR and converted, so the EUR bounds in the module
    # docstring hold in every currency; yen have no minor unit.
    price = round(eur_price / EUR_RATES[currency], 0 if currency == "JPY" else 2)
    return {"sku": f"SKU-{rng.randint(1, 500):04d}", "quantity": quantity, "unit_price": price}


def _break(rng: random.Random, order: dict[str, Any]) -> None:
    defect = rng.choice(_DEFECTS)
    if defect == "unknown_currency":
        order["currency"] = rng.choice(["XBT", "ZZZ", "EURO"])
    elif defect == "no_items":
        order["items"] = []
    elif defect == "zero_quantity":
        order["items"][0]["quantity"] = 0
    else:
        order["items"][-1]["unit_price"] = -order["items"][-1]["unit_price"]


def encode_orders(
    samples: Iterable[SampleOrder], schemas: SchemaStore | None = None
) -> list[tuple[bytes, bytes]]:
    """Encode ``(key, value)`` pairs exactly as ``orders.raw`` holds them.

    The serdes are the ones the worker resolves, so the bytes are what the
    pipeline reads: single-object Avro, each record tagged with the
    fingerprint of the version it was written with.
    """
    store = schemas if schemas is not None else SchemaStore(SCHEMAS_DIR)
    values = {version: resolve_serde(spec, schemas=store) for version, spec in SPECS.items()}
    key = resolve_serde(raw.key_serde)
    return [(key.serialize(s.order_id), values[s.version].serialize(s.order)) for s in samples]


def produce_orders(
    client: Client, samples: Iterable[SampleOrder], topic: str = raw.name, timeout: float = 60.0
) -> int:
    """Produce ``samples`` to ``topic`` and wait for every acknowledgement.

    Args:
        client: The bootstrap servers, or librdkafka properties with
            ``bootstrap.servers`` (and, for a secure broker, its SASL and TLS ones).
        samples: The orders.
        topic: Where to.
        timeout: Seconds to wait for every acknowledgement.

    Returns:
        The number of records produced.

    Raises:
        RuntimeError: The broker rejected a record, or some were not
            acknowledged within ``timeout`` seconds.
    """
    return _produce(client, topic, encode_orders(samples), timeout)


def rate_records() -> list[tuple[bytes, bytes]]:
    """``(currency, EUR per unit)`` as ``orders.rates`` holds them: the rates the orders use."""
    return [(c.encode(), orjson.dumps(rate)) for c, rate in EUR_RATES.items()]


def produce_rates(client: Client, timeout: float = 60.0) -> int:
    """Publish :data:`~pipelines.orders.EUR_RATES` to ``orders.rates`` (the global table)."""
    return _produce(client, rates_topic.name, rate_records(), timeout)


def _produce(client: Client, topic: str, records: list[tuple[bytes, bytes]], timeout: float) -> int:
    connection = {"bootstrap.servers": client} if isinstance(client, str) else client
    producer = Producer(
        {
            **connection,
            "enable.idempotence": True,
            "linger.ms": 20,
            # Errors only: on a broker that just started, librdkafka warns while
            # it retries for the producer id; a real failure is raised below.
            "log_level": 3,
        }
    )
    failures: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    for key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(timeout)
    if left or failures:
        raise RuntimeError(
            f"producing to {topic}: {left} records unacknowledged after {timeout:.0f}s, "
            f"{len(failures)} rejected{f' (first: {failures[0].str()})' if failures else ''}"
        )
    return len(records)
