"""``pipelines/example.py`` in the test harness, written the way a user would."""

from __future__ import annotations

import zlib
from collections import defaultdict

from pipelines.example import app
from streamkit.testing import TestApp


def test_double() -> None:
    with TestApp(app) as t:
        t.send("example.in", {"id": 1, "n": 21}, key="a")
        t.run_until_idle()
        assert t.output("example.out") == [{"id": 1, "n": 42}]


def test_output_keeps_the_key_and_lands_on_the_keys_partition() -> None:
    with TestApp(app) as t:
        sent = t.send("example.in", {"id": 7, "n": 1}, key="customer-7")
        t.run_until_idle()
        [out] = t.records("example.out")
    assert out.key == "customer-7"
    # librdkafka's default partitioner (CRC32 of the key), for input and output alike.
    assert sent.partition == out.partition == zlib.crc32(b"customer-7") % 4


def test_each_keys_records_come_out_in_the_order_they_went_in() -> None:
    with TestApp(app) as t:
        for i in range(300):
            t.send("example.in", {"id": i, "n": i}, key=f"user-{i % 7}")
        t.run_until_idle()
        by_key: dict[str, list[int]] = defaultdict(list)
        for record in t.records("example.out"):
            by_key[record.key].append(record.value["id"])
    assert sorted(i for ids in by_key.values() for i in ids) == list(range(300))
    for key, ids in by_key.items():
        assert ids == sorted(ids), key
        assert all(i % 7 == int(key.removeprefix("user-")) for i in ids)


def test_everything_processed_is_committed_once_idle() -> None:
    with TestApp(app) as t:
        for i in range(20):
            t.send("example.in", {"id": i, "n": i}, key=str(i))
        t.run_until_idle()
        counts: dict[int, int] = defaultdict(int)
        for record in t.records("example.in"):
            counts[record.partition] += 1
        assert t.committed("example.in") == counts


def test_a_crash_redelivers_what_was_not_committed_yet() -> None:
    with TestApp(app) as t:
        t.send("example.in", {"id": 1, "n": 1}, key="a")
        t.run_until_idle()  # processed and committed
        t.send("example.in", {"id": 2, "n": 2}, key="a")
        t.run_until_idle(commit=False)  # processed, not committed
        t.crash_and_restart()
        t.run_until_idle()
        assert t.output("example.out") == [{"id": 1, "n": 2}, {"id": 2, "n": 4}, {"id": 2, "n": 4}]


def test_a_graceful_rebalance_duplicates_nothing() -> None:
    with TestApp(app) as t:
        for i in range(40):
            t.send("example.in", {"id": i, "n": i}, key=str(i))
        t.run_until_idle(commit=False)
        t.rebalance(workers=2)  # partitions that move are committed on revoke
        for i in range(40, 80):
            t.send("example.in", {"id": i, "n": i}, key=str(i))
        t.run_until_idle()
        assert [len(parts) for parts in t.assignment()] == [2, 2]
        assert sorted(v["id"] for v in t.output("example.out")) == list(range(80))


def test_a_record_that_is_not_json_is_dead_lettered_untouched_and_the_rest_goes_on() -> None:
    with TestApp(app) as t:
        t.send("example.in", b"{not json", key=b"a", partition=0, raw=True)
        t.send("example.in", {"id": 2, "n": 2}, partition=0)
        t.run_until_idle()
        assert t.output("example.out") == [{"id": 2, "n": 4}]
        [dead] = t.dead_letters("double")
        assert (dead.key, dead.value) == (b"a", b"{not json")
        headers = dict(dead.headers)
        assert headers["__streams.errors.offset"] == b"0"
        assert b"malformed JSON" in headers["__streams.errors.message"]
        assert t.committed("example.in") == {0: 2}
