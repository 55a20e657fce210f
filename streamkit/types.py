"""Small value types shared by every layer."""

from __future__ import annotations

from typing import NamedTuple

Headers = list[tuple[str, bytes]]
"""Kafka record headers as the client hands them over: ordered, repeatable keys."""


class TopicPartition(NamedTuple):
    """A partition of a topic; hashable, so it keys the runtime's per-partition state."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"
