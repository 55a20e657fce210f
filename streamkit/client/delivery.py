"""Delivery reports to their senders, cheaply: a slot object per record, one wake-up per batch.

A hand-written producer loop pays for ``produce`` and a callback per
record, and nothing else; a client that created a future with a lock per
record, and woke the event loop once per delivery report, paid ten times
that (bench/README.md, "Client"). Here a record's :class:`Delivery` is its
own callback (no closure, no lock). For ``await send(...)`` it also holds an
asyncio future, and reports reach the loop through an :class:`Inbox`: the
poll thread appends, and schedules one drain on the loop per batch, not
one per record.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

from streamkit.errors import ClientError


@dataclass(frozen=True, slots=True)
class Sent:
    """Where the broker put a record."""

    topic: str
    partition: int
    offset: int


class Delivery:
    """One record's delivery report, filled in on the thread that polls the producer.

    A few slots and no lock: :meth:`Client.send_nowait` makes one per
    record. It keeps where the record went, not librdkafka's message, which
    would keep the record's bytes alive for as long as the caller keeps this.
    """

    __slots__ = ("_failed", "error", "offset", "partition", "topic")

    def __init__(self, topic: str, failed: list[Delivery]) -> None:
        self.topic = topic
        self._failed = failed
        self.partition = -1
        self.offset = -1
        self.error: str | None = None

    def __call__(self, err: Any, msg: Any) -> None:
        """The delivery report (librdkafka's ``on_delivery``, on the polling thread)."""
        if err is None:
            self.offset = msg.offset()
            self.partition = msg.partition()
        else:
            self.error = str(err.str())
            self.partition = -2  # answered
            self._failed.append(self)

    @property
    def done(self) -> bool:
        """The broker answered (either way)."""
        return self.partition != -1

    @property
    def sent(self) -> Sent:
        """Where the record went.

        Raises:
            ClientError: Refused, or not answered yet.
        """
        if self.error is not None or self.partition < 0:
            raise ClientError(f"{self.topic}: {self.error or 'not delivered yet'}")
        return Sent(self.topic, self.partition, self.offset)


class AwaitedDelivery(Delivery):
    """A delivery that an ``await send(...)`` waits for on its event loop."""

    __slots__ = ("_future", "_inbox")

    def __init__(
        self, topic: str, failed: list[Delivery], inbox: Inbox, future: asyncio.Future[Sent]
    ) -> None:
        super().__init__(topic, failed)
        self._inbox = inbox
        self._future = future

    def __call__(self, err: Any, msg: Any) -> None:
        """The delivery report; the waiting loop is told with the rest of its batch."""
        # Delivery.__call__'s fields, written out again: sharing them would
        # cost send_nowait a call per report (its callback is the whole of
        # its overhead over a raw produce loop), and a refusal here goes to
        # the awaiting caller, not to the list the next flush() raises for.
        if err is None:
            self.offset = msg.offset()
            self.partition = msg.partition()
        else:
            self.error = str(err.str())
            self.partition = -2
        self._inbox.arrived(self)

    def settle(self) -> None:
        """Resolve the waiting future (the loop's thread)."""
        future = self._future
        if future.done():
            return
        error = self.error
        if error is not None:
            future.set_exception(ClientError(f"{self.topic}: the broker refused it: {error}"))
        else:
            future.set_result(self.sent)


class Inbox:
    """Delivery reports waiting for one event loop to settle them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._waiting: deque[AwaitedDelivery] = deque()
        self._scheduled = False

    def arrived(self, delivery: AwaitedDelivery) -> None:
        """A report came (the poll thread): settle it with the rest of its batch."""
        self._waiting.append(delivery)
        if not self._scheduled:
            self._scheduled = True
            if not self.loop.is_closed():
                self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        # Cleared first: a report appended from here on schedules the next
        # drain, or is taken by this one; none is left behind.
        self._scheduled = False
        waiting = self._waiting
        while waiting:
            waiting.popleft().settle()
