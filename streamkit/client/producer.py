"""One producer per process for every client of an app: shared, polled by one thread.

A web service opens a client per request, per worker thread or once at
start; every one of them sends through the same librdkafka producer (its
batching is where the throughput comes from), found here by the settings
that built it. The producer lives while a client uses it, and a thread
serves its delivery reports, so no caller has to poll.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from streamkit.backends.kafka import create_producer
from streamkit.config import AppConfig

# How long the poll thread waits for delivery reports per round: the
# longest a report is late to its caller when the producer is quiet.
_POLL_S = 0.05
# Every 64th record sent also serves delivery reports inline.
_INLINE_POLL_MASK = 63
DeliveryFn = Callable[[Any, Any], None]

_lock = threading.Lock()
_shared: dict[tuple[tuple[str, str], ...], SharedProducer] = {}


class SharedProducer:
    """A producer, the thread serving its delivery reports, and how many clients use it."""

    def __init__(self, config: AppConfig, key: tuple[tuple[str, str], ...]) -> None:
        self._key = key
        self.producer = create_producer(config)
        self._produce = self.producer.produce
        self._poll = self.producer.poll
        self._sent = 0
        self._inline_at = 0.0
        self.users = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="streamkit-client", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if time.monotonic() - self._inline_at < _POLL_S:
                # A sender is busy and serves reports itself (produce): two
                # threads taking turns at the GIL for every few reports cost
                # more CPU than the reports (bench.client).
                self._stop.wait(_POLL_S)
                continue
            self.producer.poll(_POLL_S)

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: list[Any] | None,
        on_delivery: DeliveryFn,
    ) -> None:
        """Queue one record; ``BufferError`` when librdkafka's queue is full."""
        # Positional up to the callback (keyword parsing costs per record);
        # confluent-kafka's sixth positional is on_delivery again, hence
        # headers by keyword, and only when there are any.
        if headers is None:
            self._produce(topic, value, key, -1, on_delivery)
        else:
            self._produce(topic, value, key, -1, on_delivery, headers=headers)
        self._sent += 1
        if self._sent & _INLINE_POLL_MASK == 0:
            # Serve the reports due so far on the sending thread now and
            # then, as a hand-written loop does; the poll thread stands back
            # meanwhile and serves only senders that went quiet.
            self._poll(0)
            self._inline_at = time.monotonic()

    def flush(self, timeout: float) -> int:
        """Wait for every queued record; returns how many are still queued."""
        left: int = self.producer.flush(timeout)
        return left

    def release(self, timeout: float) -> int:
        """One client less; the last one flushes and stops the thread."""
        with _lock:
            self.users -= 1
            if self.users > 0:
                return 0
            _shared.pop(self._key, None)
        left = self.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=5)
        return left


def shared_producer(config: AppConfig) -> SharedProducer:
    """The process's producer for ``config``'s producer settings (made on first use)."""
    key = tuple(sorted((k, str(v)) for k, v in config.librdkafka("producer").items()))
    with _lock:
        found = _shared.get(key)
        if found is None:
            found = _shared[key] = SharedProducer(config, key)
        found.users += 1
        return found
