"""The reports app: slow work handed over by a web page, with progress you can watch.

``build_report`` answers requests (``requests=True``): a web handler
submits ``{"region": "north", "days": 10}`` with ``client.submit`` and
returns the task id at once (:mod:`pipelines.reports_web`); the worker
then builds the report one day at a time, reporting
``ctx.progress(day / days, "day 3 of 10: north")`` after each, and its
return value (a small summary) becomes the task's result in
``reports.tasks``. A bad parameter (an unknown region, a day count out of
range) raises ``ValueError``, which is not retried: the task ends failed
with that message, so the page can show a failure too.

Names come from the environment so tests run it with names of their own:
``REPORTS_APP`` (the app, default ``reports``), ``REPORTS_TOPIC`` (the
requests topic, default ``reports.requests``) and ``REPORTS_STEP_S``
(seconds per day of work, default 0.4: a 10-day report takes 4 s, slow
enough to watch the bar move).

Run it with ``make reports`` (:mod:`pipelines.reports_serve`), or by hand::

    streamkit run pipelines.reports:app
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

from streamkit import App, Context, RetryPolicy

REGIONS = ("east", "north", "south", "west")
MAX_DAYS = 60
DEFAULT_DAYS = 10
STEP_S = float(os.environ.get("REPORTS_STEP_S", "0.4"))

app = App(os.environ.get("REPORTS_APP", "reports"))
report_requests = app.topic(os.environ.get("REPORTS_TOPIC", "reports.requests"), partitions=4)


# Eight reports at once per partition: the work is mostly waiting. Only
# connection errors are worth retrying; a bad parameter fails the same way
# every time, so it goes straight to the dead-letter topic and the task
# ends failed after one attempt.
@app.agent(
    report_requests,
    requests=True,
    concurrency=8,
    retry=RetryPolicy(attempts=3, retry_on=(ConnectionError,)),
)
async def build_report(value: dict[str, Any], ctx: Context) -> dict[str, Any]:
    region, days = _parameters(value)
    orders = 0
    revenue = 0.0
    busiest = (0, 0)  # (orders, day)
    for day in range(1, days + 1):
        await asyncio.sleep(STEP_S)  # the slow part: a query, a render, an upload
        count, eur = _day_figures(region, day)
        orders += count
        revenue += eur
        busiest = max(busiest, (count, day))
        ctx.progress(day / days, f"day {day} of {days}: {region}")
    return {
        "region": region,
        "days": days,
        "orders": orders,
        "revenue_eur": round(revenue, 2),
        "busiest_day": busiest[1],
    }


def _parameters(value: dict[str, Any]) -> tuple[str, int]:
    """The request's region and day count, or a ``ValueError`` saying what is wrong."""
    region = value.get("region", "north")
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}: choose one of {', '.join(REGIONS)}")
    days = value.get("days", DEFAULT_DAYS)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be a whole number from 1 to {MAX_DAYS}, not {days!r}")
    return region, days


def _day_figures(region: str, day: int) -> tuple[int, float]:
    """One day's orders and revenue: made up, but the same on every run."""
    digest = hashlib.sha256(f"{region}/{day}".encode()).digest()
    count = 20 + digest[0] % 80
    return count, count * (15 + digest[1] % 40 + digest[2] / 256)
