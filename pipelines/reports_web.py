"""The reports web app: submit a report, get its id at once, watch it being built.

Routes:

* ``POST /reports`` with a JSON object (``{"region": "north", "days": 10}``)
  submits it to :func:`pipelines.reports.build_report` and answers 202
  ``{"task_id": ...}`` as soon as the broker has the request, whatever the
  work takes; ``Location`` is where to ask after it.
* ``GET /reports/{task_id}`` answers the task's latest status: ``state``
  (queued, running, done, failed), ``progress`` (0 to 1), ``message``,
  ``result`` and ``error``; 404 for a task nobody submitted (or expired),
  after :data:`LOOKUP_S`.
* ``GET /`` and ``GET /reports/{task_id}/page`` serve the page
  (:mod:`pipelines.reports_page`) whose progress bar polls the status.

One client is opened in the lifespan and shared by every request: it holds
the process's producer and the reader of ``<app>.tasks``, so a status
lookup reads memory once caught up with the topic. Serve it with::

    uvicorn pipelines.reports_web:web --port 8000

next to a worker (``streamkit run pipelines.reports:app``); ``make reports``
starts both and a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TypedDict, cast

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from pipelines import reports
from pipelines.reports_page import page
from streamkit.client import Client

# How long a lookup waits for a status nobody has read yet. A task the
# client has read answers at once; one submitted a moment ago is read
# within the client's 50 ms poll; a client that has just started reads a
# week of statuses first, which on a local broker takes well under this.
LOOKUP_S = 2.0


class State(TypedDict):
    """What the lifespan hands every request (``request.state``)."""

    client: Client


@contextlib.asynccontextmanager
async def lifespan(web: Starlette) -> AsyncIterator[State]:
    async with reports.app.client() as client:
        yield {"client": client}


async def submit_report(request: Request) -> Response:
    try:
        parameters: Any = json.loads(await request.body() or b"{}")
    except ValueError:
        return JSONResponse({"error": "the body is not JSON"}, status_code=400)
    if not isinstance(parameters, dict):
        return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
    # The parameters go as they are: the agent checks them, so a bad one
    # makes a failed task the page can show, not a form error.
    handle = await _client(request).submit(reports.build_report.__name__, parameters)
    return JSONResponse(
        {"task_id": handle.task_id},
        status_code=202,
        headers={"Location": f"/reports/{handle.task_id}"},
    )


async def report_status(request: Request) -> Response:
    task_id = request.path_params["task_id"]
    found = await _latest(_client(request), task_id)
    if found is None:
        return JSONResponse({"error": f"no task {task_id}"}, status_code=404)
    return JSONResponse(found)


async def index(request: Request) -> Response:
    return HTMLResponse(page(None))


async def report_page(request: Request) -> Response:
    return HTMLResponse(page(request.path_params["task_id"]))


async def _latest(client: Client, task_id: str) -> dict[str, Any] | None:
    """The task's latest status, or ``None`` if none arrives within ``LOOKUP_S``.

    ``client.watch`` rather than ``client.status``: the first status a
    watch yields is the latest one read, at once for a task already read,
    whereas ``status`` can block for as long as the client reads
    ``<app>.tasks`` (its catch-up asks for watermarks on the consumer its
    reading thread polls). The price: an unknown id waits ``LOOKUP_S``
    before its 404.
    """
    statuses = cast(AsyncGenerator[dict[str, Any], None], client.watch(task_id))
    async with contextlib.aclosing(statuses):
        try:
            return await asyncio.wait_for(anext(statuses), LOOKUP_S)
        except TimeoutError:
            return None


def _client(request: Request) -> Client:
    client: Client = request.state.client
    return client


web = Starlette(
    routes=[
        Route("/", index),
        Route("/reports", submit_report, methods=["POST"]),
        Route("/reports/{task_id}", report_status),
        Route("/reports/{task_id}/page", report_page),
    ],
    lifespan=lifespan,
)
