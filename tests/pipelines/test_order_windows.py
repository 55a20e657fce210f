"""The orders pipeline's windows in the test harness: hourly revenue and shopping sessions.

10,000 sample orders (4.2 hours of them) go through ``pipelines.orders``; its
enriched orders then through ``pipelines.sessions``. Each window re-keys them
by customer (``group_by=``) into a repartition topic of its app, and is
checked against the brute-force window reference
(``tests/unit/windows/reference.py``) replayed over each partition of that
topic in offset order, since stream time and lateness are per partition: the
emitted windows and the late records must be exactly the reference's.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from pipelines import orders, sessions
from pipelines.sample_data import encode_orders, generate_orders, rate_records
from streamkit.testing import Record, TestApp
from tests.unit.windows import reference

HOUR_MS = 3_600_000


@dataclass
class Run:
    enriched: list[Record]
    hourly_rekeyed: list[Record]  # orders.hourly_revenue.repartition
    hourly: list[dict[str, Any]]
    hourly_late: list[Record]
    sessions_rekeyed: list[Record]  # order-sessions.shopping_sessions.repartition
    sessions: list[dict[str, Any]]
    sessions_late: list[Record]


def ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso).timestamp() * 1000)


@pytest.fixture(scope="module")
def run() -> Run:
    t = TestApp(orders.app)
    for key, value in rate_records():
        t.send(orders.rates_topic, value, key=key, raw=True)
    with t:
        for key, value in encode_orders(generate_orders(10_000)):
            t.send(orders.raw, value, key=key, raw=True)
        t.run_until_idle()
        enriched = t.records(orders.enriched)
        hourly_rekeyed = t.records(orders.hourly_revenue.source)
        hourly, hourly_late = t.output(orders.hourly), t.records("orders.hourly_revenue.late")
    with TestApp(sessions.app) as t:
        for r in enriched:  # as the orders app wrote them
            t.send(
                sessions.enriched,
                r.value,
                key=r.key,
                headers=r.headers,
                partition=r.partition,
                timestamp=r.timestamp,
            )
        t.run_until_idle()
        sessions_rekeyed = t.records(sessions.shopping_sessions.source)
        found = t.output(sessions.sessions)
        found_late = t.records("order-sessions.shopping_sessions.late")
    return Run(enriched, hourly_rekeyed, hourly, hourly_late, sessions_rekeyed, found, found_late)


def per_partition(records: list[Record], value: Any) -> dict[int, list[reference.Arrival]]:
    arrivals: dict[int, list[reference.Arrival]] = defaultdict(list)
    for r in records:
        arrivals[r.partition].append((r.key, ms(r.value["created_at"]), value(r.value)))
    return arrivals


@pytest.mark.parametrize(
    ("field", "topic"),
    [
        ("hourly_rekeyed", "orders.hourly_revenue.repartition"),
        ("sessions_rekeyed", "order-sessions.shopping_sessions.repartition"),
    ],
)
def test_each_window_reads_every_enriched_order_once_keyed_by_its_customer(
    run: Run, field: str, topic: str
) -> None:
    records: list[Record] = getattr(run, field)
    assert {r.topic for r in records} == {topic}
    assert Counter(r.value["order_id"] for r in records) == Counter(
        r.value["order_id"] for r in run.enriched
    )
    assert len(records) > 9_000
    assert all(r.key == r.value["customer_id"] for r in records)


def test_hourly_revenue_is_each_customers_sum_per_hour_as_the_reference_has_it(run: Run) -> None:
    want, late = set(), []
    grace = orders.GRACE_S * 1000
    for arrivals in per_partition(run.hourly_rekeyed, lambda v: v["total_eur"]).values():
        results, lost = reference.hopping(arrivals, HOUR_MS, HOUR_MS, grace)
        want |= {(k, start, round(eur, 2)) for k, start, _, eur in results}
        late += lost
    got = {(w["customer_id"], ms(w["hour"]), w["revenue_eur"]) for w in run.hourly}
    assert len(got) == len(run.hourly) > 500
    assert got == want
    assert sorted((r.key, ms(r.value["created_at"])) for r in run.hourly_late) == sorted(
        (k, ts) for k, ts, _ in late
    )


def test_sessions_are_the_orders_grouped_with_a_30_minute_gap_as_the_reference_has_it(
    run: Run,
) -> None:
    want, late = set(), []
    grace = orders.GRACE_S * 1000
    for arrivals in per_partition(run.sessions_rekeyed, lambda v: 1).values():
        results, lost = reference.sessions(arrivals, sessions.GAP_S * 1000, grace)
        want |= set(results)
        late += lost
    got = {
        (s["customer_id"], ms(s["first_order"]), ms(s["last_order"]), s["orders"])
        for s in run.sessions
    }
    assert len(got) == len(run.sessions) > 500
    assert got == want
    assert any(n > 1 for *_, n in got), "no session with more than one order"
    assert len(run.sessions_late) == len(late)
