"""``watermarks``: what a topic created a moment ago answers is retried, nothing else."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamkit.backends.kafka import watermarks

TP = TopicPartition("t", 0)


class Answers:
    """A consumer whose lookups raise the given errors first, then answer (3, 9)."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.calls = 0

    def get_watermark_offsets(self, tp: Any, timeout: float, cached: bool) -> tuple[int, int]:
        self.calls += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return 3, 9


def test_not_leader_right_after_creation_is_waited_out() -> None:
    consumer = Answers(KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)
    assert watermarks(consumer, TP, timeout=5) == (3, 9)  # type: ignore[arg-type]
    assert consumer.calls == 3


def test_a_non_retriable_error_is_raised_at_once() -> None:
    consumer = Answers(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        watermarks(consumer, TP, timeout=5)  # type: ignore[arg-type]
    assert consumer.calls == 1


def test_a_retriable_error_still_there_at_the_deadline_is_raised() -> None:
    consumer = Answers(*[KafkaError.NOT_LEADER_FOR_PARTITION] * 1000)
    with pytest.raises(KafkaException):
        watermarks(consumer, TP, timeout=0.2)  # type: ignore[arg-type]
