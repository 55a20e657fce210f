"""The poll thread: the only caller of ``consumer.consume()``.

Polling runs on its own thread so that a slow agent never keeps the worker
from polling: librdkafka leaves the group when ``max.poll.interval.ms``
passes without a poll, and rebalance callbacks are served from inside
``consume()``. The thread hands whole batches to the event loop (one
cross-thread call per batch, not per record) and applies backpressure by
pausing partitions whose backlog is full, resuming them once it halves.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from confluent_kafka import KafkaError
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamkit.errors import BrokerError
from streamkit.runtime.partition import PartitionWorker

log = structlog.get_logger("streamkit.fetcher")

# consume() timeout: bounds how long stop requests and pause decisions wait.
_POLL_TIMEOUT_S = 0.1

T = TypeVar("T")

Dispatch = Callable[[list[tuple[PartitionWorker, list[Any]]]], None]


class Fetcher(threading.Thread):
    """Polls the consumer and feeds partition workers.

    Args:
        consumer: The subscribed consumer.
        workers: The runtime's partition workers by ``(topic, partition)``;
            mutated only on this thread (rebalance callbacks run here).
        dispatch: Called with each batch; must hand it to the loop and return.
        batch: Records per ``consume`` call.
        max_backlog: Per-partition backlog that pauses the partition.
        on_fatal: Called once with a fatal client error.
    """

    def __init__(
        self,
        consumer: Any,
        workers: dict[Any, PartitionWorker],
        dispatch: Dispatch,
        batch: int,
        max_backlog: int,
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        super().__init__(name="streamkit-fetcher", daemon=True)
        self._consumer = consumer
        self._workers = workers
        self._dispatch = dispatch
        self._batch = batch
        self._max_backlog = max_backlog
        self._on_fatal = on_fatal
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._fetching = True
        self._closed = threading.Event()
        self._reported: set[int] = set()
        self.polls = 0

    def call(self, fn: Callable[[Any], T]) -> concurrent.futures.Future[T]:
        """Run ``fn(consumer)`` on this thread between two polls (any thread)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def command() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(self._consumer))
                except BaseException as exc:
                    future.set_exception(exc)

        if self._closed.is_set() or not self.is_alive():
            # Nobody polls any more, so no other thread can hold the consumer.
            command()
        else:
            self._commands.put(command)
        return future

    def stop_fetching(self) -> None:
        """Pause every partition and take no more records; keep polling (any thread).

        Polling goes on so the member stays in the group and serves callbacks
        while the loop drains; :meth:`close` ends it.
        """
        self._fetching = False

    def close(self, final: Callable[[Any], object]) -> concurrent.futures.Future[None]:
        """Run ``final(consumer)`` (the last commit), close the consumer, end the thread."""

        def finish(consumer: Any) -> None:
            try:
                final(consumer)
            finally:
                consumer.close()
                self._closed.set()

        return self.call(finish)

    def run(self) -> None:
        """Poll until closed; never lets an exception kill the thread silently."""
        consumer, batch = self._consumer, self._batch
        paused_all = False
        try:
            while not self._closed.is_set():
                self._run_commands()
                if self._closed.is_set():
                    return
                if self._fetching:
                    self._apply_backpressure()
                elif not paused_all:
                    consumer.pause(consumer.assignment())
                    paused_all = True
                msgs = consumer.consume(num_messages=batch, timeout=_POLL_TIMEOUT_S)
                self.polls += 1
                if msgs and self._fetching:
                    self._hand_over(msgs)
        except Exception as exc:
            self._on_fatal(exc)
            self._closed.set()
            self._run_commands()

    def _run_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            command()

    def _hand_over(self, msgs: list[Any]) -> None:
        groups: dict[tuple[str, int], list[Any]] = {}
        key: tuple[str, int] | None = None
        run: list[Any] = []
        for msg in msgs:
            if msg.error() is not None:
                self._on_error(msg.error())
                continue
            # Batches come in runs of one partition; only a change of
            # partition costs a dict lookup.
            k = (msg.topic(), msg.partition())
            if k != key:
                key = k
                run = groups.setdefault(k, [])
            run.append(msg)
        if self._reported and groups:
            log.info("consuming again after client errors")
            self._reported.clear()
        pairs = []
        for k, records in groups.items():
            worker = self._workers.get(k)
            if worker is None or worker.revoked:
                continue  # not ours any more; uncommitted, so the owner gets it
            worker.handed += len(records)
            pairs.append((worker, records))
        if pairs:
            self._dispatch(pairs)

    def _apply_backpressure(self) -> None:
        pause: list[KafkaTopicPartition] = []
        resume: list[KafkaTopicPartition] = []
        limit = self._max_backlog
        for worker in list(self._workers.values()):
            backlog = worker.backlog
            if not worker.paused and backlog >= limit:
                worker.paused = True
                pause.append(KafkaTopicPartition(worker.tp.topic, worker.tp.partition))
            elif worker.paused and backlog <= limit // 2:
                worker.paused = False
                resume.append(KafkaTopicPartition(worker.tp.topic, worker.tp.partition))
        if pause:
            self._consumer.pause(pause)
        if resume:
            self._consumer.resume(resume)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._on_fatal(BrokerError(f"fatal consumer error: {err.str()}"))
            return
        # Log each kind of error once until records flow again: an outage
        # must not turn into a log line per poll.
        if err.code() not in self._reported:
            self._reported.add(err.code())
            log.warning("consumer error; retrying", error=err.str(), code=err.name())
