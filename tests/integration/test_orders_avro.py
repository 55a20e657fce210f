"""The orders pipeline end to end on the session broker, run as a worker process.

Input is Avro in the single-object encoding, a fifth of it written with the
old schema version v1. The pipeline's topic names are fixed, so the
``orders_topics`` fixture deletes and recreates them around the test.

The Confluent wire format is not covered here: the only registry tests have
is the in-process ``mock://`` one, which a worker subprocess cannot share.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipelines import orders
from pipelines.sample_data import SampleOrder, encode_orders, generate_orders, rate_records
from streamkit import App
from streamkit.pytest_plugin import NameFactory
from tests.integration.helpers import WorkerProcess, produce, read_topic, wait_until_committed

TOPICS = sorted(orders.app.topics)
_TIMEOUT_S = 60.0

# Orders whose totals were worked out by hand, written with both versions.
KNOWN = [
    SampleOrder(
        {
            "order_id": "known-eur",
            "customer_id": "cust-k1",
            "currency": "EUR",
            "items": [
                {"sku": "SKU-A", "quantity": 2, "unit_price": 12.5},
                {"sku": "SKU-B", "quantity": 1, "unit_price": 5.0},
            ],
            "created_at": 1_717_243_200_000,  # 2024-06-01T12:00:00Z
            "channel": "app",
        },
        "v2",
        "regular",
    ),
    SampleOrder(
        {
            "order_id": "known-usd-v1",
            "customer_id": "cust-k2",
            "currency": "USD",
            "items": [{"sku": "SKU-C", "quantity": 3, "unit_price": 100.0}],
            "created_at": 1_717_243_200_000,
        },
        "v1",
        "regular",
    ),
    SampleOrder(
        {
            "order_id": "known-jpy",
            "customer_id": "cust-k3",
            "currency": "JPY",
            "items": [
                {"sku": "SKU-D", "quantity": 1, "unit_price": 200_000.0},
                {"sku": "SKU-E", "quantity": 2, "unit_price": 1_500.0},
            ],
            "created_at": 1_717_243_200_000,
            "channel": "store",
        },
        "v2",
        "high_value",
    ),
    SampleOrder(
        {
            "order_id": "known-bad-v1",
            "customer_id": "cust-k4",
            "currency": "GBP",
            "items": [{"sku": "SKU-F", "quantity": 0, "unit_price": 9.99}],
            "created_at": 1_717_243_200_000,
        },
        "v1",
        "invalid",
    ),
]


@pytest.fixture
def orders_topics(fresh_topics: Callable[[App], None]) -> None:
    """Empty ``orders.*`` topics as the app declares them; deleted afterwards."""
    fresh_topics(orders.app)


def read_json(bootstrap: str, topic: str, expected: int) -> dict[str, dict[str, Any]]:
    """Read ``topic`` back: values by order id, checking each id appears once and is the key."""
    records = read_topic(bootstrap, topic, expected)
    values = [orjson.loads(r.value or b"null") for r in records]
    ids = Counter(v["order_id"] for v in values)
    assert [i for i, n in ids.items() if n > 1] == [], f"duplicates in {topic}"
    assert all(r.key == v["order_id"].encode() for r, v in zip(records, values, strict=True))
    return {v["order_id"]: v for v in values}


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("orders_topics")
def test_orders_pipeline_end_to_end_with_two_schema_versions(
    kafka_bootstrap: str,
    start_worker: Callable[..., WorkerProcess],
    unique_name: NameFactory,
    tmp_path: Path,
) -> None:
    samples = generate_orders(2_000, seed=7) + KNOWN
    by_id = {s.order_id: s for s in samples}
    invalid_ids = {s.order_id for s in samples if s.kind == "invalid"}
    review_ids = {s.order_id for s in samples if s.kind == "high_value"}
    valid_ids = set(by_id) - invalid_ids
    v1_ids = {s.order_id for s in samples if s.version == "v1"}
    # The mix this test relies on, so a generator change cannot hollow it out.
    assert len(invalid_ids) >= 20 and len(review_ids) >= 50 and len(v1_ids & valid_ids) >= 200

    produce(kafka_bootstrap, orders.rates_topic.name, rate_records())
    produce(kafka_bootstrap, orders.raw.name, encode_orders(samples))
    group = unique_name("orders")
    # The hourly revenue window keeps a store: in the test's directory, not ./state.
    worker = start_worker(
        "pipelines.orders:app", STREAMKIT_GROUP_ID=group, STREAMKIT_STATE_DIR=str(tmp_path)
    )
    wait_until_committed(kafka_bootstrap, group, orders.raw.name, worker)
    worker.signal(signal.SIGTERM)
    assert worker.wait(_TIMEOUT_S) == 0, worker.output()[-3000:]

    enriched = read_json(kafka_bootstrap, orders.enriched.name, len(valid_ids))
    invalid = read_json(kafka_bootstrap, orders.invalid.name, len(invalid_ids))
    review = read_json(kafka_bootstrap, orders.review.name, len(review_ids))

    # Every order lands in exactly one of enriched and invalid.
    assert set(enriched) == valid_ids
    assert set(invalid) == invalid_ids
    assert len(invalid) == sum(s.kind == "invalid" for s in samples)
    # Review holds exactly the high-value orders, each as enriched.
    assert set(review) == review_ids
    assert all(review[i] == enriched[i] for i in review)
    assert all(enriched[i]["total_eur"] >= orders.REVIEW_THRESHOLD_EUR for i in review_ids)
    assert all(
        enriched[i]["total_eur"] < orders.REVIEW_THRESHOLD_EUR for i in valid_ids - review_ids
    )

    # v1 records decode into the current shape, with channel's default.
    for order_id, value in enriched.items():
        sample = by_id[order_id]
        assert value["channel"] == ("web" if sample.version == "v1" else sample.order["channel"])
    assert all(invalid[i]["order"]["channel"] == "web" for i in invalid_ids & v1_ids)

    # Known records, worked out by hand.
    assert enriched["known-eur"] == {
        "order_id": "known-eur",
        "customer_id": "cust-k1",
        "channel": "app",
        "created_at": "2024-06-01T12:00:00+00:00",
        "currency": "EUR",
        "items": [
            {"sku": "SKU-A", "quantity": 2, "unit_price": 12.5, "line_total": 25.0},
            {"sku": "SKU-B", "quantity": 1, "unit_price": 5.0, "line_total": 5.0},
        ],
        "item_count": 3,
        "total": 30.0,
        "total_eur": 30.0,
    }
    usd = enriched["known-usd-v1"]
    assert (usd["channel"], usd["total"], usd["total_eur"]) == ("web", 300.0, 276.0)
    jpy = enriched["known-jpy"]  # 203,000 JPY x 0.0061 = 1,238.30 EUR
    assert (jpy["total"], jpy["total_eur"], jpy["item_count"]) == (203_000.0, 1238.3, 3)
    assert "known-jpy" in review
    assert invalid["known-bad-v1"]["reasons"] == ["SKU-F: quantity must be positive, got 0"]
