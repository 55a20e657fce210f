"""Run workers on an event loop in a background thread.

``streamkit run`` gives a worker the main thread and its signals. A test
cannot: its own thread must stay free to send records and make assertions
while workers run. :class:`WorkerThread` owns one event loop on one daemon
thread; any number of workers (group members) run on it side by side, each
with its own fetcher thread, exactly as they would in separate processes.
The test harness (:mod:`streamkit.testing`) and the contract suite's
real-broker driver both use it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from streamkit.runtime.worker import Worker

T = TypeVar("T")


class WorkerThread:
    """An event loop on a daemon thread, for workers built with ``handle_signals=False``.

    Args:
        name: The thread's name, shown in thread dumps.
    """

    def __init__(self, name: str = "streamkit-workers") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            # Whatever a stopped worker left behind is cancelled, so closing
            # the loop never warns about pending tasks.
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start(self, worker: Worker) -> concurrent.futures.Future[int]:
        """Run ``worker`` until it stops; the future gives its exit code (any thread)."""
        return asyncio.run_coroutine_threadsafe(worker.run(), self.loop)

    def call(self, fn: Callable[[], T], timeout: float) -> T:
        """Run ``fn()`` on the loop thread, between two steps of the workers, and return its result.

        Raises:
            concurrent.futures.TimeoutError: The loop did not get to it in ``timeout`` seconds.
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop and wait for the thread; stop the workers first (idempotent)."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
