"""``streamkit topics describe``: under-replicated topics, found and shown.

``fetch_observed`` reads replicas and in-sync replicas from a fake of
``AdminClient.list_topics``'s metadata; the checks and the rendering are pure.
"""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

from rich.console import Console

from streamkit import Topic
from streamkit.ops import render
from streamkit.ops.describe import ObservedTopic, check_topic, check_topics, fetch_observed

CONFIGS = {"cleanup.policy": "delete", "retention.ms": "604800000"}


def observed(
    replication: int = 3, in_sync: int | None = None, short: tuple[int, ...] = ()
) -> ObservedTopic:
    return ObservedTopic("t", 4, replication, CONFIGS, in_sync, short)


def text_of(renderable: object) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


class FakeAdmin:
    """``list_topics`` and ``describe_configs`` over partitions given as (replicas, isrs)."""

    def __init__(self, topics: dict[str, list[tuple[list[int], list[int]]]]) -> None:
        self.topics = topics

    def list_topics(self, timeout: float) -> Any:
        return SimpleNamespace(
            topics={
                name: SimpleNamespace(
                    error=None,
                    partitions={
                        i: SimpleNamespace(id=i, replicas=replicas, isrs=isrs)
                        for i, (replicas, isrs) in enumerate(parts)
                    },
                )
                for name, parts in self.topics.items()
            }
        )

    def describe_configs(self, resources: list[Any], request_timeout: float) -> dict[Any, Any]:
        futures = {}
        for resource in resources:
            future: Future[dict[str, Any]] = Future()
            future.set_result({k: SimpleNamespace(value=v) for k, v in CONFIGS.items()})
            futures[resource] = future
        return futures


def test_metadata_gives_the_smallest_isr_and_the_short_partitions() -> None:
    admin = FakeAdmin(
        {
            "healthy": [([1, 2, 3], [3, 1, 2])] * 2,
            "shrunk": [([1, 2, 3], [1, 2, 3]), ([2, 3, 1], [2]), ([3, 1, 2], [3, 1])],
        }
    )
    found = fetch_observed(admin, ["healthy", "shrunk", "absent"])  # type: ignore[arg-type]
    assert set(found) == {"healthy", "shrunk"}
    assert (found["healthy"].in_sync, found["healthy"].under_replicated_partitions) == (3, ())
    assert found["shrunk"].replication == 3
    assert (found["shrunk"].in_sync, found["shrunk"].under_replicated_partitions) == (1, (1, 2))


def test_fewer_replicas_than_the_app_setting_fails_the_check() -> None:
    check = check_topic(Topic("t"), observed(replication=1), replication=3)
    assert check.expected_replication == 3
    assert check.replication_short and check.under_replicated and not check.ok
    assert check.mismatches == ()
    assert check.problems() == ["t: replication is 1, below the app's replication setting 3"]


def test_the_declared_replication_wins_over_the_app_setting() -> None:
    # Declared 1 on purpose (a scratch topic): the app's 3 does not apply.
    assert check_topic(Topic("t", replication=1), observed(replication=1), replication=3).ok
    # Declared 3, has 2: one mismatch line, no second line for the same fault.
    check = check_topic(Topic("t", replication=3), observed(replication=2), replication=2)
    assert check.expected_replication == 3
    assert check.replication_short and not check.ok
    assert check.problems() == ["t: replication is 2, declared 3"]


def test_without_a_setting_or_declaration_any_replication_is_accepted() -> None:
    check = check_topic(Topic("t"), observed(replication=1))
    assert check.expected_replication is None
    assert check.ok and not check.under_replicated


def test_more_replicas_than_the_app_setting_is_fine() -> None:
    assert check_topic(Topic("t"), observed(replication=5), replication=3).ok


def test_partitions_short_of_in_sync_replicas_are_flagged_but_do_not_fail() -> None:
    check = check_topic(Topic("t"), observed(in_sync=2, short=(0, 3)), replication=3)
    assert check.under_replicated and not check.replication_short
    assert check.ok  # a broker restart is not drift; see the module docstring
    assert check.problems() == [
        "t: partitions 0, 3 under-replicated: fewer in-sync replicas than replicas "
        "(a broker is down or behind)"
    ]


def test_the_report_and_its_json_carry_the_flag() -> None:
    declared = [Topic("a"), Topic("b"), Topic("c")]
    report = check_topics(
        "shop",
        declared,
        {
            "a": ObservedTopic("a", 4, 1, CONFIGS, 1),
            "b": ObservedTopic("b", 4, 3, CONFIGS, 2, (1,)),
            "c": ObservedTopic("c", 4, 3, CONFIGS, 3),
        },
        replication=3,
    )
    assert report.under_replicated and not report.ok
    document = report.to_json()
    assert (document["replication"], document["under_replicated"]) == (3, True)
    rows = {
        t["topic"]: (
            t["ok"],
            t["under_replicated"],
            t["replication"],
            t["in_sync"],
            t["expected_replication"],
            t["under_replicated_partitions"],
        )
        for t in document["topics"]
    }
    assert rows == {
        "a": (False, True, 1, 1, 3, []),
        "b": (True, True, 3, 2, 3, [1]),
        "c": (True, False, 3, 3, 3, []),
    }
    healthy = check_topics("shop", declared[2:], {"c": ObservedTopic("c", 4, 3, CONFIGS, 3)})
    assert healthy.ok and not healthy.under_replicated


def test_the_table_shows_under_replicated_topics() -> None:
    report = check_topics(
        "shop",
        [Topic("a"), Topic("b"), Topic("c", partitions=2)],
        {
            "a": ObservedTopic("a", 4, 1, CONFIGS, 1),
            "b": ObservedTopic("b", 4, 3, CONFIGS, 2, (1,)),
            "c": ObservedTopic("c", 4, 1, CONFIGS, 1),
        },
        replication=3,
    )
    text = text_of(render.describe_table(report))
    assert "topics of app shop (replication setting: 3)" in text
    rows = {
        cells[0]: cells[1:5]
        for line in text.splitlines()
        if len(cells := [c.strip() for c in line.strip("│┃ ").split("│")]) > 4
    }
    assert rows["a"] == ["under-replicated", "4", "1", "1"]
    assert rows["b"] == ["under-replicated", "4", "3", "2"]
    assert rows["c"] == ["mismatch", "4", "1", "1"]  # its second word is on the next line
    assert "a: replication is 1, below the app's replication setting 3" in text
    assert "b: partitions 1 under-replicated" in text
    broker_default = check_topics("shop", [Topic("a")], {})
    assert "(replication setting: broker default)" in text_of(render.describe_table(broker_default))
