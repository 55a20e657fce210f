"""Shopping sessions: a customer's orders less than 30 minutes apart are one session.

::

    orders.enriched (JSON enriched orders, key = order id; from pipelines.orders)
      └── shopping_sessions.repartition (internal, from group_by=customer_id)
            └── order-sessions.shopping_sessions.repartition  the same orders, key = customer id
                  └── shopping_sessions (session windows, 30 min gap, final, 2 h grace)
                        └── orders.sessions  per session: first and last order time, orders, EUR

Its own app, so its own consumer group: it reads the orders pipeline's
enriched orders beside that pipeline's hourly revenue window, and re-keys
them by customer through a repartition topic of its own (each app's
``group_by=`` writes ``<app>.<agent>.repartition``). Run it with ``make
demo``, or ``streamkit run pipelines.sessions:app``.
"""

from __future__ import annotations

from typing import Any

from pipelines.orders import GRACE_S, created_at, customer_id, iso
from streamkit import App, Session, Window
from streamkit.windows import aggregate

app = App("order-sessions")

# Declared as pipelines.orders declares it, so either app can create it.
enriched = app.topic("orders.enriched", value_serde="json", partitions=4)
sessions = app.topic("orders.sessions", value_serde="json", partitions=4)
GAP_S = 30 * 60


def add(acc: dict[str, Any], order: dict[str, Any]) -> dict[str, Any]:
    """One more order in the session."""
    return {"orders": acc["orders"] + 1, "eur": round(acc["eur"] + order["total_eur"], 2)}


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two sessions an order bridged."""
    return {"orders": a["orders"] + b["orders"], "eur": round(a["eur"] + b["eur"], 2)}


def session_result(customer: str, window: Window, acc: dict[str, Any]) -> dict[str, Any]:
    """A closed session: who, from when to when, how many orders, how much."""
    return {
        "customer_id": customer,
        "first_order": iso(window.start),
        "last_order": iso(window.end),
        "orders": acc["orders"],
        "revenue_eur": acc["eur"],
    }


shopping_sessions = app.window(
    enriched,
    Session(gap=GAP_S),
    name="shopping_sessions",
    aggregate=aggregate(lambda: {"orders": 0, "eur": 0.0}, add, merge),
    grace=GRACE_S,
    emits=[sessions],
    timestamp=created_at,
    result=session_result,
    group_by=customer_id,  # through order-sessions.shopping_sessions.repartition
)
