"""One assigned partition: its buffer, its offsets, and the task that works it.

Records of a partition are processed in offset order by a single task;
partitions never wait for each other. The fetcher thread appends records and
the event loop takes them, so the two counters that measure the buffer
(``handed`` and ``taken``) are each written by one thread only, and the
fetcher can read the backlog without a lock to decide when to pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from streamkit.errors import AgentError
from streamkit.runtime.failures import Recovery, due_ms
from streamkit.runtime.offsets import PartitionOffsets, Ticket
from streamkit.runtime.processor import Processor
from streamkit.types import TopicPartition

# A sync agent's task yields to the loop after 5 ms of work (checked every
# 16 records, so the clock is read rarely), so commits, revokes and the other
# partitions get a turn even when each record takes milliseconds.
_SLICE_S = 0.005
_CLOCK_EVERY = 16

# Told about each slice of work that went through: ``(seconds, records, last
# record)``. Set when metrics are on (streamkit.observability); called on the
# loop thread once per slice (per record only for async agents, whose slice is
# one record), so it must stay cheap.
SliceObserver = Callable[[float, int, Any], None]


class PartitionWorker:
    """Processes one partition's records in order.

    Lifecycle: created on assign (fetcher thread), ``start`` on the loop,
    ``feed`` for every batch, ``stop`` on revoke or shutdown, then ``drain``.
    """

    def __init__(
        self,
        tp: TopicPartition,
        processor: Processor,
        on_failure: Callable[[BaseException], None],
        after_slice: Callable[[int], Any],
        recovery: Recovery | None = None,
        delayed: bool = False,
        on_slice: SliceObserver | None = None,
    ) -> None:
        self.tp = tp
        self.processor = processor
        # None: a failed record stops the worker (no retries, no dead letters).
        self.recovery = recovery
        # A delayed-retry tier: each record waits until its due time.
        self.delayed = delayed
        self.offsets = PartitionOffsets()
        self.buffer: deque[Any] = deque()
        self.handed = 0  # written by the fetcher thread only
        self.taken = 0  # written by the loop thread only
        self.paused = False  # fetcher thread only
        # Set from any thread: stop taking records; whatever is buffered is
        # dropped uncommitted and will be fetched again by the next owner.
        self.revoked = False
        self._on_failure = on_failure
        self._after_slice = after_slice
        self._on_slice = on_slice
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Concurrent agents only: the record tasks in flight, and the last
        # task per key, which the key's next record waits for.
        self._inflight: set[asyncio.Task[None]] = set()
        self._key_tail: dict[bytes, asyncio.Task[None]] = {}

    @property
    def backlog(self) -> int:
        """Records handed over by the fetcher and not yet started."""
        return self.handed - self.taken

    def start(self) -> None:
        """Start the task (loop thread)."""
        if self.delayed:
            run = self._run_async  # a retry tier: one at a time, each when due
        elif self.processor.sync is not None:
            run = self._run_sync
        elif self.processor.agent.concurrency > 1:
            run = self._run_concurrent
        else:
            run = self._run_async
        self._task = asyncio.get_running_loop().create_task(run(), name=f"partition {self.tp}")

    def feed(self, msgs: list[Any]) -> None:
        """Append fetched records (loop thread)."""
        self.buffer.extend(msgs)
        self._wakeup.set()

    def stop(self) -> None:
        """Stop taking records; the one in flight may finish (loop thread)."""
        self.revoked = True
        self.taken += len(self.buffer)
        self.buffer.clear()
        self._wakeup.set()

    async def drain(self, timeout: float) -> bool:
        """Wait for the records in flight; ``False`` if some had to be abandoned."""
        self.stop()
        tasks = [t for t in (self._task, *self._inflight) if t is not None and not t.done()]
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=max(timeout, 0.0))
        for task in pending:
            task.cancel()
        return not pending

    async def _wait(self) -> None:
        self._wakeup.clear()
        await self._wakeup.wait()

    async def _run_sync(self) -> None:
        process = self.processor.sync
        assert process is not None
        buffer, start, after_slice = self.buffer, self.offsets.start, self._after_slice
        on_slice = self._on_slice
        clock = time.monotonic
        try:
            while not self.revoked:
                if not buffer:
                    await self._wait()
                    continue
                n = 0
                began = clock()
                until = began + _SLICE_S
                # revoked is re-read per record: the fetcher thread sets it
                # when a revoke deadline passes while this slice runs.
                while buffer and not self.revoked:
                    msg = buffer.popleft()
                    ticket = start(msg.offset(), msg)
                    try:
                        process(msg, ticket)
                    except AgentError as error:
                        self.taken += n + 1
                        self._succeeded(n)
                        n = 0
                        await self._recover(msg, ticket, error)
                        began = clock()  # time records that went through, not retries
                        continue
                    n += 1
                    if n % _CLOCK_EVERY == 0 and clock() >= until:
                        break
                self.taken += n
                self._succeeded(n)
                after_slice(n)
                if on_slice is not None and n:
                    on_slice(clock() - began, n, msg)
                await asyncio.sleep(0)
        except Exception as exc:
            self._on_failure(exc)

    async def _run_async(self) -> None:
        """One record at a time, in slices like the sync loop; a retry tier waits for due times.

        A slice ends after ``_SLICE_S`` or at a record that is not due yet;
        delivery reports and commits are served once per slice, not once per
        record (per record, ``producer.poll(0)`` was the largest single cost
        of an async agent: bench/README.md, "The hot path"). Records of a
        tier share one delay, so they are in due order and waiting for the
        head of the buffer is enough.
        """
        buffer, start, after_slice = self.buffer, self.offsets.start, self._after_slice
        delayed = self.delayed
        clock = time.monotonic
        try:
            while not self.revoked:
                if not buffer:
                    await self._wait()
                    continue
                if delayed:
                    wait = due_ms(buffer[0]) / 1000 - time.time()
                    if wait > 0:
                        # Only this tier's partition waits; a revoke ends the wait.
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wait(), wait)
                        continue
                n = 0
                until = clock() + _SLICE_S
                while buffer and not self.revoked:
                    if delayed and n and due_ms(buffer[0]) > time.time() * 1000:
                        break
                    msg = buffer.popleft()
                    self.taken += 1
                    n += 1
                    await self._one(msg, start(msg.offset(), msg), None)
                    if clock() >= until:
                        break
                after_slice(n)
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._on_failure(exc)

    async def _call(self, msg: Any, ticket: Ticket) -> None:
        if self.processor.sync is not None:
            self.processor.sync(msg, ticket)
        else:
            assert self.processor.run_async is not None
            await self.processor.run_async(msg, ticket)

    async def _recover(self, msg: Any, ticket: Ticket, error: AgentError) -> None:
        """Retry in place with backoff, then hand the record to the failure policy.

        Raises:
            AgentError: No recovery configured, or dead-lettering is off.
            DeadLetterLimitError: Too many dead letters; the worker stops.
        """
        recovery = self.recovery
        if recovery is None:
            raise error
        attempt = 1
        first_ms = int(time.time() * 1000)
        while True:
            delay = recovery.retry_delay(error, attempt)
            if delay is None:
                recovery.give_up(msg, ticket, error, attempt, first_ms)
                return
            await asyncio.sleep(delay)
            if self.revoked:
                return  # abandoned: stays uncommitted, the next owner retries
            attempt += 1
            try:
                await self._call(msg, ticket)
            except AgentError as again:
                error = again
            else:
                self._succeeded(1)
                return

    def _succeeded(self, n: int) -> None:
        if self.recovery is not None and n:
            self.recovery.succeeded(n)

    async def _run_concurrent(self) -> None:
        """Up to ``concurrency`` records at once; one key never runs twice at once.

        Records start in offset order; a record waits for the previous record
        with the same key, so each key keeps its order. Offsets are committed
        only over the contiguous run of finished records (see offsets.py), so
        a slow record holds the commit position back but nothing else.
        """
        limit = self.processor.agent.concurrency
        slots = asyncio.Semaphore(limit)
        buffer, start = self.buffer, self.offsets.start
        loop = asyncio.get_running_loop()
        try:
            while not self.revoked:
                if not buffer:
                    await self._wait()
                    continue
                await slots.acquire()
                if self.revoked or not buffer:
                    slots.release()
                    continue
                msg = buffer.popleft()
                self.taken += 1
                key = msg.key()
                task = loop.create_task(
                    self._one(
                        msg, start(msg.offset(), msg), self._key_tail.get(key) if key else None
                    )
                )
                self._inflight.add(task)
                if key:
                    self._key_tail[key] = task
                task.add_done_callback(functools.partial(self._finished, key=key, slots=slots))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._on_failure(exc)

    async def _one(self, msg: Any, ticket: Ticket, previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            # Only the order matters here; the previous record's own failure
            # is reported by its task.
            await asyncio.wait([previous])
        began = time.monotonic()
        try:
            await self._call(msg, ticket)
        except AgentError as error:
            await self._recover(msg, ticket, error)
        else:
            self._succeeded(1)
            if self._on_slice is not None:
                self._on_slice(time.monotonic() - began, 1, msg)

    def _finished(
        self, task: asyncio.Task[None], key: bytes | None, slots: asyncio.Semaphore
    ) -> None:
        self._inflight.discard(task)
        if key and self._key_tail.get(key) is task:
            del self._key_tail[key]
        slots.release()
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._on_failure(exc)
            return
        self._after_slice(1)
