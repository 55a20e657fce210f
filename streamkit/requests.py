"""Requests: records sent to an agent by code that waits for what became of them.

A web handler hands slow work to an agent and returns; it then learns the
outcome, either by waiting for a reply (``ask``) or by looking the task up
later (``submit``, ``status``). Both ride on ordinary records with headers:

* ``streamkit-correlation-id`` and ``streamkit-reply-key`` ask for a reply.
  The worker sends the agent's return value to the app's one reply topic,
  ``<app>.replies``, keyed by the caller's reply key, so it lands in the one
  partition that caller reads. A caller that has gone leaves its replies to
  the topic's short retention (:data:`REPLY_RETENTION_MS`).
* ``streamkit-task-id`` makes the record a task. Its status (queued,
  running, progress, done with the result, failed with the error) is a
  record keyed by the task id in the compacted topic ``<app>.tasks``,
  whose retention (:data:`TASK_RETENTION_MS`) bounds what is kept.

An agent takes requests when declared with ``requests=True``. Its function
is wrapped once, at declaration (:func:`serving`): a record without the
headers costs one scan of its headers; with them, the reply and the final
status are emitted like any output of the record, so they are committed
with it (in its transaction, exactly once), and a record that fails for
good is answered from the dead-letter path (:func:`failure_records`) with
a structured error: type, message, attempts, stage, dead-letter topic.
"Running" and progress go out at once on a side producer, outside any
transaction, because a caller wants them while the work runs.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamkit.errors import DeclarationError
from streamkit.topics import Topic

if TYPE_CHECKING:
    from streamkit.context import Context

H_CORRELATION = "streamkit-correlation-id"
H_REPLY_KEY = "streamkit-reply-key"
H_TASK = "streamkit-task-id"
H_SUBMITTED = "streamkit-submitted-at"

# A reply is read within seconds or never: ten minutes is room for a slow
# caller and a broker hiccup, and bounds what a caller that left costs.
REPLY_RETENTION_MS = 10 * 60 * 1000
# Task statuses are looked up by people and dashboards: a week, then gone
# (compaction keeps only each task's latest status meanwhile).
TASK_RETENTION_MS = 7 * 24 * 3600 * 1000

STATES = ("queued", "running", "done", "failed")
# A status never goes back: a late "queued" does not undo "running".
RANK = {state: i for i, state in enumerate(STATES)}


def replies_topic(app_name: str) -> Topic:
    """``<app>.replies``: every reply of the app, keyed by the caller's reply key."""
    return _request_topic(f"{app_name}.replies", "delete", REPLY_RETENTION_MS)


def tasks_topic(app_name: str) -> Topic:
    """``<app>.tasks``: each task's latest status, keyed by task id."""
    return _request_topic(f"{app_name}.tasks", "compact,delete", TASK_RETENTION_MS)


def _request_topic(name: str, cleanup_policy: str, retention_ms: int) -> Topic:
    # Both are written by workers and read by clients of any process, so
    # their format is fixed here, not per app: str keys, JSON values.
    return Topic(
        name,
        key_serde="str",
        value_serde="json",
        config={"cleanup.policy": cleanup_policy, "retention.ms": str(retention_ms)},
    )


@dataclass(slots=True)
class Request:
    """What a record's headers ask for: a reply, a task's status, or both."""

    correlation_id: str | None
    reply_key: str | None
    task_id: str | None
    submitted_at: int | None = None


def request_of(headers: list[tuple[str, bytes]]) -> Request | None:
    """The request in ``headers``, or ``None`` for a plain record."""
    found: dict[str, str] = {}
    for name, value in headers:
        if name.startswith("streamkit-") and value is not None:
            found[name] = value.decode("utf-8", "replace")
    if H_CORRELATION not in found and H_TASK not in found:
        return None
    submitted = found.get(H_SUBMITTED)
    return Request(
        found.get(H_CORRELATION),
        found.get(H_REPLY_KEY),
        found.get(H_TASK),
        int(submitted) if submitted and submitted.isdigit() else None,
    )


def status(
    task_id: str,
    agent: str,
    state: str,
    *,
    progress: float | None = None,
    message: str | None = None,
    result: Any = None,
    error: dict[str, Any] | None = None,
    submitted_at: int | None = None,
) -> dict[str, Any]:
    """A task status record's value (``<app>.tasks``)."""
    return {
        "task_id": task_id,
        "agent": agent,
        "state": state,
        "progress": progress,
        "message": message,
        "result": result,
        "error": error,
        "submitted_at": submitted_at,
        "updated_at": int(time.time() * 1000),
    }


def serving(
    fn: Callable[..., Any], takes_ctx: bool, agent: str, replies: Topic, tasks: Topic
) -> Callable[..., Any]:
    """``fn`` wrapped to answer requests: a ``(value, ctx)`` function of the same kind.

    Raises:
        DeclarationError: ``fn`` is a generator: a request gets one answer.
    """
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise DeclarationError(
            f"agent {agent}: requests=True needs a function that returns its answer, "
            "not a generator"
        )

    def call(value: Any, ctx: Context) -> Any:
        return fn(value, ctx) if takes_ctx else fn(value)

    def finish(request: Request, ctx: Context, result: Any) -> None:
        if request.correlation_id is not None and request.reply_key is not None:
            ctx.emit(
                replies,
                {"ok": True, "value": result},
                key=request.reply_key,
                headers=[(H_CORRELATION, request.correlation_id.encode())],
            )
        if request.task_id is not None:
            done = status(
                request.task_id,
                agent,
                "done",
                progress=1.0,
                result=result,
                submitted_at=request.submitted_at,
            )
            ctx.emit(tasks, done, key=request.task_id)

    if inspect.iscoroutinefunction(fn):

        async def serve_async(value: Any, ctx: Context) -> Any:
            request = request_of(ctx.headers)
            if request is None:
                return await call(value, ctx)
            ctx.start_request(request)
            result = await call(value, ctx)
            finish(request, ctx, result)
            return result

        serve_async.__name__ = getattr(fn, "__name__", agent)
        return serve_async

    def serve(value: Any, ctx: Context) -> Any:
        request = request_of(ctx.headers)
        if request is None:
            return call(value, ctx)
        ctx.start_request(request)
        result = call(value, ctx)
        finish(request, ctx, result)
        return result

    serve.__name__ = getattr(fn, "__name__", agent)
    return serve


def failure_records(
    app_name: str,
    agent: str,
    headers: list[tuple[str, bytes]],
    error: dict[str, Any],
) -> list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]:
    """The reply and the failed status for a request that failed for good.

    Returns:
        ``(topic, key bytes, value bytes, headers)`` to produce with the
        dead letter; empty for a plain record.
    """
    request = request_of(headers)
    if request is None:
        return []
    out = []
    if request.correlation_id is not None and request.reply_key is not None:
        out.append(
            (
                replies_topic(app_name).name,
                request.reply_key.encode(),
                json.dumps({"ok": False, "error": error}).encode(),
                [(H_CORRELATION, request.correlation_id.encode())],
            )
        )
    if request.task_id is not None:
        failed = status(
            request.task_id, agent, "failed", error=error, submitted_at=request.submitted_at
        )
        out.append(
            (tasks_topic(app_name).name, request.task_id.encode(), json.dumps(failed).encode(), [])
        )
    return out
