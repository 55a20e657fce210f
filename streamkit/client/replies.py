"""Replies to one client: the one partition of ``<app>.replies`` its reply key hashes to.

Every client of an app shares the reply topic (one per app, not one per
process); each reads only the partition its own reply key lands in, and
keeps only the replies it waits for: a reply to a caller that timed out, or
to another client on the same partition, is dropped on arrival and left to
the topic's retention. So memory is bounded by the calls in flight.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from concurrent.futures import Future
from typing import Any

import structlog
from confluent_kafka import TopicPartition

from streamkit.backends.kafka import create_consumer, watermarks
from streamkit.config import AppConfig
from streamkit.requests import H_CORRELATION
from streamkit.state.partitioner import partitioner_for

log = structlog.get_logger("streamkit.client")
_POLL_S = 0.05


class Replies:
    """Waits for replies on this client's partition of ``topic``.

    Args:
        config: The app's settings (connection, security).
        topic: ``<app>.replies``.
        partitions: Its partition count.
        reply_key: This client's key: the worker keys replies by it.
    """

    def __init__(self, config: AppConfig, topic: str, partitions: int, reply_key: str) -> None:
        self.reply_key = reply_key
        self.partition = partitioner_for(config.librdkafka("producer"))(
            reply_key.encode(), partitions
        )
        self._waiting: dict[str, Future[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.dropped = 0
        self._consumer = create_consumer(
            config,
            **{"group.id": f"streamkit-client-{uuid.uuid4().hex}", "enable.auto.commit": False},
        )
        # From the end as it is now, fixed before any request goes out: a
        # reply cannot slip in between an OFFSET_END lookup and the request.
        _, high = watermarks(self._consumer, TopicPartition(topic, self.partition), timeout=30)
        self._consumer.assign([TopicPartition(topic, self.partition, high)])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamkit-replies", daemon=True)
        self._thread.start()

    def expect(self, correlation_id: str) -> Future[dict[str, Any]]:
        """A future for the reply to ``correlation_id`` (register before sending)."""
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            self._waiting[correlation_id] = future
        return future

    def forget(self, correlation_id: str) -> None:
        """Stop waiting (a timeout or a cancelled caller): a late reply is dropped."""
        with self._lock:
            self._waiting.pop(correlation_id, None)

    @property
    def in_flight(self) -> int:
        """Calls waiting for their reply."""
        return len(self._waiting)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                # consume(n, timeout) waits out the timeout unless n records
                # come; one record's wait, then what else is there, returns
                # as soon as the first reply does (runtime/fetcher.py does the same).
                batch = self._consumer.consume(1, timeout=_POLL_S)
                if batch:
                    batch += self._consumer.consume(500, timeout=0)
            except Exception as exc:  # the broker away: librdkafka reconnects
                log.warning("reading replies failed", error=str(exc))
                self._stop.wait(1.0)
                continue
            for msg in batch:
                if msg.error() is not None:
                    continue
                self._deliver(msg)

    def _deliver(self, msg: Any) -> None:
        cid = next((v.decode() for k, v in (msg.headers() or []) if k == H_CORRELATION and v), None)
        with self._lock:
            future = self._waiting.pop(cid, None) if cid is not None else None
        if future is None:
            self.dropped += 1
            return
        try:
            future.set_result(json.loads(msg.value()))
        except ValueError as exc:
            future.set_exception(exc)

    def close(self) -> None:
        """Stop reading; callers still waiting get ``CancelledError``."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            future.cancel()


async def wait_reply(future: Future[dict[str, Any]], timeout: float | None) -> dict[str, Any]:
    """``future``'s reply on the running loop, within ``timeout`` seconds."""
    return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
