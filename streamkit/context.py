"""The per-record context handed to agents that take ``(value, ctx)``.

A context is built only for agents whose signature asks for one (decided at
declaration time), and decodes the key lazily: most agents never read it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streamkit.types import Headers

if TYPE_CHECKING:
    from streamkit.requests import Request
    from streamkit.topics import Topic


class _Keep:
    """Sentinel type: emit with the input record's key."""

    def __repr__(self) -> str:
        return "KEEP_KEY"


KEEP_KEY: Any = _Keep()

EmitFn = Callable[["str | Topic", Any, Any, "Headers | None", "Context", int], None]
# Sends a task's "running" or progress status at once: (ctx, state, fraction, message).
StatusFn = Callable[["Context", str, "float | None", "str | None"], None]


class Context:
    """Where a record came from, and a way to emit records explicitly.

    Attributes:
        topic: Source topic.
        partition: Source partition.
        offset: Source offset.
        timestamp: Record timestamp in milliseconds since the epoch.
        headers: Record headers as ``[(name, bytes), ...]`` (empty list if none).
        raw_key: The key as bytes, as read from Kafka.
    """

    __slots__ = (
        "_decode_key",
        "_emit",
        "_status",
        "headers",
        "offset",
        "partition",
        "raw_key",
        "request",
        "ticket",
        "timestamp",
        "topic",
    )

    def __init__(
        self,
        msg: Any,
        ticket: Any,
        decode_key: Callable[[bytes], Any],
        emit: EmitFn,
        status: StatusFn | None = None,
    ) -> None:
        self.topic: str = msg.topic()
        self.partition: int = msg.partition()
        self.offset: int = msg.offset()
        self.timestamp: int = msg.timestamp()[1]
        self.headers: Headers = msg.headers() or []
        self.raw_key: bytes | None = msg.key()
        self.ticket = ticket
        self._decode_key = decode_key
        self._emit = emit
        self._status = status
        # The request this record carries (requests=True agents), if any.
        self.request: Request | None = None

    @property
    def key(self) -> Any:
        """The key decoded with the source topic's key serde (``None`` if absent)."""
        raw = self.raw_key
        return None if raw is None else self._decode_key(raw)

    def emit(
        self,
        topic: str | Topic,
        value: Any,
        key: Any = KEEP_KEY,
        headers: Headers | None = None,
        timestamp: int | None = None,
    ) -> None:
        """Emit one record to a topic listed in the agent's ``emits``.

        The record counts towards this input record: its offset is committed
        only after the broker acknowledged every emitted record.

        Args:
            topic: A topic from the agent's ``emits`` (object or name).
            value: The value, encoded with the topic's value serde.
            key: The key, encoded with the topic's key serde; by default the
                input record's key bytes are kept; ``None`` emits no key.
            headers: Headers for the emitted record.
            timestamp: Its timestamp in epoch ms; by default the producer's
                clock stamps it when it is sent.
        """
        self._emit(topic, value, key, headers, self, timestamp or 0)

    def start_request(self, request: Request) -> None:
        """The record is a request (called by the wrapper of ``requests=True`` agents)."""
        self.request = request
        if request.task_id is not None and self._status is not None:
            self._status(self, "running", None, None)

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report how far this record's task is (0.0 to 1.0), for ``status`` and ``result`` callers.

        Sent at once, outside the record's transaction: a caller sees it
        while the work runs. A record that is not a submitted task ignores
        it, so an agent may report progress whoever called it.
        """
        if self.request is None or self.request.task_id is None or self._status is None:
            return
        self._status(self, "running", min(max(float(fraction), 0.0), 1.0), message)
