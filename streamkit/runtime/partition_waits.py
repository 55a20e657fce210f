"""A partition task's waits on the clock: rate-limit tokens, retry backoffs, a tier's head.

Split from :mod:`streamkit.runtime.partition`, which runs the records. Each
wait is an ``await`` on the worker's clock (the harness's manual one in
tests) that a revoke ends early, so only the waiting partition waits and the
event loop goes on; :meth:`PartitionWaits.waiting_until` tells the harness
where to move its clock once waiting is all that is left.

A rate limit (:mod:`streamkit.runtime.rate_limit`) costs an agent without
one nothing per record. A slice loop decides once, when its task starts,
how it takes records: the buffer's own ``popleft``, or
:meth:`SliceTokens.pop`, which takes a token first and ends the slice where
the bucket runs dry. The loop body is the same either way.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from streamkit.clock import Clock
from streamkit.runtime.offsets import PartitionOffsets, Ticket
from streamkit.runtime.rate_limit import TokenBucket


class OutOfTokens(Exception):
    """No token left for the next record: the slice ends (raised by :meth:`SliceTokens.pop`).

    Control flow inside a slice loop, never seen outside it. An exception
    rather than a returned marker because the loop's ``try`` costs nothing
    until something is raised (Python 3.11), while testing a marker would
    cost every record of every agent, rate-limited or not.
    """


class SliceTokens:
    """How a rate-limited slice loop takes its records: one token of the limit each.

    Its :meth:`pop` stands in for the buffer's ``popleft``. A slice that
    finds no token ends there, holding the token reserved for the next
    record; the loop accounts the slice (taken, commits, metrics) and only
    then :meth:`settle` awaits that token, so a long wait holds nothing back.

    Args:
        buffer: The partition's fetched records.
        limit: The agent's bucket, this worker's share.
        token: Waits for a reserved token (:meth:`PartitionWaits._token`).
    """

    __slots__ = ("_buffer", "_paid", "_take", "_token", "_wait")

    def __init__(
        self,
        buffer: deque[Any],
        limit: TokenBucket,
        token: Callable[[float], Awaitable[bool]],
    ) -> None:
        self._buffer = buffer
        self._take = limit.take
        self._token = token
        self._paid = False  # a token waited for and not used yet
        self._wait = 0.0  # the slice ended on a token due in this many seconds

    def pop(self) -> Any:
        """The next record, its token taken.

        Raises:
            OutOfTokens: None left; the next one is reserved for :meth:`settle`.
        """
        if self._paid:
            self._paid = False
        else:
            wait = self._take()
            if wait:
                self._wait = wait
                raise OutOfTokens
        return self._buffer.popleft()

    async def settle(self) -> bool:
        """After a slice, wait for the token it ended on; ``False`` if it did not end on one."""
        wait = self._wait
        if not wait:
            return False
        self._wait = 0.0
        self._paid = await self._token(wait)
        return True


class PartitionWaits:
    """The base of :class:`~streamkit.runtime.partition.PartitionWorker`: its waits on the clock.

    The annotations are the part of the partition worker these waits use.
    """

    buffer: deque[Any]
    offsets: PartitionOffsets
    revoked: bool
    delayed: bool
    due_at: float
    limit_due: float
    _clock: Clock
    _limit: TokenBucket | None
    _backoffs: dict[int, float]
    _wakeup: asyncio.Event

    def _slice_tokens(self) -> SliceTokens | None:
        """A slice loop's token taker, made once when its task starts; ``None`` when unlimited."""
        limit = self._limit
        return None if limit is None else SliceTokens(self.buffer, limit, self._token)

    async def _take_token(self, offset: int | None = None) -> bool:
        """Take a token for one more agent call and wait for it; ``False`` if revoked meanwhile.

        For the loops that wait for each record's token where they stand
        (concurrent agents, in-place retries); see :meth:`_token` for ``offset``.
        """
        limit = self._limit
        assert limit is not None
        wait = limit.take()
        return not wait or await self._token(wait, offset)

    async def _token(self, wait: float, offset: int | None = None) -> bool:
        """Wait ``wait`` seconds for the token just taken; ``False`` if revoked meanwhile.

        An ``await`` on the clock (the harness's manual one in tests), woken
        early only by a revoke, so this partition waits and nothing else
        does. A revoked partition gives its token back: the record it was
        for is the next owner's.

        Args:
            wait: What :meth:`TokenBucket.take` said (``inf``: no share yet).
            offset: A record retrying (its ticket's offset), else ``None``
                for the next record to start; where the wait is shown to
                :meth:`waiting_until`.
        """
        limit, clock = self._limit, self._clock
        assert limit is not None
        while wait == float("inf"):
            # Started just before this worker's share was computed: the
            # reshare that follows every assignment comes next.
            limit.give_back()
            rated = asyncio.ensure_future(limit.until_rated())
            self._wakeup.clear()
            woken = asyncio.ensure_future(self._wakeup.wait())
            try:
                await asyncio.wait((rated, woken), return_when=asyncio.FIRST_COMPLETED)
            finally:
                rated.cancel()
                woken.cancel()
            if self.revoked:
                return False
            wait = limit.take()
        if wait <= 0.0:
            return True
        due = clock.time() + wait
        if offset is None:
            self.limit_due = due
        else:
            self._backoffs[offset] = due
        began = clock.monotonic()
        try:
            # A feed wakes _wait_until too; only the clock or a revoke ends this.
            while not self.revoked and clock.time() < due:
                await self._wait_until(due)
        finally:
            if offset is None:
                self.limit_due = 0.0
            else:
                self._backoffs.pop(offset, None)
            limit.waited += clock.monotonic() - began
        if self.revoked:
            limit.give_back()
            return False
        return True

    async def _back_off(self, ticket: Ticket, delay: float) -> None:
        due = self._clock.time() + delay
        self._backoffs[ticket.offset] = due
        try:
            await self._clock.sleep_until(due)
        finally:
            del self._backoffs[ticket.offset]

    async def _wait_until(self, due: float) -> None:
        """Until the clock reaches ``due``, or new records or a revoke wake the task."""
        # Cleared now, not in the waiting task's first step: a feed() before
        # that step would be forgotten and the records left until ``due``.
        self._wakeup.clear()
        woken = asyncio.ensure_future(self._wakeup.wait())
        timer = asyncio.ensure_future(self._clock.sleep_until(due))
        try:
            await asyncio.wait((woken, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            timer.cancel()

    def waiting_until(self) -> float | None:
        """The clock time this partition waits for, if waiting on the clock is all it does.

        A retry backoff, a token of the rate limit, or a tier's not-yet-due
        head, with no other record running; ``None`` otherwise. The
        harness moves its manual clock there when nothing else is left.
        """
        if self.delayed and self.due_at and not self.offsets.in_flight:
            return self.due_at
        waits = list(self._backoffs.values())
        if self.limit_due:
            waits.append(self.limit_due)
        if not waits or not set(self.offsets.running()) <= self._backoffs.keys():
            return None  # not waiting, or some other record is running
        return min(waits)
