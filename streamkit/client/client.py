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
import contextlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from streamkit.backends.kafka import create_admin, ensure_topics
from streamkit.client.delivery import AwaitedDelivery, Delivery, Inbox, Sent
from streamkit.client.lazy import LazyOpen
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
        self._reply_reader = LazyOpen(self._open_replies)
        self._task_view = LazyOpen(self._open_tasks)
        self._partitions: dict[str, int] = {}
        self._inbox: Inbox | None = None
        # Each target name sent to so far: its topic and encoders, for send_nowait.
        self._fast: dict[str, tuple[str, Callable[[Any], bytes], Callable[[Any], bytes]]] = {}
        self._send: Callable[..., None] = self._closed
        self._failed: list[Delivery] = []
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
            self._send = self._producer.produce

    def _closed(self, *_: Any) -> None:
        raise ClientError("the client is not open: use `async with app.client() as c`")

    def close(self, timeout: float = 30.0) -> None:
        """Flush (the last client of the process) and stop following replies and tasks.

        Raises:
            ClientError: Records were still not delivered after ``timeout``.
        """
        producer, self._producer = self._producer, None
        self._send = self._closed
        self._reply_reader.close()
        self._task_view.close()
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
        name, raw_value, raw_key, raw_headers = self._encode(
            target, value, key, headers, delay, eta
        )
        inbox = self._inbox
        loop = asyncio.get_running_loop()
        if inbox is None or inbox.loop is not loop:
            inbox = self._inbox = Inbox(loop)
        future: asyncio.Future[Sent] = loop.create_future()
        delivery = AwaitedDelivery(name, self._failed, inbox, future)
        while True:
            try:
                self._produce(name, raw_value, raw_key, raw_headers, delivery)
                break
            except BufferError:
                # librdkafka's queue is full: the poll thread makes room.
                await asyncio.sleep(_QUEUE_FULL_WAIT_S)
        return await future

    def send_nowait(
        self,
        target: str | Topic,
        value: Any,
        *,
        key: Any = None,
        headers: list[tuple[str, bytes]] | dict[str, str | bytes] | None = None,
        delay: float | None = None,
        eta: datetime | None = None,
    ) -> Delivery:
        """Queue one record and return at once; :meth:`flush` waits for all of them.

        The fast path for bulk sends: it costs about what a hand-written
        ``produce`` loop does. The :class:`Delivery` says where the record
        went once the broker answered; a refusal also makes the next
        :meth:`flush` raise.

        Raises:
            BufferError: librdkafka's queue is full: wait (``await
                asyncio.sleep(0.005)``) and send again, or use :meth:`send`,
                which waits by itself.
        """
        fast = (
            self._fast.get(target)
            if isinstance(target, str) and headers is None and delay is None and eta is None
            else None
        )
        if fast is not None:
            # The common call, flattened: a bulk sender pays two encodes, a
            # slot object and produce(), like a hand-written loop (bench.client).
            name, encode_key, encode_value = fast
            delivery = Delivery(name, self._failed)
            self._send(
                name,
                None if value is None else encode_value(value),
                None if key is None else encode_key(key),
                None,
                delivery,
            )
            return delivery
        name, raw_value, raw_key, raw_headers = self._encode(
            target, value, key, headers, delay, eta
        )
        delivery = Delivery(name, self._failed)
        self._produce(name, raw_value, raw_key, raw_headers, delivery)
        return delivery

    async def flush(self, timeout: float = 30.0) -> None:
        """Wait until every record sent so far is delivered.

        Raises:
            ClientError: Records sent with :meth:`send_nowait` were refused
                since the last flush, or records are
                still queued after ``timeout``.
        """
        producer = self._producer
        if producer is None:
            raise ClientError("the client is not open: use `async with app.client() as c`")
        left = await asyncio.get_running_loop().run_in_executor(None, producer.flush, timeout)
        refused, self._failed[:] = list(self._failed), []
        if refused:
            raise ClientError(
                f"{len(refused)} records refused by the broker, the first: "
                f"{refused[0].topic}: {refused[0].error}"
            )
        if left:
            raise ClientError(f"{left} records still undelivered after {timeout:.0f}s")

    def _encode(
        self,
        target: str | Topic,
        value: Any,
        key: Any,
        headers: list[tuple[str, bytes]] | dict[str, str | bytes] | None,
        delay: float | None,
        eta: datetime | None,
    ) -> tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]] | None]:
        topic, codec = self._resolve(target)
        raw_key = None if key is None else codec.key.serialize(key)
        raw_value = None if value is None else codec.value.serialize(value)
        raw_headers = None if headers is None else _headers(headers)
        if delay is not None or eta is not None:
            name, raw_headers = self._delayed(target, delay, eta, raw_headers or [])
            if name is not None:
                return name, raw_value, raw_key, raw_headers
        return topic.name, raw_value, raw_key, raw_headers

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
        delivery: Delivery,
    ) -> None:
        producer = self._producer
        if producer is None:
            raise ClientError("the client is not open: use `async with app.client() as c`")
        producer.produce(topic, value, key, headers, delivery)

    def _resolve(self, target: str | Topic) -> tuple[Topic, Codec]:
        name = target if isinstance(target, str) else target.name
        found = self._resolved.get(name)
        if found is not None:
            return found
        found = self._resolve_new(target, name)
        if isinstance(target, str):
            topic, codec = found
            self._fast[target] = (topic.name, codec.key.serialize, codec.value.serialize)
        return found

    def _resolve_new(self, target: str | Topic, name: str) -> tuple[Topic, Codec]:
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
        replies = await self._reply_reader.get()
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

    @property
    def _replies(self) -> Replies | None:
        """The reply reader, once an ``ask`` opened it (tests read its counters)."""
        return self._reply_reader.value

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
        if tasks.name not in self._partitions:
            # Made here when no worker has made it yet (create_topics).
            await asyncio.get_running_loop().run_in_executor(None, self._count, tasks.name)
        # Queued first: the task's "running" can then only come after it.
        first = asyncio.ensure_future(self.send(tasks, queued, key=task_id))
        headers = [(H_TASK, task_id.encode()), (H_SUBMITTED, str(now).encode())]
        try:
            await self.send(agent, value, key=key, headers=headers, delay=delay, eta=eta)
        except BaseException as exc:
            # The task never went out: say so where its "queued" may be,
            # rather than leave a task queued for the status topic's life.
            await asyncio.gather(first, return_exceptions=True)
            gone = status(
                task_id,
                agent,
                "failed",
                error={"type": type(exc).__name__, "message": f"not sent: {exc}", "attempts": 0},
                submitted_at=now,
            )
            with contextlib.suppress(Exception):
                await self.send(tasks, gone, key=task_id)
            raise
        await first
        return TaskHandle(self, task_id)

    async def status(self, task_id: str, *, timeout: float = 10.0) -> dict[str, Any] | None:
        """A task's latest status, or ``None`` for a task not known (or expired).

        The status has ``state`` (queued, running, done, failed), ``progress``,
        ``message``, ``result`` and ``error``.
        """
        view = await self._task_view.get()
        await asyncio.get_running_loop().run_in_executor(None, view.catch_up, timeout)
        return view.get(task_id)

    async def watch(self, task_id: str) -> AsyncIterator[dict[str, Any]]:
        """Each status of the task as it comes, ending with done or failed."""
        view = await self._task_view.get()
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
