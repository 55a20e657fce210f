"""``pipelines/payments.py`` in the test harness: dedupe with a TTL, totals per customer."""

from __future__ import annotations

from pipelines.payments import app
from streamkit.testing import TestApp

DAY_MS = 24 * 3600 * 1000


def pay(t: TestApp, payment: str, customer: str, cents: int, at_ms: int) -> None:
    t.send(
        "payments.raw",
        {"id": payment, "customer": customer, "cents": cents},
        key=payment,
        timestamp=at_ms,
    )


def test_redelivered_payments_count_once_and_totals_survive_a_crash() -> None:
    with TestApp(app) as t:
        pay(t, "p1", "c1", 500, DAY_MS)
        pay(t, "p1", "c1", 500, DAY_MS + 1)  # the provider's retry
        pay(t, "p2", "c1", 250, DAY_MS + 2)
        t.run_until_idle()
        assert t.table("totals") == {"c1": {"customer": "c1", "payments": 2, "cents": 750}}
        t.crash_and_restart()
        pay(t, "p2", "c1", 250, DAY_MS + 3)  # still a duplicate after the restart
        pay(t, "p3", "c2", 100, DAY_MS + 4)
        t.run_until_idle()
        assert t.table("totals")["c1"]["cents"] == 750
        assert t.output("payments.totals")[-1] == {"customer": "c2", "payments": 1, "cents": 100}


def test_a_payment_id_is_forgotten_after_a_week_of_event_time() -> None:
    with TestApp(app) as t:
        pay(t, "p1", "c1", 500, DAY_MS)
        pay(t, "p1", "c1", 500, 9 * DAY_MS)  # eight days later: a new payment
        t.run_until_idle()
        assert t.table("totals")["c1"]["payments"] == 2
        assert "p1" in t.table("seen")
