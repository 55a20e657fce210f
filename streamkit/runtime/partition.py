"""One assigned partition: its buffer, its offsets, and the task that works it.

Records of a partition are processed in offset order by a single task;
partitions never wait for each other. The fetcher thread appends records and
the event loop takes them, so the two counters that measure the buffer
(``handed`` and ``taken``) are each written by one thread only, and the
fetcher can read the backlog without a lock to decide when to pause.

What a task waits for on the clock (its rate limit's tokens, retry backoffs,
a tier's due head) is in :mod:`streamkit.runtime.partition_waits`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from streamkit.clock import Clock, SystemClock
from streamkit.errors import AgentError, StreamkitError
from streamkit.runtime.failures import Recovery, due_ms, produce_failure
from streamkit.runtime.offsets import PartitionOffsets, Ticket
from streamkit.runtime.partition_waits import OutOfTokens, PartitionWaits
from streamkit.runtime.processor import Processor, ProducerGate
from streamkit.runtime.rate_limit import TokenBucket
from streamkit.types import TopicPartition
from streamkit.windows.runner import WindowRun

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

# While a partition has no room (see PartitionWorker._wait_for_room): how
# often it serves delivery reports and looks again.
_ROOM_WAIT_S = 0.005


class PartitionWorker(PartitionWaits):
    """Processes one partition's records in order.

    Lifecycle: created on assign (fetcher thread), ``start`` on the loop,
    ``feed`` for every batch, ``stop`` on revoke or shutdown, then ``drain``.

    Memory is bounded per partition: a record is started only while fewer
    than ``max_in_flight`` records are started and not yet committable (a
    stuck head keeps every later ticket, and its input record, alive), and
    only while the producer's queue has room (``gate``).
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
        gate: ProducerGate | None = None,
        max_in_flight: int = 1 << 30,
        clock: Clock | None = None,
        limit: TokenBucket | None = None,
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
        # Set on the fetcher thread when the partition leaves this member (a
        # revoke begins, or it was lost): no commit of it may be sent after
        # that, except the revoke's own. Shutdown's drain sets only revoked.
        self.released = False
        # Exactly once: an aborted transaction threw this worker's work away;
        # a new worker takes the partition from its last commit, and no
        # checkpoint may count this one's positions.
        self.discarded = False
        # The first offset the fetcher saw for this worker (fetcher thread):
        # where an abort goes back to when nothing was committed yet.
        self.first_offset: int | None = None
        # Bounded runs: the consumer's fetch position (fetcher thread), which
        # passes transaction markers that no record comes from.
        self.fetch_position: int | None = None
        # A retry tier waiting for its head: the wall-clock second it is due
        # (0: not waiting). The fetcher pauses the partition until then.
        self.due_at = 0.0
        self._gate = gate
        # Stamps first failures and times retry backoff and tier due times:
        # the harness's manual clock in tests, so they take no real time.
        self._clock: Clock = clock or SystemClock()
        # Records waiting out a retry backoff (or, retrying, for a token of
        # the rate limit): the clock time each is due.
        self._backoffs: dict[int, float] = {}
        # The agent's rate limit, this worker's share (streamkit.runtime.rate_limit),
        # shared by every partition of the agent here; None: unlimited, and
        # then no loop below looks at it per record (streamkit.runtime.partition_waits).
        self._limit = limit
        # The next record waits for its token until this clock time (0: not waiting).
        self.limit_due = 0.0
        self._max_in_flight = max(max_in_flight, processor.agent.concurrency)
        self._on_failure = on_failure
        self._after_slice = after_slice
        self._on_slice = on_slice
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Agents with tables: the context every task of this partition runs
        # in, with each table's slice set (streamkit.runtime.tables).
        self.context: contextvars.Context | None = None
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
        self._task = asyncio.get_running_loop().create_task(
            run(), name=f"partition {self.tp}", context=self.context
        )

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

    def unfinished(self) -> str | None:
        """What this partition has not finished, in one line; ``None`` when idle (loop thread)."""
        offsets = self.offsets
        offsets.advance()
        blocked = offsets.blocked_by()
        parts = []
        if self.backlog:
            parts.append(f"{self.backlog} fetched and not started")
        if blocked is not None:
            state = (
                "an emit failed"
                if blocked.error is not None
                else "held for the next checkpoint"
                if self.holding()
                else "waiting for acks"
                if blocked.finished
                else "processing"
            )
            parts.append(f"{offsets.in_flight} in flight from {blocked.offset} ({state})")
        return f"{self.tp}: {', '.join(parts)}" if parts else None

    def holding(self) -> bool:
        """Exactly once: finished records wait for the next checkpoint (outputs or table writes)."""
        return any(t.held is not None or t.writes is not None for t in self.offsets.finished_run())

    def redelivered_from(self) -> str:
        """``topic[partition]@offset``: where the next owner starts if this one stops now."""
        head = self.offsets.blocked_by()
        return f"{self.tp}@{head.offset if head is not None else self.offsets.position}"

    def cancel(self) -> None:
        """Stop now and cancel everything in flight, uncommitted (a lost partition)."""
        self.stop()
        for task in (self._task, *self._inflight):
            if task is not None and not task.done():
                task.cancel()

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

    def _has_room(self) -> bool:
        gate = self._gate
        return (gate is None or gate.open()) and self.offsets.in_flight < self._max_in_flight

    async def _wait_for_room(self) -> None:
        """Start nothing until the producer's queue and this partition's tickets have room.

        An ``await`` loop, never a blocking one: signals, revokes, commits and
        the heartbeat go on while a broker outage fills the queue.
        """
        offsets, gate = self.offsets, self._gate
        while not self.revoked:
            if gate is not None and not gate.open():
                await gate.wait(lambda: self.revoked)
                continue
            if offsets.in_flight >= self._max_in_flight:
                offsets.advance()
                if offsets.in_flight >= self._max_in_flight:
                    self._after_slice(0)  # serves delivery reports, commits when due
                    await asyncio.sleep(_ROOM_WAIT_S)
                    continue
            return

    def handle_failures(self) -> None:
        """Hand records whose emits the broker refused to the failure path (loop thread).

        Called by the worker after serving delivery reports. A refused emit
        of a finished record is retried or dead-lettered exactly like a
        record whose agent raised; a record still running (an async agent
        between two emits) is handled once it finishes. A refused dead
        letter or tier move stops the worker, and the ticket's error keeps
        its offset uncommitted for good.
        """
        failures = self.offsets.failures
        waiting = []
        for ticket in failures:
            if ticket.error is None:
                continue  # settled meanwhile: its dead letter accounts for it
            if ticket.msg is None:
                # An idle tick's window results: no record to retry or
                # dead-letter. Stopped uncommitted, the next owner closes
                # the same windows again.
                self._on_failure(
                    StreamkitError(f"{self.tp}: the broker refused window results: {ticket.error}")
                )
                continue
            if ticket.refused:
                recovery = self.recovery
                self._on_failure(
                    recovery.refused(ticket)
                    if recovery is not None
                    else produce_failure(ticket.msg, ticket.error, "the broker refused a record")
                )
                continue
            if not ticket.finished or self.revoked:
                waiting.append(ticket)
                continue
            self._redo(ticket)
        failures[:] = waiting

    def _redo(self, ticket: Ticket) -> None:
        err, ticket.error = ticket.error, None
        # Unfinished again until the retry, tier move or dead letter is made:
        # that, not the error, now holds the position back.
        ticket.finished = False
        error = produce_failure(ticket.msg, err, "the broker refused a record emitted for it")
        if self.recovery is None:
            ticket.error = err
            self._on_failure(error)
            return
        attempt = getattr(ticket, "attempts", 0) + 1
        first_ms = getattr(ticket, "first_failure_ms", 0) or int(self._clock.time() * 1000)
        task = asyncio.get_running_loop().create_task(
            self._recover(ticket.msg, ticket, error, attempt, first_ms), context=self.context
        )
        self._inflight.add(task)
        task.add_done_callback(self._redone)

    def _redone(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if self._went_through(task):
            self._after_slice(0)

    def _went_through(self, task: asyncio.Task[None]) -> bool:
        """Whether a record task ended normally; its failure, if any, stops the worker."""
        if task.cancelled():
            return False
        exc = task.exception()
        if exc is not None:
            self._on_failure(exc)
            return False
        return True

    async def _wait_idle(self, windows: WindowRun) -> None:
        """No record to take: wait for one, or until idle advance closes a window, and close it."""
        now = self._clock.time()
        due = windows.idle_due(now)
        if due is None:
            await self._wait()
            return
        if due > now:
            await self._wait_until(due)
            now = self._clock.time()
            if self.buffer or self.revoked or now < due:
                return
        ticket = self.offsets.start_tick(windows.origin())
        if ticket is None:  # no offset known to account it at: a record comes first
            await self._wait()
            return
        windows.tick(now, ticket)
        ticket.finished = True
        self._after_slice(1)

    def idle_due(self) -> bool:
        """A window's idle advance is due and not done yet (the test harness waits for it)."""
        windows = self.processor.windows
        if windows is None or self.buffer or self.context is None:
            return False
        due = self.context.run(windows.idle_due, self._clock.time())
        return due is not None and due <= self._clock.time()

    async def _run_sync(self) -> None:
        """Records in slices of ``_SLICE_S``, accounted once per slice; rate-limited, a token each.

        Delivery reports, commits and metrics are served once per slice, and
        the clock is read once per ``_CLOCK_EVERY`` records. Rate-limited, a
        slice also ends where the bucket runs dry and is accounted before the
        task awaits the next token, so a long wait holds nothing back. How
        records are taken is decided here, once: the buffer's ``popleft``, or
        :meth:`~streamkit.runtime.partition_waits.SliceTokens.pop`, so an agent
        without a rate limit pays nothing for it per record.
        """
        process = self.processor.sync
        assert process is not None
        buffer, start, after_slice = self.buffer, self.offsets.start, self._after_slice
        tokens = self._slice_tokens()
        pop = buffer.popleft if tokens is None else tokens.pop
        on_slice = self._on_slice
        clock = time.monotonic
        has_room = self._has_room
        windows = self.processor.windows
        try:
            while not self.revoked:
                if not buffer:
                    if windows is None:
                        await self._wait()
                    else:
                        await self._wait_idle(windows)
                    continue
                if not has_room():
                    await self._wait_for_room()
                    continue
                n = 0
                began = clock()
                until = began + _SLICE_S
                # revoked is re-read per record: the fetcher thread sets it
                # when a revoke deadline passes while this slice runs.
                with contextlib.suppress(OutOfTokens):
                    while buffer and not self.revoked:
                        msg = pop()
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
                        if n % _CLOCK_EVERY == 0 and (clock() >= until or not has_room()):
                            break
                self.taken += n
                self._succeeded(n)
                after_slice(n)
                if on_slice is not None and n:
                    on_slice(clock() - began, n, msg)
                if tokens is not None and await tokens.settle():
                    continue
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
        # Rate-limited: one token per record, the slice ends where none is left.
        tokens = self._slice_tokens()
        pop = buffer.popleft if tokens is None else tokens.pop
        try:
            while not self.revoked:
                if not buffer:
                    await self._wait()
                    continue
                if delayed:
                    due = due_ms(buffer[0]) / 1000
                    if due > self._clock.time():
                        # Only this tier's partition waits (paused by the
                        # fetcher until due_at); a revoke ends the wait.
                        self.due_at = due
                        await self._wait_until(due)
                        continue
                    self.due_at = 0.0
                if not self._has_room():
                    await self._wait_for_room()
                    continue
                n = 0
                until = clock() + _SLICE_S
                with contextlib.suppress(OutOfTokens):
                    while buffer and not self.revoked:
                        if delayed and n and due_ms(buffer[0]) > self._clock.time() * 1000:
                            break
                        if n and not self._has_room():
                            break
                        msg = pop()
                        self.taken += 1
                        n += 1
                        await self._one(msg, start(msg.offset(), msg), None)
                        if clock() >= until:
                            break
                after_slice(n)
                if tokens is not None and await tokens.settle():
                    continue
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

    async def _recover(
        self,
        msg: Any,
        ticket: Ticket,
        error: AgentError,
        attempt: int = 1,
        first_ms: int | None = None,
    ) -> None:
        """Retry in place with backoff, then hand the record to the failure policy.

        The one failure path, for records whose agent raised and for records
        whose emits the broker refused (then ``attempt`` counts the earlier
        tries of the record, so its dead letter says how many there were).

        Raises:
            AgentError: No recovery configured, or dead-lettering is off.
            DeadLetterLimitError: Too many dead letters; the worker stops.
            DeliveryError: ``produce()`` refused the dead letter or tier move.
        """
        recovery = self.recovery
        if recovery is None:
            raise error
        if first_ms is None:
            first_ms = int(self._clock.time() * 1000)
        while True:
            # A retry tier is one try when due, not another round of in-place
            # attempts: a record's attempts are its in-place tries plus one
            # per tier, as the dead letter's header counts them.
            delay = None if self.delayed else recovery.retry_delay(error, attempt)
            if delay is None:
                recovery.give_up(msg, ticket, error, attempt, first_ms)
                return
            await self._back_off(ticket, delay)
            if self.revoked:
                return  # abandoned: stays uncommitted, the next owner retries
            attempt += 1
            # Another attempt is another call of the agent: it counts against
            # the rate limit like a first one (what a limit protects is what
            # the agent calls, and that is most fragile exactly when records
            # fail).
            if self._limit is not None and not await self._take_token(ticket.offset):
                return  # revoked while waiting: stays uncommitted
            try:
                await self._call(msg, ticket)
            except AgentError as again:
                error = again
            else:
                # Remembered in case an emit of this attempt is refused later.
                ticket.attempts, ticket.first_failure_ms = attempt, first_ms
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
        slots = asyncio.Semaphore(self.processor.agent.concurrency)
        limit = self._limit
        buffer, start = self.buffer, self.offsets.start
        loop = asyncio.get_running_loop()
        try:
            while not self.revoked:
                if not buffer:
                    await self._wait()
                    continue
                if not self._has_room():
                    await self._wait_for_room()
                    continue
                await slots.acquire()
                if self.revoked or not buffer:
                    slots.release()
                    continue
                if limit is not None and not await self._take_token():
                    slots.release()
                    continue
                msg = buffer.popleft()
                self.taken += 1
                key = msg.key()
                task = loop.create_task(
                    self._one(
                        msg, start(msg.offset(), msg), self._key_tail.get(key) if key else None
                    ),
                    context=self.context,
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
            if self.revoked:
                # Not started yet: a drain waits only for records that are,
                # so this one stays uncommitted and the next owner runs it.
                return
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
        if self._went_through(task):
            self._after_slice(1)
