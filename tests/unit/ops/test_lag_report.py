"""Lag arithmetic, totals and the ``--json`` shape, without a broker."""

from __future__ import annotations

import pytest

from streamkit.ops.lag import Owner, Reset, build_report, partition_lag, reset_policy


@pytest.mark.parametrize(
    ("committed", "start", "end", "reset", "lag"),
    [
        (5, 0, 7, "earliest", 2),  # the usual case: end - committed
        (7, 0, 7, "earliest", 0),  # caught up
        (None, 0, 7, "earliest", 7),  # no commit: from the log start
        (None, 3, 7, "earliest", 4),  # ...which retention may have moved
        (None, 3, 7, "latest", 0),  # latest: a new group starts at the end
        (1, 3, 7, "earliest", 4),  # commit deleted by retention: reset applies
        (1, 3, 7, "latest", 0),
        (9, 0, 7, "earliest", 7),  # commit past the end (topic recreated): reset applies
        (None, 0, 0, "earliest", 0),  # empty partition
    ],
)
def test_partition_lag(committed: int | None, start: int, end: int, reset: Reset, lag: int) -> None:
    assert partition_lag(committed, start, end, reset) == lag


@pytest.mark.parametrize(
    ("value", "policy"),
    [
        ("earliest", "earliest"),
        ("smallest", "earliest"),
        ("beginning", "earliest"),
        ("latest", "latest"),
        ("LARGEST", "latest"),
        ("end", "latest"),
        ("error", "earliest"),
    ],
)
def test_reset_policy_aliases(value: str, policy: Reset) -> None:
    assert reset_policy(value) == policy


WORKER = Owner(client_id="orders-pod-1-42", host="10.0.0.7", member_id="m-1")


def sample(reset: Reset = "earliest") -> dict[str, object]:
    report = build_report(
        "orders",
        {"orders.raw": 3, "audit": 1},
        committed={("orders.raw", 0): 5, ("orders.raw", 1): 1, ("audit", 0): 10},
        watermarks={
            ("orders.raw", 0): (0, 7),
            ("orders.raw", 1): (0, 4),
            ("orders.raw", 2): (0, 2),
        },
        owners={("orders.raw", 0): WORKER, ("orders.raw", 2): WORKER},
        state="stable",
        members=1,
        reset=reset,
        missing_topics=["gone", "gone"],
    )
    return report.to_json()


def test_json_shape_and_totals() -> None:
    worker = {"client_id": "orders-pod-1-42", "host": "10.0.0.7", "member_id": "m-1"}
    assert sample() == {
        "group": "orders",
        "state": "stable",
        "members": 1,
        "reset": "earliest",
        "partitions": [
            # audit[0] has a commit past its (absent, so empty) log: reset to 0, lag 0.
            {
                "topic": "audit",
                "partition": 0,
                "committed": 10,
                "start": 0,
                "end": 0,
                "lag": 0,
                "owner": None,
            },
            {
                "topic": "orders.raw",
                "partition": 0,
                "committed": 5,
                "start": 0,
                "end": 7,
                "lag": 2,
                "owner": worker,
            },
            {
                "topic": "orders.raw",
                "partition": 1,
                "committed": 1,
                "start": 0,
                "end": 4,
                "lag": 3,
                "owner": None,
            },
            {
                "topic": "orders.raw",
                "partition": 2,
                "committed": None,
                "start": 0,
                "end": 2,
                "lag": 2,
                "owner": worker,
            },
        ],
        "totals": {"lag": 7, "topics": {"audit": 0, "orders.raw": 7}},
        "missing_topics": ["gone"],
    }


def test_no_commit_with_latest_counts_nothing() -> None:
    doc = sample(reset="latest")
    assert doc["totals"] == {"lag": 5, "topics": {"audit": 0, "orders.raw": 5}}


def test_group_with_no_commit_at_all() -> None:
    report = build_report(
        "fresh", {"t": 2}, committed={}, watermarks={("t", 0): (2, 10), ("t", 1): (0, 3)}
    )
    assert [(p.committed, p.lag) for p in report.partitions] == [(None, 8), (None, 3)]
    assert report.total_lag == 11
    assert report.state is None and report.members == 0


def test_owner_text() -> None:
    assert str(WORKER) == "orders-pod-1-42@10.0.0.7"
    assert str(Owner("solo", "", "m")) == "solo"
