"""One assigned partition: its buffer, its offsets, and the task that works it.

Records of a partition are processed in offset order by a single task;
partitions never wait for each other. The fetcher thread appends records and
the event loop takes them, so the two counters that measure the buffer
(``handed`` and ``taken``) are each written by one thread only, and the
fetcher can read the backlog without a lock to decide when to pause.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from streamkit.runtime.offsets import PartitionOffsets
from streamkit.runtime.processor import Processor
from streamkit.types import TopicPartition

# A sync agent's task yields to the loop after 5 ms of work (checked every
# 16 records, so the clock is read rarely), so commits, revokes and the other
# partitions get a turn even when each record takes milliseconds.
_SLICE_S = 0.005
_CLOCK_EVERY = 16


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
    ) -> None:
        self.tp = tp
        self.processor = processor
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
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def backlog(self) -> int:
        """Records handed over by the fetcher and not yet started."""
        return self.handed - self.taken

    def start(self) -> None:
        """Start the task (loop thread)."""
        run = self._run_sync if self.processor.sync is not None else self._run_async
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
        """Wait for the record in flight; ``False`` if it had to be abandoned."""
        self.stop()
        task = self._task
        if task is None or task.done():
            return True
        done, _ = await asyncio.wait([task], timeout=max(timeout, 0.0))
        if done:
            return True
        task.cancel()
        return False

    async def _wait(self) -> None:
        self._wakeup.clear()
        await self._wakeup.wait()

    async def _run_sync(self) -> None:
        process = self.processor.sync
        assert process is not None
        buffer, start, after_slice = self.buffer, self.offsets.start, self._after_slice
        clock = time.monotonic
        try:
            while not self.revoked:
                if not buffer:
                    await self._wait()
                    continue
                n = 0
                until = clock() + _SLICE_S
                # revoked is re-read per record: the fetcher thread sets it
                # when a revoke deadline passes while this slice runs.
                while buffer and not self.revoked:
                    msg = buffer.popleft()
                    process(msg, start(msg.offset()))
                    n += 1
                    if n % _CLOCK_EVERY == 0 and clock() >= until:
                        break
                self.taken += n
                after_slice(n)
                await asyncio.sleep(0)
        except Exception as exc:
            self._on_failure(exc)

    async def _run_async(self) -> None:
        process = self.processor.run_async
        assert process is not None
        buffer, start, after_slice = self.buffer, self.offsets.start, self._after_slice
        try:
            while not self.revoked:
                if not buffer:
                    await self._wait()
                    continue
                msg = buffer.popleft()
                self.taken += 1
                await process(msg, start(msg.offset()))
                after_slice(1)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._on_failure(exc)
