"""Range resolution for ``streamkit replay`` against a fake consumer (no broker)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipelines import example
from streamkit import BrokerError, ConfigError
from streamkit.ops.replay import INTERRUPTED, exit_code, resolve_ranges, run_replay


class SilentBroker:
    """A consumer whose every request fails the way librdkafka reports a lost broker."""

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker transport failure"))


def test_a_broker_lost_after_the_start_check_is_a_broker_error() -> None:
    # BrokerError is what the CLI prints as one line; a KafkaException was a traceback.
    with pytest.raises(
        BrokerError, match=re.escape("cannot read orders.raw: Broker transport failure")
    ):
        resolve_ranges(SilentBroker(), "orders.raw", None, None)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [0.0, -5.0, float("nan")])
def test_a_rate_that_is_not_positive_is_refused_before_anything_runs(rate: float) -> None:
    with pytest.raises(ConfigError, match="rate="):
        run_replay(example.app, "double", {}, "example.replay.test", {}, rate=rate)


def test_only_a_finished_range_exits_0() -> None:
    assert exit_code(0, complete=True) == 0
    assert exit_code(0, complete=False) == INTERRUPTED == 3
    assert exit_code(1, complete=False) == 1, "a failure keeps its own code"
