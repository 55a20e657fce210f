"""Minimal stand-ins for confluent-kafka messages and producers, for unit tests."""

from __future__ import annotations

from typing import Any

from streamkit.backends.memory_broker import MemoryMessage


class FakeMessage(MemoryMessage):
    """The in-memory broker's message, with test-friendly defaults and the value first."""

    __slots__ = ()

    def __init__(
        self,
        value: bytes | None,
        key: bytes | None = b"k",
        topic: str = "in",
        partition: int = 0,
        offset: int = 0,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        super().__init__(topic, partition, offset, key, value, headers, 1_700_000_000_000)


class FakeProducer:
    """Records produced messages; ``poll`` acknowledges them (or fails them)."""

    def __init__(self, fail_with: Any = None, full_times: int = 0) -> None:
        self.sent: list[dict[str, Any]] = []
        self._pending: list[Any] = []
        self._fail_with = fail_with
        self._full_times = full_times
        self.polls = 0

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        callback: Any = None,
        on_delivery: Any = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None:
        """confluent-kafka's signature and positional order (callback aliases on_delivery)."""
        on_delivery = on_delivery or callback
        if self._full_times:
            self._full_times -= 1
            raise BufferError("queue full")
        self.sent.append(
            {
                "topic": topic,
                "value": value,
                "key": key,
                "headers": headers,
                "on_delivery": on_delivery,
            }
        )
        self._pending.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        self.polls += 1
        pending, self._pending = self._pending, []
        for callback in pending:
            callback(self._fail_with, None)
        return len(pending)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0
