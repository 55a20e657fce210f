"""Bounded runs (replays): fixed partitions and offset ranges, then stop.

A replay assigns its partitions outright instead of joining the live group,
processes each from a start offset up to an end offset snapshotted before the
run, and ends when every partition's commit position reached its end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streamkit.types import TopicPartition


@dataclass(frozen=True)
class Bounds:
    """A bounded run (a replay): fixed partitions and offset ranges, then stop.

    Attributes:
        ranges: Per partition, the first offset to process and the end
            offset (exclusive), snapshotted before the run.
        redirect: Emit targets renamed (``{"orders.out": "orders.shadow"}``).
        rate: At most this many records per second (``None``: no limit).
        on_progress: Called about twice a second with each partition's position.
    """

    ranges: dict[TopicPartition, tuple[int, int]]
    redirect: dict[str, str] = field(default_factory=dict)
    rate: float | None = None
    on_progress: Callable[[dict[TopicPartition, int]], None] | None = None

    def progress(self, workers: Mapping[Any, Any]) -> dict[TopicPartition, int]:
        """Each partition's position, clamped to its range (workers by partition)."""
        done: dict[TopicPartition, int] = {}
        for tp, (start, end) in self.ranges.items():
            worker = workers.get(tp)
            position = worker.offsets.position if worker else None
            if (
                worker is not None
                and (worker.fetch_position or 0) >= end
                and not worker.backlog
                and not worker.offsets.in_flight
            ):
                # Fetched past the end and nothing left in flight: what is
                # left between the last record and the end is transaction
                # markers (a topic written exactly once), not records.
                position = end
            done[tp] = min(end, max(start, position if position is not None else start))
        return done

    def reached(self, done: Mapping[TopicPartition, int]) -> bool:
        """Whether every partition is done up to its end offset."""
        return all(done[tp] >= end for tp, (_, end) in self.ranges.items())
