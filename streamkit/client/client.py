"""The client for code that is not an agent: send records, ask agents, submit tasks.

Example (a FastAPI or Starlette lifespan)::

    @contextlib.asynccontextmanager
    async def lifespan(web):
        async with app.client() as client:
            web.state.streamkit = client
            yield

    async def create_report(request):
        handle = await request.app.state.streamkit.submit("build_report", {"user": 7})
        return JSONResponse({"task": handle.task_id}, status_code=202)

``send`` returns once the broker has the record, with its partition and
offset; ``ask`` waits for the agent's return value (or its error); ``submit``
returns a task id at once, whose status and result anyone can look up
later. Records are encoded with the target topic's declared serdes. Every
client of a process shares one producer (:mod:`streamkit.client.producer`),
so opening one per request costs little; closing the last one flushes.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from streamkit.backends.kafka import create_admin, ensure_topics
from streamkit.client.producer import SharedProducer, shared_producer
from streamkit.client.replies import Replies, wait_reply
from streamkit.client.tasks import TaskView
from streamkit.delays import H_ETA, tier_for
from streamkit.errors import ClientError, DeclarationError, RemoteError, RequestTimeout
from streamkit.requests import (
    H_CORRELATION,
    H_REPLY_KEY,
    H_SUBMITTED,
    H_TASK,
    RANK,
    status,
)
from streamkit.runtime.codecs import Codec, Codecs
from streamkit.runtime.failures import H_RETRY_DUE
from streamkit.topics import Topic

if TYPE_CHECKING:
    from streamkit.app import App
    from streamkit.config import AppConfig

# Waiting for a full producer queue: the poll thread frees room within its
# round, so a short sleep is enough and keeps the event loop free.
_QUEUE_FULL_WAIT_S = 0.005
_METADATA_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Sent:
    """Where the broker put a record."""

    topic: str
    partition: int
    offset: int


class TaskHandle:
    """A submitted task: its id, and ways to wait for what it becomes."""

    def __init__(self, client: Client, task_id: str) -> None:
        self.task_id = task_id
        self._client = client

    def __repr__(self) -> str:
        return f"TaskHandle({self.task_id!r})"

    async def status(self) -> dict[str, Any] | None:
        """Its latest status (``None``: not known yet)."""
        return await self._client.status(self.task_id)

    async def result(self, timeout: float | None = None) -> Any:
        """Its result once done.

        Raises:
            RemoteError: The task failed for good (dead-lettered).
            RequestTimeout: Not done within ``timeout`` seconds.
        """
        final = await self._client.wait(self.task_id, timeout)
        return _outcome(final["state"] == "done", final.get("result"), final.get("error"))


class Client:
    """Sends to an app's topics and agents from code that is not an agent.

    Args:
        app: The app whose topics and agents this client addresses.
        config: Its settings (``app.client(**overrides)`` builds them).
    """

    def __init__(self, app: App, config: AppConfig) -> None:
        self.app = app
        self.config = config
        self._codecs = Codecs(config)
        self._resolved: dict[str, tuple[Topic, Codec]] = {}
        self._producer: SharedProducer | None = None
        self._replies: Replies | None = None
        self._tasks: TaskView | None = None
        self._partitions: dict[str, int] = {}
        self.reply_key = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> Client:
        await asyncio.get_running_loop().run_in_executor(None, self.open)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def open(self) -> None:
        """Join the process's producer (blocking; ``async with`` does it on an executor)."""
        if self._producer is None:
            self._producer = shared_producer(self.config)

    def close(self, timeout: float = 30.0) -> None:
        """Flush (the last client of the process) and stop following replies and tasks.

        Raises:
            ClientError: Records were still not delivered after ``timeout``.
        """
        replies, tasks, producer = self._replies, self._tasks, self._producer
        self._replies = self._tasks = self._producer = None
        if replies is not None:
            replies.close()
        if tasks is not None:
            tasks.close()
        if producer is not None and producer.release(timeout):
            raise ClientError(f"records still undelivered after {timeout:.0f}s at close")

    # -- send ----------------------------------------------------------------

    async def send(
        self,
        target: str | Topic,
        value: Any,
        *,
        key: Any = None,
        headers: list[tuple[str, bytes]] | dict[str, str | bytes] | None = None,
        delay: float | None = None,
        eta: datetime | None = None,
    ) -> Sent:
        """Send one record to a topic, or to an agent's source topic, and wait for the broker.

        Args:
            target: A topic (object or declared name) or an agent's name.
            value: Encoded with the topic's value serde.
            key: Encoded with its key serde (``None``: no key).
            headers: ``[(name, bytes)]`` or a dict.
            delay: Seconds from now before the agent runs it (an agent
                declared with ``delays=``; see :mod:`streamkit.delays`).
            eta: The same as an aware datetime.

        Raises:
            ClientError: The target is unknown, or the broker refused the record.
        """
        future = self.send_nowait(target, value, key=key, headers=headers, delay=delay, eta=eta)
        while True:
            try:
                return await asyncio.wrap_future(future)
            except BufferError:
                # The queue was full at produce time: wait and try again.
                await asyncio.sleep(_QUEUE_FULL_WAIT_S)
                future = self.send_nowait(
                    target, value, key=key, headers=headers, delay=delay, eta=eta
                )

    def send_nowait(
        self,
        target: str | Topic,
        value: Any,
        *,
        key: Any = None,
        headers: list[tuple[str, bytes]] | dict[str, str | bytes] | None = None,
        delay: float | None = None,
        eta: datetime | None = None,
    ) -> Future[Sent]:
        """Queue one record; the future is the broker's answer (``BufferError``: queue full)."""
        topic, codec = self._resolve(target)
        raw_key = None if key is None else codec.key.serialize(key)
        raw_value = None if value is None else codec.value.serialize(value)
        raw_headers = _headers(headers)
        if delay is not None or eta is not None:
            name, raw_headers = self._delayed(target, delay, eta, raw_headers or [])
            if name is not None:
                return self._produce(name, raw_value, raw_key, raw_headers)
        return self._produce(topic.name, raw_value, raw_key, raw_headers)

    def _delayed(
        self,
        target: str | Topic,
        delay: float | None,
        eta: datetime | None,
        headers: list[tuple[str, bytes]],
    ) -> tuple[str | None, list[tuple[str, bytes]]]:
        """The delay tier a record starts in, and its headers (``None``: due already)."""
        name = target if isinstance(target, str) else target.name
        agent = self.app.agents.get(name)
        if agent is None or not agent.delays:
            raise ClientError(
                f"{name!r} takes no delayed records: declare the agent with "
                "@app.agent(..., delays=True)"
            )
        if (delay is None) == (eta is None):
            raise ClientError("give delay= (seconds) or eta= (an aware datetime), not both")
        now = int(time.time() * 1000)
        if eta is not None:
            if eta.tzinfo is None:
                raise ClientError("eta must be an aware datetime (with a time zone)")
            due = int(eta.timestamp() * 1000)
        else:
            due = now + int(float(delay or 0) * 1000)
        remaining = due - now
        if remaining <= 0:
            return None, headers
        tiers = self.app.delay_topics(agent)
        i = tier_for(agent.delays, remaining)
        first_due = now + min(agent.delays[i] * 1000, remaining)
        marked = [*headers, (H_ETA, str(due).encode()), (H_RETRY_DUE, str(first_due).encode())]
        return tiers[i].name, marked

    def _produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]] | None,
    ) -> Future[Sent]:
        producer = self._producer
        if producer is None:
            raise ClientError("the client is not open: use `async with app.client() as c`")
        future: Future[Sent] = Future()

        def delivered(err: Any, msg: Any) -> None:  # the poll thread
            if err is not None:
                future.set_exception(ClientError(f"{topic}: the broker refused it: {err.str()}"))
            else:
                future.set_result(Sent(msg.topic(), msg.partition(), msg.offset()))

        try:
            producer.produce(topic, value, key, headers, delivered)
        except BufferError as exc:
            future.set_exception(exc)
        return future

    def _resolve(self, target: str | Topic) -> tuple[Topic, Codec]:
        name = target if isinstance(target, str) else target.name
        found = self._resolved.get(name)
        if found is not None:
            return found
        agent = self.app.agents.get(name)
        if agent is not None:
            # An agent's name means its source; a re-keyed agent's is the
            # topic its repartitioning agent reads.
            feeder = self.app.agents.get(f"{name}.repartition")
            topic = (feeder or agent).source
        elif isinstance(target, Topic):
            topic = target
        elif name in self.app.topics:
            topic = self.app.topics[name]
        else:
            raise ClientError(
                f"{name!r} is neither an agent nor a topic of app {self.app.name}: "
                f"agents {', '.join(self.app.agents) or 'none'}"
            )
        found = self._resolved[name] = (topic, self._codecs(topic))
        return found

    def _requests_agent(self, name: str) -> str:
        agent = self.app.agents.get(name)
        if agent is None or not agent.requests:
            raise DeclarationError(
                f"agent {name!r} of app {self.app.name} does not take requests: declare it "
                "with @app.agent(..., requests=True)"
            )
        return name

    # -- ask -----------------------------------------------------------------

    async def ask(self, agent: str, value: Any, *, key: Any = None, timeout: float = 30.0) -> Any:
        """Send ``value`` to ``agent`` and wait for its return value.

        Raises:
            RemoteError: The agent failed for good on it (dead-lettered).
            RequestTimeout: No answer within ``timeout`` seconds.
        """
        self._requests_agent(agent)
        replies = await self._replies_ready()
        cid = uuid.uuid4().hex
        expected = replies.expect(cid)
        headers = [(H_CORRELATION, cid.encode()), (H_REPLY_KEY, self.reply_key.encode())]
        try:
            await self.send(agent, value, key=key, headers=headers)
            reply = await wait_reply(expected, timeout)
        except TimeoutError:
            raise RequestTimeout(f"agent {agent} did not answer within {timeout}s") from None
        finally:
            replies.forget(cid)
        return _outcome(bool(reply.get("ok")), reply.get("value"), reply.get("error"))

    async def _replies_ready(self) -> Replies:
        if self._replies is None:
            loop = asyncio.get_running_loop()
            replies = await loop.run_in_executor(None, self._open_replies)
            if self._replies is None:
                self._replies = replies
            else:
                replies.close()
        return self._replies

    def _open_replies(self) -> Replies:
        topic = self.app.request_topics[0].name
        return Replies(self.config, topic, self._count(topic), self.reply_key)

    def _count(self, topic: str) -> int:
        """The partition count of a request topic, creating it first when asked to."""
        found = self._partitions.get(topic)
        if found is not None:
            return found
        admin = create_admin(self.config)
        metadata = admin.list_topics(timeout=_METADATA_TIMEOUT_S)
        if topic not in metadata.topics:
            if not self.config.create_topics:
                raise ClientError(f"topic {topic} does not exist: streamkit topics create makes it")
            declared = next(t for t in self.app.request_topics if t.name == topic)
            ensure_topics(admin, [declared], replication=self.config.replication)
            metadata = admin.list_topics(timeout=_METADATA_TIMEOUT_S)
        count = self._partitions[topic] = len(metadata.topics[topic].partitions)
        return count

    # -- tasks ---------------------------------------------------------------

    async def submit(
        self,
        agent: str,
        value: Any,
        *,
        key: Any = None,
        delay: float | None = None,
        eta: datetime | None = None,
    ) -> TaskHandle:
        """Queue ``value`` for ``agent`` as a task; returns its handle as soon as it is sent.

        With ``delay=`` or ``eta=`` the task runs then (see :meth:`send`).
        """
        self._requests_agent(agent)
        task_id = uuid.uuid4().hex
        now = int(time.time() * 1000)
        tasks = self.app.request_topics[1]
        queued = status(task_id, agent, "queued", submitted_at=now)
        _, codec = self._resolve(tasks)
        # Queued first: the task's "running" can then only come after it.
        first = self._produce(tasks.name, codec.value.serialize(queued), task_id.encode(), None)
        headers = [(H_TASK, task_id.encode()), (H_SUBMITTED, str(now).encode())]
        await self.send(agent, value, key=key, headers=headers, delay=delay, eta=eta)
        await asyncio.wrap_future(first)
        return TaskHandle(self, task_id)

    async def status(self, task_id: str, *, timeout: float = 10.0) -> dict[str, Any] | None:
        """A task's latest status, or ``None`` for a task not known (or expired).

        The status has ``state`` (queued, running, done, failed), ``progress``,
        ``message``, ``result`` and ``error``.
        """
        view = await self._tasks_ready()
        await asyncio.get_running_loop().run_in_executor(None, view.catch_up, timeout)
        return view.get(task_id)

    async def watch(self, task_id: str) -> AsyncIterator[dict[str, Any]]:
        """Each status of the task as it comes, ending with done or failed."""
        view = await self._tasks_ready()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def seen(value: dict[str, Any]) -> None:  # the reading thread
            loop.call_soon_threadsafe(queue.put_nowait, value)

        view.watch(task_id, seen)
        try:
            while True:
                value = await queue.get()
                yield value
                if RANK.get(value.get("state", ""), 0) >= RANK["done"]:
                    return
        finally:
            view.unwatch(task_id, seen)

    async def wait(self, task_id: str, timeout: float | None = None) -> dict[str, Any]:
        """The task's final status (done or failed).

        Raises:
            RequestTimeout: Not final within ``timeout`` seconds.
        """

        async def final() -> dict[str, Any]:
            last: dict[str, Any] = {}
            async for seen in self.watch(task_id):
                last = seen
            return last

        try:
            return await asyncio.wait_for(final(), timeout)
        except TimeoutError:
            raise RequestTimeout(f"task {task_id} not done within {timeout}s") from None

    async def _tasks_ready(self) -> TaskView:
        if self._tasks is None:
            loop = asyncio.get_running_loop()
            view = await loop.run_in_executor(None, self._open_tasks)
            if self._tasks is None:
                self._tasks = view
            else:
                view.close()
        return self._tasks

    def _open_tasks(self) -> TaskView:
        topic = self.app.request_topics[1].name
        return TaskView(self.config, topic, self._count(topic))


def _outcome(ok: bool, value: Any, error: dict[str, Any] | None) -> Any:
    if ok:
        return value
    error = error or {}
    raise RemoteError(
        error.get("type", "unknown"),
        error.get("message", ""),
        attempts=int(error.get("attempts") or 0),
        stage=error.get("stage"),
        dead_letter_topic=error.get("dead_letter_topic"),
        record=error.get("record"),
    )


def _headers(
    headers: list[tuple[str, bytes]] | dict[str, str | bytes] | None,
) -> list[tuple[str, bytes]] | None:
    if headers is None:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in items]
