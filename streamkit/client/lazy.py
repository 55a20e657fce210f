"""A reader the client opens on first need, once, however many callers need it at once.

The reply reader and the task view each start a Kafka consumer, which
blocks for a broker round trip or more (a partition count, watermarks, an
assignment), so it is opened on the event loop's executor, and only when a
first ``ask`` or ``status`` needs it. Callers that arrive while it opens
wait for that same opening: 50 concurrent first asks open one consumer, not
50 of which 49 are closed at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from streamkit.errors import ClientError


class Closeable(Protocol):
    """What the client opens lazily: something it closes with the client."""

    def close(self) -> None:
        """Release it (blocking: it may join a thread)."""


TCloseable = TypeVar("TCloseable", bound=Closeable)


class LazyOpen(Generic[TCloseable]):
    """``opener()``'s result, opened on first :meth:`get`, on the running loop's executor.

    Args:
        opener: Opens the resource (blocking); called once per opening, on the
            executor. If it raises, every caller waiting for it gets the
            error, and the next :meth:`get` tries again.
    """

    def __init__(self, opener: Callable[[], TCloseable]) -> None:
        self._opener = opener
        self.value: TCloseable | None = None
        self._opening: asyncio.Future[TCloseable] | None = None
        # close() runs on the caller's or an executor thread while an
        # opening ends on the loop's: the lock orders the two.
        self._lock = threading.Lock()
        self._closes = 0

    async def get(self) -> TCloseable:
        """The open resource, opening it first (once for all concurrent callers).

        Raises:
            ClientError: The client closed while it was opening.
        """
        value = self.value
        if value is not None:
            return value
        loop = asyncio.get_running_loop()
        with self._lock:
            opening = self._opening
            # A future belongs to one loop; a client used from another loop
            # (asyncio.run twice) opens again there.
            if opening is None or opening.get_loop() is not loop:
                opening = self._opening = loop.run_in_executor(None, self._opener)
                closes = self._closes
                opening.add_done_callback(lambda done: self._opened(done, closes))
        # Shielded: a caller that gives up must not cancel the others' opening.
        await asyncio.shield(opening)
        value = self.value
        if value is None:
            raise ClientError("the client closed while it was opening")
        return value

    def _opened(self, opening: asyncio.Future[TCloseable], closes: int) -> None:
        # On the loop's thread, before any waiter resumes: they find value set.
        failed = opening.cancelled() or opening.exception() is not None
        with self._lock:
            if self._opening is opening:
                self._opening = None
            keep = not failed and self.value is None and closes == self._closes
            if keep:
                self.value = opening.result()
        if not failed and not keep:
            # Opened for a client closed meanwhile (or twice, across loops):
            # closed off the loop, because closing joins the reading thread.
            opening.get_loop().run_in_executor(None, opening.result().close)

    def close(self) -> None:
        """Close the resource if open; an opening still under way is closed when it ends."""
        with self._lock:
            value, self.value, self._opening = self.value, None, None
            self._closes += 1
        if value is not None:
            value.close()
