"""The worker's side of requests: progress at once, and the answer to a request that failed.

A task's final status and a reply are outputs of their record, emitted by
the agent's wrapper (:func:`streamkit.requests.serving`). What is here is
what cannot wait for the record's commit: :class:`StatusSender` produces
"running" and progress records straight away, on the worker's producer at
least once and on a producer of its own exactly once (the worker's is
transactional: its records show only when the transaction commits). And
:func:`answer_failures` makes the dead-letter path answer a request that
failed for good, in the same checkpoint as its dead letter.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import structlog

from streamkit.context import Context, StatusFn
from streamkit.requests import failure_records, status, tasks_topic
from streamkit.runtime.failures import Settle

log = structlog.get_logger("streamkit.requests")


class StatusSender:
    """Produces task statuses that must not wait for a commit.

    Args:
        app_name: The app: statuses go to ``<app>.tasks``.
        producer: Opens the producer, when the first status is sent.
    """

    def __init__(self, app_name: str, producer: Callable[[], Any]) -> None:
        self._topic = tasks_topic(app_name).name
        self._open = producer
        self._producer: Any = None
        self.sent = 0

    def for_agent(self, agent: str) -> StatusFn:
        """The ``ctx`` status hook of one agent."""

        def send(ctx: Context, state: str, fraction: float | None, message: str | None) -> None:
            request = ctx.request
            if request is None or request.task_id is None:
                return
            value = status(
                request.task_id,
                agent,
                state,
                progress=fraction,
                message=message,
                submitted_at=request.submitted_at,
            )
            producer = self._producer or self._start()
            try:
                producer.produce(self._topic, json.dumps(value).encode(), request.task_id.encode())
            except BufferError:
                # Progress is advice: with the queue full, this one is dropped
                # rather than stalling the agent; the next one will do.
                log.warning("task progress dropped: the producer queue is full", agent=agent)
                return
            producer.poll(0)
            self.sent += 1

        return send

    def _start(self) -> Any:
        self._producer = self._open()
        return self._producer

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (an own producer only)."""
        if self._producer is not None:
            self._producer.flush(timeout)


def answer_failures(app_name: str, agent: str, send: Settle) -> Callable[..., None]:
    """The dead-letter hook of a ``requests=True`` agent: reply and status with the error.

    ``send`` is the agent's settling sender, so the answers are produced
    like the dead letter, for its ticket (held for the transaction exactly
    once).
    """

    def answer(msg: Any, ticket: Any, error: dict[str, Any]) -> None:
        for topic, key, value, headers in failure_records(
            app_name, agent, msg.headers() or [], error
        ):
            send(topic, value, key, headers, ticket)

    return answer
