"""librdkafka's statistics, read for consumer lag and the group's state.

With ``statistics.interval.ms`` set (5 s when the HTTP port is on), librdkafka
hands the consumer's ``stats_cb`` one JSON document per interval on the
fetcher thread. The worker only keeps the latest string there; it is parsed
here, at scrape time, at most once per document (a few hundred KB for
hundreds of partitions: about a millisecond with orjson).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class ConsumerStats:
    """What the endpoints use from one statistics document.

    Attributes:
        lag: Per ``(topic, partition)``: the high watermark minus the group's
            committed offset, for partitions librdkafka knows the lag of.
        group_state: ``cgrp.state``: ``up`` once the group coordinator is
            reached (``""`` without a group).
        join_state: ``cgrp.join_state``: ``steady`` once assigned (classic
            protocol); stays ``init`` for an idle KIP-848 member.
    """

    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    group_state: str = ""
    join_state: str = ""


def parse_stats(document: str) -> ConsumerStats:
    """Read a consumer's statistics document.

    Partition ``-1`` (librdkafka's internal unassigned partition) and
    partitions with an unknown lag (``-1``) are left out.
    """
    data: dict[str, Any] = orjson.loads(document)
    lag: dict[tuple[str, int], int] = {}
    for topic, topic_stats in (data.get("topics") or {}).items():
        for number, partition in (topic_stats.get("partitions") or {}).items():
            value = partition.get("consumer_lag", -1)
            if int(number) >= 0 and value >= 0:
                lag[(topic, int(number))] = value
    group = data.get("cgrp") or {}
    return ConsumerStats(lag, str(group.get("state", "")), str(group.get("join_state", "")))


class StatsReader:
    """Parses the worker's latest document once, however often it is read (any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._document: str | None = None
        self._parsed = ConsumerStats()

    def read(self, document: str | None) -> ConsumerStats:
        """The parsed form of ``document`` (empty for ``None`` or a broken document)."""
        if document is None:
            return ConsumerStats()
        with self._lock:
            if document is not self._document:
                try:
                    self._parsed = parse_stats(document)
                except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                    self._parsed = ConsumerStats()
                self._document = document
            return self._parsed
