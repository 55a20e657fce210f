"""librdkafka statistics documents read for lag and the group's state."""

from __future__ import annotations

import json

from streamkit.observability.kafka_stats import ConsumerStats, StatsReader, parse_stats

# Trimmed from a real librdkafka 2.x consumer document.
DOCUMENT = json.dumps(
    {
        "name": "shop-host-1#consumer-1",
        "type": "consumer",
        "cgrp": {"state": "up", "join_state": "steady", "assignment_size": 2},
        "topics": {
            "orders": {
                "topic": "orders",
                "partitions": {
                    "0": {"partition": 0, "consumer_lag": 12, "committed_offset": 88},
                    "1": {"partition": 1, "consumer_lag": -1, "committed_offset": -1001},
                    "-1": {"partition": -1, "consumer_lag": -1},
                },
            }
        },
    }
)


def test_lag_of_known_partitions_and_the_group_state() -> None:
    stats = parse_stats(DOCUMENT)
    assert stats == ConsumerStats({("orders", 0): 12}, "up", "steady")


def test_a_document_is_parsed_once_and_broken_ones_read_as_empty() -> None:
    reader = StatsReader()
    assert reader.read(None) == ConsumerStats()
    first = reader.read(DOCUMENT)
    assert reader.read(DOCUMENT) is first
    assert reader.read("{not json") == ConsumerStats()
    assert reader.read('{"topics": []}') == ConsumerStats()
