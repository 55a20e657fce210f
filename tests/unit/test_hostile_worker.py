"""Hostile records through a running worker: each ends in the output or the dead-letter topic.

Arbitrary key and value bytes, tombstones, 5 MB values, many headers with
odd names and ``None`` or non-UTF-8 values, wrong Avro framing: the worker
neither stops nor stalls, every record is counted exactly once (output or
dead letter), the dead letter keeps the original key, value and headers, and
the group commits past all of them.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamkit import App, DeadLetterPolicy
from streamkit.serde.avro import MARKER
from streamkit.testing import TestApp

SCHEMAS = Path(__file__).parent / "serde" / "schemas"
HUGE = 5 * 1024 * 1024
PARTITIONS = 2
ERROR_HEADERS = ("__streams.errors.", "streamkit.errors.")
FLOOD_OK = DeadLetterPolicy(max_consecutive=10**6, max_ratio=1.0)

headers = st.lists(
    st.tuples(st.text(max_size=20), st.none() | st.binary(max_size=30)),
    max_size=8,
)
records = st.lists(
    st.tuples(
        st.none() | st.binary(max_size=20) | st.text(max_size=10).map(str.encode),
        st.none()
        | st.binary(max_size=100)
        | st.sampled_from(
            [b"{}", b'{"a": 1}', b"[1, 2]", b"1e999", b'"\xff"', b"18446744073709551616"]
        ),
        headers,
    ),
    min_size=1,
    max_size=25,
)


def relay_app(value_serde: str = "json") -> App:
    """One input, one output record per input (tombstones too), so counts add up exactly."""
    app = App("hostile", schemas_dir=str(SCHEMAS))
    source = app.topic(
        "hostile.in", key_serde="str", value_serde=value_serde, partitions=PARTITIONS
    )
    out = app.topic("hostile.out", key_serde="str", value_serde="json")

    # A flood of bad records stops a worker by design (DeadLetterPolicy's
    # limits); here every record may be bad, and the limits are not the subject.
    @app.agent(source, emits=[out], dead_letter=FLOOD_OK)
    def relay(value: Any) -> Any:
        return {"got": value is not None}

    return app


def run(app: App, batch: list[tuple[bytes | None, bytes | None, list[Any]]]) -> None:
    with TestApp(app) as t:
        sent = [
            t.send("hostile.in", value, key=key, headers=hs, raw=True) for key, value, hs in batch
        ]
        t.run_until_idle()
        # Raw: the worker passes a key through as the bytes it read (it never
        # decodes one it does not need), so a non-UTF-8 key reaches the output
        # as it came, where t.records() would fail to decode it.
        out = t.broker.messages("hostile.out")
        dead = t.dead_letters("relay")
        assert len(out) + len(dead) == len(sent), "every record in the output or the DLQ, once"
        by_origin = {(r.partition, r.offset): r for r in sent}
        assert len({d.origin for d in dead}) == len(dead)
        for d in dead:
            original = by_origin[(d.origin.partition, d.origin.offset)]
            assert (d.key, d.value) == (original.key, original.value), "the original bytes"
            kept = [h for h in d.headers if not h[0].startswith(ERROR_HEADERS)]
            assert kept == list(original.headers), "the original headers"
            assert d.stage == "deserialize"
        assert sum(t.committed("hostile.in").values()) == len(sent), "committed past them all"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=records)
def test_arbitrary_keys_values_and_headers_end_in_the_output_or_the_dlq(
    batch: list[tuple[bytes | None, bytes | None, list[Any]]],
) -> None:
    run(relay_app(), batch)


def test_huge_values_many_headers_and_bad_utf8_end_in_the_output_or_the_dlq() -> None:
    many = [(f"h{i}", bytes([i % 256]) * 10) for i in range(1000)]
    odd = [("", b""), ("ключ\u2028\x00", b"\xff\xfe"), ("none", None), ("dup", b"1"), ("dup", b"2")]
    batch: list[tuple[bytes | None, bytes | None, list[Any]]] = [
        (b"big", b'"' + b"a" * HUGE + b'"', []),  # 5 MB of valid JSON
        (b"big-bad", b"\xff" * HUGE, many),  # 5 MB of garbage with 1,000 headers
        (b"\xff\xfe", b"{}", odd),  # a key that is not UTF-8
        (None, None, odd),  # a tombstone without a key
        (b"k", b"{}", many + odd),
    ]
    run(relay_app(), batch)


@pytest.mark.parametrize(
    "value",
    [
        b"\x01" + struct.pack(">I", 1) + b"\x02a",  # a magic byte that is not 0x00
        MARKER + b"\x00" * 8 + b"\x02a",  # an unknown single-object fingerprint
        MARKER + b"\x01\x02",  # a truncated single-object header
        b"\x00\x02" * 50_000,  # a recursive schema's worst case: 100 KB of nesting
        b"",
    ],
)
def test_wrong_avro_framing_is_a_dead_letter_and_the_worker_goes_on(value: bytes) -> None:
    app = relay_app("avro:graph.Node")
    with TestApp(app) as t:
        t.send("hostile.in", value, key=b"bad", raw=True)
        t.send("hostile.in", {"label": "ok", "next": None}, key="good")
        t.run_until_idle()
        [dead] = t.dead_letters("relay")
        assert dead.value == value and dead.stage == "deserialize"
        assert t.output("hostile.out") == [{"got": True}]


def test_an_unknown_schema_id_is_a_dead_letter() -> None:
    app = App("hostile-registry", schemas_dir=str(SCHEMAS), schema_registry_url="mock://hostile-w")
    source = app.topic("hostile.in", value_serde="avro:shop.Address")
    out = app.topic("hostile.out", value_serde="json")

    @app.agent(source, emits=[out])
    def relay(value: Any) -> Any:
        return value

    with TestApp(app) as t:
        t.send(source, {"street": "s", "city": "c"})  # registers: a known id
        t.send(source, struct.pack(">BI", 0, 987_654) + b"\x02s\x02c", raw=True)
        t.run_until_idle()
        [dead] = t.dead_letters("relay")
        assert "unknown schema id 987654" in dead.message
        assert t.output(out) == [{"street": "s", "city": "c"}]
