"""The orders pipeline's windows in the test harness: hourly revenue and shopping sessions.

10,000 sample orders (4.2 hours of them) go through ``pipelines.orders``; its
re-keyed output then through ``pipelines.sessions``. Both are checked
against the brute-force window reference (``tests/unit/windows/reference.py``)
replayed over each ``orders.by_customer`` partition in offset order, since
stream time and lateness are per partition: the emitted windows and the late
records must be exactly the reference's.
"""

from __future__ import annotations

from collections import defaultdict
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
    by_customer: list[Record]
    hourly: list[dict[str, Any]]
    hourly_late: list[Record]
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
        by_customer = t.records(orders.by_customer)
        hourly, hourly_late = t.output(orders.hourly), t.records("orders.hourly_revenue.late")
    with TestApp(sessions.app) as t:
        for record in by_customer:
            t.send(sessions.by_customer, record.value, key=record.key, partition=record.partition)
        t.run_until_idle()
        found = t.output(sessions.sessions)
        found_late = t.records("order-sessions.shopping_sessions.late")
    return Run(by_customer, hourly, hourly_late, found, found_late)


def per_partition(run: Run, value: Any) -> dict[int, list[reference.Arrival]]:
    arrivals: dict[int, list[reference.Arrival]] = defaultdict(list)
    for r in run.by_customer:
        arrivals[r.partition].append((r.key, ms(r.value["created_at"]), value(r.value)))
    return arrivals


def test_hourly_revenue_is_each_customers_sum_per_hour_as_the_reference_has_it(run: Run) -> None:
    want, late = set(), []
    grace = orders.GRACE_S * 1000
    for arrivals in per_partition(run, lambda v: v["total_eur"]).values():
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
    for arrivals in per_partition(run, lambda v: 1).values():
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
