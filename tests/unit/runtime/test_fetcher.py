"""The fetcher hands over what librdkafka holds without waiting for a batch to fill."""

from __future__ import annotations

import threading
import time
from collections import deque
from types import SimpleNamespace
from typing import Any

from streamkit.runtime.fetcher import Fetcher
from tests.unit.runtime.fakes import FakeMessage


class QueueConsumer:
    """librdkafka's consume() contract: block up to ``timeout`` until ``num_messages`` arrived."""

    def __init__(self, msgs: list[FakeMessage]) -> None:
        self.queue = deque(msgs)
        # consume() calls that would have blocked on a part-filled batch.
        self.waited_on_partial_batch = 0

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        if self.queue and len(self.queue) < num_messages and timeout != 0:
            self.waited_on_partial_batch += 1
        if not self.queue and timeout:
            time.sleep(0.001)  # nothing to hand over; librdkafka would wait
        n = min(num_messages, len(self.queue))
        return [self.queue.popleft() for _ in range(n)]

    def pause(self, _partitions: Any) -> None: ...

    def resume(self, _partitions: Any) -> None: ...

    def assignment(self) -> list[Any]:
        return []

    def close(self) -> None: ...


def test_a_trickle_is_handed_over_without_waiting_for_a_full_batch() -> None:
    consumer = QueueConsumer([FakeMessage(b"v", offset=i) for i in range(3)])
    worker = SimpleNamespace(
        backlog=0,
        paused=False,
        revoked=False,
        first_offset=None,
        delayed=False,
        due_at=0.0,
        offsets=SimpleNamespace(in_flight=0),
        handed=0,
        tp=SimpleNamespace(topic="in", partition=0),
    )
    received: list[Any] = []
    all_in = threading.Event()

    def dispatch(pairs: list[tuple[Any, list[Any]]]) -> None:
        for _, msgs in pairs:
            received.extend(msgs)
        if len(received) == 3:
            all_in.set()

    fetcher = Fetcher(
        consumer,
        {("in", 0): worker},  # type: ignore[dict-item]
        dispatch,
        batch=500,
        max_backlog=10_000,
        max_bytes=10**8,
        on_fatal=lambda exc: None,
    )
    fetcher.start()
    try:
        assert all_in.wait(5), f"handed over {len(received)} of 3"
    finally:
        fetcher.close(lambda _c: None).result(5)
    assert [m.offset() for m in received] == [0, 1, 2]
    assert consumer.waited_on_partial_batch == 0, "asked librdkafka to wait for 500 records"
