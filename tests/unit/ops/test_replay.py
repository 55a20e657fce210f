"""Range resolution for ``streamkit replay`` against a fake consumer (no broker)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipelines import example
from streamkit import BrokerError, ConfigError
from streamkit.ops.replay import (
    INTERRUPTED,
    check_order,
    exit_code,
    fixed_ranges,
    parse_point,
    replay_key,
    resolve_ranges,
    run_replay,
)
from streamkit.types import TopicPartition


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


def test_the_resume_key_is_the_arguments_not_the_offsets() -> None:
    day = parse_point("2026-11-20T00:00:00Z", "--from")
    same = parse_point("2026-11-20T01:00:00+01:00", "--from")
    key = replay_key("enrich", day, None, None, {})
    assert replay_key("enrich", same, None, None, {}) == key, "the same instant"
    assert replay_key("enrich", day, None, [0], {}) != key
    assert replay_key("enrich", day, 1500, None, {}) != key
    assert replay_key("enrich", day, None, None, {"out": "shadow"}) != key
    assert replay_key("other", day, None, None, {}) != key


P0, P1 = TopicPartition("orders.raw", 0), TopicPartition("orders.raw", 1)


def test_a_rerun_keeps_the_first_runs_end_while_the_log_grows_and_retention_deletes() -> None:
    # First run: 0-1000 and 0-800. Since: 500 more records each; retention
    # deleted the first 300 of partition 1.
    now = {P0: (0, 1500), P1: (300, 1300)}
    stored = {P0: ("k", 0, 1000), P1: ("k", 0, 800)}
    assert fixed_ranges(now, stored, "k", "g") == {P0: (0, 1000), P1: (300, 800)}
    # Retention past the end: nothing left to do there.
    assert fixed_ranges({P0: (1200, 1500)}, {P0: ("k", 0, 1000)}, "k", "g") == {P0: (1000, 1000)}
    # A partition without a stored range (first run) keeps what is resolved now.
    assert fixed_ranges(now, {P0: ("k", 0, 1000)}, "k", "g")[P1] == (300, 1300)


def test_a_group_holding_another_replays_range_is_refused() -> None:
    with pytest.raises(ConfigError, match="group g holds the progress of another replay"):
        fixed_ranges({P0: (0, 10)}, {P0: ("other", 0, 10)}, "k", "g")


def test_a_bare_number_that_reads_as_a_date_is_refused_and_offsets_can_be_spelled_out() -> None:
    # Review k8s-ops-4d2152b, CLI item 16: 20240601 became offset 20,240,601.
    with pytest.raises(ConfigError, match=r"2024-06-01.*offset:20240601"):
        parse_point("20240601", "--from")
    assert parse_point("offset:20240601", "--from") == 20_240_601
    assert parse_point("1500", "--from") == 1500
    assert parse_point("20241399", "--from") == 20_241_399  # no such date: an offset


def test_an_end_before_the_start_is_refused() -> None:
    # Review CLI item 16: --to before --from silently replayed nothing.
    day = parse_point("2026-11-20T00:00:00Z", "--from")
    earlier = parse_point("2026-11-19T00:00:00Z", "--to")
    with pytest.raises(ConfigError, match="--to is before --from"):
        check_order(day, earlier)
    with pytest.raises(ConfigError, match="--to is before --from"):
        check_order(500, 100)
    with pytest.raises(ConfigError, match="partition 3"):
        check_order({0: 10, 3: 50}, {3: 20})
    check_order(day, None)
    check_order(100, 100)
    check_order(day, 5000)  # a time and an offset: only the resolved range can tell
