"""The blocking twin of :class:`~streamkit.client.client.Client`, for Django, Flask and scripts.

It runs the client on an event loop of its own, in a daemon thread, and
waits for each call; any number of request threads may share one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from streamkit.client.client import Client
from streamkit.client.delivery import Sent
from streamkit.topics import Topic

T = TypeVar("T")


class BlockingClient:
    """``send``, ``ask``, ``submit``, ``status`` and ``result`` that block the caller."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="streamkit-blocking-client", daemon=True
        )

    def __enter__(self) -> BlockingClient:
        self.open()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Start the client's loop and join the process's producer."""
        if not self._thread.is_alive():
            self._thread.start()
        self.client.open()

    def close(self) -> None:
        """Flush and stop."""
        try:
            self.client.close()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def send(self, target: str | Topic, value: Any, **kwargs: Any) -> Sent:
        """See :meth:`Client.send`."""
        return self._run(self.client.send(target, value, **kwargs))

    def ask(self, agent: str, value: Any, **kwargs: Any) -> Any:
        """See :meth:`Client.ask`."""
        return self._run(self.client.ask(agent, value, **kwargs))

    def submit(self, agent: str, value: Any, **kwargs: Any) -> str:
        """See :meth:`Client.submit`; returns the task id."""
        return self._run(self.client.submit(agent, value, **kwargs)).task_id

    def status(self, task_id: str, **kwargs: Any) -> dict[str, Any] | None:
        """See :meth:`Client.status`."""
        return self._run(self.client.status(task_id, **kwargs))

    def result(self, task_id: str, timeout: float | None = None) -> Any:
        """The task's result once done; see :meth:`TaskHandle.result`."""
        from streamkit.client.client import TaskHandle

        return self._run(TaskHandle(self.client, task_id).result(timeout))
