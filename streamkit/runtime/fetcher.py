"""The poll thread: the only caller of ``consumer.consume()``.

Polling runs on its own thread so that a slow agent never keeps the worker
from polling: librdkafka leaves the group when ``max.poll.interval.ms``
passes without a poll, and rebalance callbacks are served from inside
``consume()``. The thread hands whole batches to the event loop (one
cross-thread call per batch, not per record).

Backpressure is demand-driven: the thread takes from librdkafka only as many
records as fit under ``max_buffered_records`` (fetched but not yet
processed). When nothing fits it still polls, one record at most every
100 ms, so rebalance callbacks are served and the member stays in the group.
Pausing a partition is only the hard stop for a partition whose backlog
passes the whole limit (a stuck agent): librdkafka purges a paused
partition's prefetched records and fetches them again on resume, which cost
60% of the throughput when used as the everyday mechanism (measured with
the bench: 0.33x against 1.0x of the hand-written loop).

What counts against the budget: records fetched and not yet started, and
records started but not yet committable (a record behind a slow head keeps
its ticket and its input record alive). Records waiting in a delayed-retry
tier do not: they wait for their due time, not for the agent, and counting
them would starve every source partition for the tier's delay. A tier
partition whose head is not due is paused instead, and resumed when it is.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from confluent_kafka import KafkaError
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamkit.backends.kafka import denial
from streamkit.clock import Clock, SystemClock
from streamkit.errors import BrokerError
from streamkit.runtime.partition import PartitionWorker

log = structlog.get_logger("streamkit.fetcher")

# consume() timeout: bounds how long stop requests and commands wait.
_POLL_TIMEOUT_S = 0.1
# While the buffer is full: how often to look for room, and how often to
# poll anyway (taking at most one record) to serve callbacks.
_ROOM_CHECK_S = 0.005
_FULL_POLL_EVERY_S = 0.1

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
        max_backlog: Records fetched and not yet processed, over all partitions.
        max_bytes: The same bound in value bytes.
        on_fatal: Called once with a fatal client error.
        ends: Per partition, the offset to stop before (replays).
        rate: Records per second at most (replays).
        on_poll: Called with the consumer after every poll, on this thread
            (exactly once: the group metadata the transaction needs, since
            the consumer answers only the thread that polls it).
        clock: When retry tiers are due (the harness's manual clock in tests).
    """

    def __init__(
        self,
        consumer: Any,
        workers: dict[Any, PartitionWorker],
        dispatch: Dispatch,
        batch: int,
        max_backlog: int,
        max_bytes: int,
        on_fatal: Callable[[BaseException], None],
        ends: dict[Any, int] | None = None,
        rate: float | None = None,
        on_poll: Callable[[Any], None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        super().__init__(name="streamkit-fetcher", daemon=True)
        self._consumer = consumer
        self._workers = workers
        self._dispatch = dispatch
        self._batch = batch
        self._max_backlog = max_backlog
        self._max_bytes = max_bytes
        self._record_bytes = 0.0
        # A bounded run (replay): records at or past a partition's end offset
        # are dropped and the partition paused; an optional records/s limit.
        self._ends = ends
        self._rate = rate
        self._allowance = 0.0
        self._allowance_at = time.monotonic()
        self._on_fatal = on_fatal
        self._on_poll = on_poll
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._fetching = True
        self._closed = threading.Event()
        self._reported: set[int] = set()
        self.polls = 0
        # In-memory consumers (streamkit.backends.memory) can cut a consume()
        # wait short, so a command runs now instead of after the poll timeout.
        self._wake: Callable[[], None] | None = getattr(consumer, "wake_consume", None)

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
            if self._wake is not None:
                self._wake()
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
        last_poll = 0.0
        try:
            while not self._closed.is_set():
                self._run_commands()
                if self._closed.is_set():
                    return
                if not self._fetching:
                    if not paused_all:
                        consumer.pause(consumer.assignment())
                        paused_all = True
                    consumer.consume(num_messages=1, timeout=_POLL_TIMEOUT_S)
                    continue
                room, capacity = self._room(self._apply_backpressure())
                if self._rate:
                    room = min(room, self._rate_allowance())
                    capacity = min(capacity, max(int(self._rate), 1))
                # Wait for room for a whole batch: a trickle of tiny batches
                # costs a loop wake-up each and starved the agents (-15%).
                if room >= min(batch, max(capacity // 2, 1)):
                    # Block for the first record only, then take what librdkafka
                    # already holds: consume(batch, timeout) waits until the
                    # batch is full, which at 5,000 records/s held each record
                    # up to 100 ms (p50 62 ms, bench/latency.py). Under load the
                    # second call still returns whole batches. Owners are
                    # resolved per call: the second call may run a rebalance
                    # callback, and a record fetched under the old assignment
                    # must never reach a re-assigned partition's new worker.
                    msgs = consumer.consume(num_messages=1, timeout=_POLL_TIMEOUT_S)
                    pairs = self._owned(msgs)
                    if msgs and room > 1:
                        more = consumer.consume(num_messages=min(batch, room) - 1, timeout=0)
                        pairs += self._owned(more)
                        msgs += more
                elif time.monotonic() - last_poll >= _FULL_POLL_EVERY_S and (
                    # A bounded run is assigned, not subscribed: no callbacks
                    # to serve, so no record beyond what the rate allows.
                    not self._rate or room >= 1
                ):
                    msgs = consumer.consume(num_messages=1, timeout=0)
                    pairs = self._owned(msgs)
                else:
                    self._closed.wait(_ROOM_CHECK_S)
                    continue
                last_poll = time.monotonic()
                self.polls += 1
                if self._on_poll is not None:
                    self._on_poll(consumer)
                if self._ends is not None and not msgs:
                    self._note_positions()
                if msgs and self._rate:
                    self._allowance -= len(msgs)
                if pairs:
                    self._dispatch(pairs)
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

    def _owned(self, msgs: list[Any]) -> list[tuple[PartitionWorker, list[Any]]]:
        """Group one consume call's records by the partition workers that own them now."""
        if not msgs:
            return []
        groups: dict[tuple[str, int], list[Any]] = {}
        key: tuple[str, int] | None = None
        run: list[Any] = []
        size = 0
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
            value = msg.value()
            if value:
                size += len(value)
        # Average value size, smoothed over batches: the byte bound is
        # kept on records times this, so the loop never measures bytes.
        self._record_bytes += 0.2 * (size / len(msgs) - self._record_bytes)
        if self._reported and groups:
            log.info("consuming again after client errors")
            self._reported.clear()
        if self._ends is not None:
            self._trim_to_ends(groups)
        pairs = []
        for k, records in groups.items():
            if not records:
                continue
            worker = self._workers.get(k)
            if worker is None:
                continue  # not ours any more; uncommitted, so the owner gets it
            if worker.first_offset is None:
                worker.first_offset = records[0].offset()
            if worker.revoked:
                continue
            worker.handed += len(records)
            pairs.append((worker, records))
        return pairs

    def _trim_to_ends(self, groups: dict[tuple[str, int], list[Any]]) -> None:
        assert self._ends is not None
        done = []
        for k, records in groups.items():
            end = self._ends.get(k)
            if end is None or records[-1].offset() < end:
                continue
            records[:] = [m for m in records if m.offset() < end]
            done.append(KafkaTopicPartition(k[0], k[1]))
        if done:
            self._consumer.pause(done)  # reached its end: fetch no further

    def _note_positions(self) -> None:
        """Bounded runs: where the consumer is, past any transaction markers (this thread)."""
        workers = [w for w in list(self._workers.values()) if not w.revoked]
        if not workers:
            return
        tps = [KafkaTopicPartition(w.tp.topic, w.tp.partition) for w in workers]
        for worker, tp in zip(workers, self._consumer.position(tps), strict=True):
            if tp.offset >= 0:
                worker.fetch_position = tp.offset

    def _rate_allowance(self) -> int:
        """Records that may be taken now under the rate limit (a token bucket)."""
        assert self._rate is not None
        now = time.monotonic()
        self._allowance = min(self._rate, self._allowance + (now - self._allowance_at) * self._rate)
        self._allowance_at = now
        return int(self._allowance)

    def _room(self, backlog: int) -> tuple[int, int]:
        """Records that fit now, and in all, under both bounds (count and bytes)."""
        capacity = min(self._max_backlog, int(self._max_bytes / max(self._record_bytes, 1.0)))
        return capacity - backlog, capacity

    def _apply_backpressure(self) -> int:
        """Pause partitions over the hard limit, resume drained ones; return the total backlog."""
        pause: list[KafkaTopicPartition] = []
        resume: list[KafkaTopicPartition] = []
        # Demand-driven fetching keeps the total at the limit; only the
        # one-record polls while full can push a partition past it, so the
        # hard stop sits at twice the limit and lifts at the limit.
        limit = self._max_backlog
        total = 0
        over = 0
        now = self._clock.time()
        for worker in list(self._workers.values()):
            backlog = worker.backlog
            full = backlog >= 2 * limit or (worker.paused and backlog > limit)
            if worker.delayed:
                want = full or worker.due_at > now
            else:
                total += backlog + worker.offsets.in_flight
                want = full
            if want and not worker.paused:
                worker.paused = True
                pause.append(KafkaTopicPartition(worker.tp.topic, worker.tp.partition))
                over += full
            elif worker.paused and not want:
                worker.paused = False
                resume.append(KafkaTopicPartition(worker.tp.topic, worker.tp.partition))
        if pause:
            self._consumer.pause(pause)
            if over:
                log.warning("partitions paused: backlog over the limit", partitions=over)
        if resume:
            self._consumer.resume(resume)
        return total

    def _on_error(self, err: KafkaError) -> None:
        # A fatal client error reaches consume() as a record error whose
        # fatal() is False and whose code is _FATAL (a static member fenced
        # by another with its group.instance.id): retrying it is for ever.
        if err.fatal() or err.code() == KafkaError._FATAL:
            self._on_fatal(BrokerError(f"fatal consumer error: {err.str()}"))
            return
        # An ACL denial (no READ on the group or a topic) does not go away by
        # retrying: the member would sit in the group with nothing assigned.
        denied = denial(err)
        if denied is not None:
            self._on_fatal(BrokerError(f"{denied}; grant it, then restart"))
            return
        # Log each kind of error once until records flow again: an outage
        # must not turn into a log line per poll.
        if err.code() not in self._reported:
            self._reported.add(err.code())
            log.warning("consumer error; retrying", error=err.str(), code=err.name())
