"""``streamkit topics describe``: which differences count, and how they are reported."""

from __future__ import annotations

from streamkit import Topic
from streamkit.ops.describe import (
    Mismatch,
    ObservedTopic,
    check_topic,
    check_topics,
    mismatches,
)

DEFAULTS = {"cleanup.policy": "delete", "retention.ms": "604800000", "segment.ms": "604800000"}


def observed(
    name: str = "t",
    partitions: int = 4,
    replication: int = 3,
    configs: dict[str, str] | None = None,
) -> ObservedTopic:
    return ObservedTopic(name, partitions, replication, {**DEFAULTS, **(configs or {})})


def test_matching_topic_has_no_mismatch() -> None:
    declared = Topic("t", partitions=4, replication=3, config={"retention.ms": "604800000"})
    assert mismatches(declared, observed()) == ()


def test_unset_settings_accept_anything() -> None:
    assert mismatches(Topic("t"), observed(partitions=7, replication=1)) == ()


def test_partition_count_and_replication_differences() -> None:
    declared = Topic("t", partitions=6, replication=3)
    assert mismatches(declared, observed(partitions=4, replication=1)) == (
        Mismatch("partitions", 6, 4),
        Mismatch("replication", 3, 1),
    )


def test_declared_configs_are_compared_as_strings() -> None:
    declared = Topic(
        "t",
        config={"retention.ms": 3_600_000, "cleanup.policy": "compact"},  # type: ignore[dict-item]
    )
    found = mismatches(declared, observed(configs={"retention.ms": "3600000"}))
    assert found == (Mismatch("cleanup.policy", "compact", "delete"),)


def test_a_config_the_broker_does_not_report_is_a_mismatch() -> None:
    declared = Topic("t", config={"made.up": "1"})
    assert mismatches(declared, observed()) == (Mismatch("made.up", "1", None),)
    assert str(Mismatch("made.up", "1", None)) == "made.up is unset, declared 1"


def test_missing_topic_is_not_ok_and_says_how_to_fix_it() -> None:
    check = check_topic(Topic("orders.raw", partitions=4), None)
    assert not check.exists and not check.ok
    assert check.mismatches == ()
    assert check.problems() == ["orders.raw: does not exist (streamkit topics create makes it)"]


def test_shown_configs_are_the_important_two_plus_declared_ones() -> None:
    check = check_topic(Topic("t", config={"segment.ms": "604800000"}), observed())
    assert check.shown_configs() == DEFAULTS
    assert check_topic(Topic("t"), observed()).shown_configs() == {
        "cleanup.policy": "delete",
        "retention.ms": "604800000",
    }


def test_report_is_sorted_and_fails_on_any_problem() -> None:
    declared = [
        Topic("b", partitions=4),
        Topic("a", partitions=2, key_serde="bytes", value_serde="avro:shop.Order"),
        Topic("c"),
    ]
    report = check_topics("shop", declared, {"a": observed("a", partitions=1), "b": observed("b")})
    assert [c.name for c in report.topics] == ["a", "b", "c"]
    assert not report.ok
    assert report.problems() == [
        "a: partitions is 1, declared 2",
        "c: does not exist (streamkit topics create makes it)",
    ]
    assert check_topics("shop", declared[1:2], {"b": observed("b")}).ok is False
    assert check_topics("shop", declared[:1], {"b": observed("b")}).ok is True


def test_json_shape() -> None:
    declared = [
        Topic("a", partitions=2, key_serde="bytes", value_serde="avro:shop.Order"),
        Topic("c", config={"retention.ms": "1000"}),
    ]
    report = check_topics("shop", declared, {"a": observed("a", partitions=1)})
    assert report.to_json() == {
        "app": "shop",
        "ok": False,
        "replication": None,
        "under_replicated": False,
        "topics": [
            {
                "topic": "a",
                "exists": True,
                "ok": False,
                "partitions": 1,
                "replication": 3,
                "in_sync": None,
                "expected_replication": None,
                "under_replicated": False,
                "under_replicated_partitions": [],
                "configs": {"cleanup.policy": "delete", "retention.ms": "604800000"},
                "key_serde": "bytes",
                "value_serde": "avro:shop.Order",
                "declared": {"partitions": 2, "replication": None, "configs": {}},
                "mismatches": [{"setting": "partitions", "declared": 2, "actual": 1}],
            },
            {
                "topic": "c",
                "exists": False,
                "ok": False,
                "partitions": None,
                "replication": None,
                "in_sync": None,
                "expected_replication": None,
                "under_replicated": False,
                "under_replicated_partitions": [],
                "configs": {},
                "key_serde": "str",
                "value_serde": "json",
                "declared": {
                    "partitions": None,
                    "replication": None,
                    "configs": {"retention.ms": "1000"},
                },
                "mismatches": [],
            },
        ],
    }
