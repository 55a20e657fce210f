"""A stateful pipeline: payments deduplicated per id, and a running total per customer.

Payment providers redeliver webhooks; the first agent drops a payment id it
has seen in the last 7 days (a table with a TTL), and re-keys the unique
payments by customer. The second keeps each customer's running total (a table
keyed like its source) and emits it on every payment.

    streamkit run pipelines.payments:app
    streamkit tables get pipelines.payments:app totals customer-7
    curl localhost:8080/tables/totals/customer-7     # with STREAMKIT_HTTP_PORT=8080
"""

from typing import Any

from streamkit import App, Context

app = App("payments")
raw = app.topic("payments.raw", partitions=4)  # key: payment id
unique = app.topic("payments.by-customer", partitions=4)  # key: customer id
totals_out = app.topic("payments.totals", partitions=4)

# A payment id is remembered for a week of event time, then forgotten.
seen = app.table("seen", ttl=7 * 24 * 3600)
totals = app.table("totals", default=dict)


@app.agent(raw, emits=[unique], tables=[seen])
def dedupe(payment: dict[str, Any], ctx: Context) -> None:
    if seen.get(ctx.key) is not None:
        return  # a redelivery: already passed on
    seen[ctx.key] = {"at": ctx.timestamp}
    ctx.emit(unique, payment, key=payment["customer"])


@app.agent(unique, emits=[totals_out], tables=[totals])
def total(payment: dict[str, Any], ctx: Context) -> dict[str, Any]:
    current = totals[ctx.key]
    current = {
        "customer": ctx.key,
        "payments": current.get("payments", 0) + 1,
        "cents": current.get("cents", 0) + payment["cents"],
    }
    totals[ctx.key] = current
    return current
