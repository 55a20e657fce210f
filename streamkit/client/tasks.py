"""Task statuses as a client sees them: ``<app>.tasks`` read whole, then followed.

Any process can ask after any task, so a client that is asked about tasks
reads the compacted status topic from its start and keeps each task's
latest status in memory: as many tasks as the topic's retention keeps (a
week by default, :data:`streamkit.requests.TASK_RETENTION_MS`). Statuses
only go forward (queued, running, done or failed): a "queued" that arrives
after "running" is ignored, and so is a second "done" of a task that ran
twice at least once.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streamkit.backends.kafka import create_consumer, watermarks
from streamkit.config import AppConfig
from streamkit.requests import RANK

log = structlog.get_logger("streamkit.client")
_POLL_S = 0.05
_ENDS_TIMEOUT_S = 10.0
Watcher = Callable[[dict[str, Any]], None]


class TaskView:
    """Every task's latest status, kept up to date by a thread.

    Args:
        config: The app's settings.
        topic: ``<app>.tasks``.
        partitions: Its partition count.
    """

    def __init__(self, config: AppConfig, topic: str, partitions: int) -> None:
        self.topic = topic
        self.statuses: dict[str, dict[str, Any]] = {}
        self._watchers: dict[str, list[Watcher]] = {}
        self._lock = threading.Lock()
        self._positions = dict.fromkeys(range(partitions), 0)
        self._asked: list[_EndsAsked] = []
        self._consumer = create_consumer(
            config,
            **{"group.id": f"streamkit-client-{uuid.uuid4().hex}", "enable.auto.commit": False},
        )
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamkit-tasks", daemon=True)
        self._thread.start()

    def get(self, task_id: str) -> dict[str, Any] | None:
        """The task's latest status read so far."""
        with self._lock:
            return self.statuses.get(task_id)

    def watch(self, task_id: str, watcher: Watcher) -> None:
        """Call ``watcher(status)`` (on the reading thread) for each status of the task from now.

        The latest status read so far, if any, comes first.
        """
        with self._lock:
            self._watchers.setdefault(task_id, []).append(watcher)
            current = self.statuses.get(task_id)
        if current is not None:
            watcher(current)

    def unwatch(self, task_id: str, watcher: Watcher) -> None:
        """Stop calling ``watcher``."""
        with self._lock:
            found = self._watchers.get(task_id, [])
            if watcher in found:
                found.remove(watcher)
            if not found:
                self._watchers.pop(task_id, None)

    def catch_up(self, timeout: float) -> bool:
        """Wait until every partition is read up to its end as of now (any thread but the reader).

        The reading thread looks the ends up itself, between two fetches:
        confluent-kafka's ``get_watermark_offsets`` waits for a consumer
        another thread is polling, whatever its timeout.
        """
        asked = _EndsAsked()
        with self._lock:
            self._asked.append(asked)
        deadline = time.monotonic() + timeout
        if not asked.ready.wait(timeout):
            return False
        while time.monotonic() < deadline:
            with self._lock:
                if all(self._positions[p] >= end for p, end in asked.ends.items()):
                    return True
            time.sleep(0.01)
        return False

    def _answer_ends(self) -> None:
        with self._lock:
            asked, self._asked = self._asked, []
        if not asked:
            return
        ends: dict[int, int] = {}
        for p in self._positions:
            _, high = watermarks(self._consumer, TopicPartition(self.topic, p), _ENDS_TIMEOUT_S)
            ends[p] = high
        for one in asked:
            one.ends = ends
            one.ready.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._answer_ends()
                # consume(n, timeout) waits out the timeout unless n records
                # come; one record's wait, then what else is there, returns
                # as soon as the first reply does (runtime/fetcher.py does the same).
                batch = self._consumer.consume(1, timeout=_POLL_S)
                if batch:
                    batch += self._consumer.consume(1000, timeout=0)
            except Exception as exc:
                log.warning("reading task statuses failed", error=str(exc))
                self._stop.wait(1.0)
                continue
            notify = []
            with self._lock:
                for msg in batch:
                    if msg.error() is not None:
                        continue
                    notify += self._apply(msg)
                # The consumer's positions step over transaction markers,
                # which offsets of applied records never reach. Read after
                # the batch is applied, they never run ahead of the view.
                for tp in self._consumer.position(
                    [TopicPartition(self.topic, p) for p in self._positions]
                ):
                    if tp.offset >= 0:
                        self._positions[tp.partition] = tp.offset
            for watcher, value in notify:
                watcher(value)

    def _apply(self, msg: Any) -> list[tuple[Watcher, dict[str, Any]]]:
        key = msg.key()
        raw = msg.value()
        if key is None or raw is None:
            return []
        task_id = key.decode("utf-8", "replace")
        try:
            value = json.loads(raw)
        except ValueError:
            return []
        old = self.statuses.get(task_id)
        if old is not None and _settled_before(old, value):
            return []
        self.statuses[task_id] = value
        return [(w, value) for w in self._watchers.get(task_id, [])]

    def close(self) -> None:
        """Stop following the topic."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()


class _EndsAsked:
    """A ``catch_up`` waiting for the reading thread to look the partition ends up."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.ends: dict[int, int] = {}


def _settled_before(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether ``new`` is older news than ``old`` (statuses only go forward)."""
    old_rank, new_rank = RANK.get(old.get("state", ""), 0), RANK.get(new.get("state", ""), 0)
    if old_rank >= RANK["done"]:
        return True  # the first final word stays
    return new_rank < old_rank
