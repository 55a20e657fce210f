"""Hostile bytes against every serde: a serde error or a value, never a crash or a stall.

Arbitrary bytes, huge values, wrong magic bytes, unknown fingerprints and
schema ids: ``deserialize`` returns a value or raises ``DeserializationError``;
``serialize`` of arbitrary values returns bytes or raises ``SerializationError``.
Nothing else escapes, and each call stays well under a second, so no record
can hold a partition for long (or crash the process: a segfault would end the run).
"""

from __future__ import annotations

import contextlib
import json
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamkit.errors import DeserializationError, SerializationError
from streamkit.serde import (
    AvroSerde,
    BytesSerde,
    JsonSerde,
    RegistryAvroSerde,
    SchemaStore,
    Serde,
    StrSerde,
    resolve_serde,
)
from streamkit.serde.avro import MARKER

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Decoding may take time in proportion to the bytes (the guard's pass over a
# recursive schema's record is pure Python, ~0.5 s per MB), never more: a
# record that takes longer would stall its partition behind it.
SLOW_S, SLOW_S_PER_MB = 1.0, 1.5
HUGE = 5 * 1024 * 1024


class Registry:
    """A registry that knows the ids it handed out and nothing else."""

    def __init__(self) -> None:
        self.texts: dict[int, list[str]] = {}

    def register(self, subject: str, schema: str) -> int:
        schema_id = len(self.texts) + 1
        self.texts[schema_id] = [schema]
        return schema_id

    def fetch(self, schema_id: int) -> Sequence[str]:
        if schema_id not in self.texts:
            raise LookupError(schema_id)
        return self.texts[schema_id]


HOSTILE_SCHEMAS = {
    # Zero-width items: a block count is all an array of them costs on the wire.
    "nulls.avsc": {
        "type": "record",
        "name": "Nulls",
        "namespace": "hostile",
        "fields": [
            {"name": "empty", "type": {"type": "array", "items": "null"}},
            {
                "name": "nothing",
                "type": {
                    "type": "map",
                    "values": {"type": "record", "name": "Empty", "fields": []},
                },
            },
        ],
    },
    "tree.avsc": {
        "type": "record",
        "name": "Tree",
        "namespace": "hostile",
        "fields": [
            {"name": "children", "type": {"type": "array", "items": "hostile.Tree"}},
            {"name": "tags", "type": {"type": "map", "values": ["null", "long", "hostile.Tree"]}},
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
            {"name": "id", "type": {"type": "fixed", "name": "Id", "size": 4}},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "f", "type": "float"},
            {"name": "d", "type": "double"},
            {"name": "b", "type": "boolean"},
            {"name": "raw", "type": "bytes"},
        ],
    },
}


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory: pytest.TempPathFactory) -> SchemaStore:
    directory = tmp_path_factory.mktemp("hostile-schemas")
    for name, schema in HOSTILE_SCHEMAS.items():
        (directory / name).write_text(json.dumps(schema))
    return SchemaStore([Path(__file__).parent / "schemas", directory])


AVRO_SPECS = ["avro:shop.Order", "avro:shop.Order@v1", "avro:graph.Node", "avro:shop.Address"]
HOSTILE_SPECS = ["avro:hostile.Nulls", "avro:hostile.Tree"]


def every_serde(store: SchemaStore) -> Iterator[Serde]:
    yield from (BytesSerde(), StrSerde(), JsonSerde())
    for spec in [*AVRO_SPECS, *HOSTILE_SPECS]:
        yield resolve_serde(spec, schemas=store)
        serde = resolve_serde(spec, schemas=store, registry=Registry(), subject="t-value")
        assert isinstance(serde, RegistryAvroSerde)
        serde.serialize(example(spec))  # registers, so id 1 is known and others are not
        yield serde


def example(spec: str) -> Any:
    return {
        "avro:shop.Order": {
            "id": "o-1",
            "amount_cents": 5,
            "ship_to": {"street": "s", "city": "c"},
        },
        "avro:shop.Order@v1": {
            "id": "o-1",
            "amount_cents": 5,
            "ship_to": {"street": "s", "city": "c"},
        },
        "avro:graph.Node": {"label": "a", "next": {"label": "b", "next": None}},
        "avro:shop.Address": {"street": "s", "city": "c"},
        "avro:hostile.Nulls": {"empty": [None], "nothing": {"k": {}}},
        "avro:hostile.Tree": {
            "children": [],
            "tags": {},
            "kind": "A",
            "id": b"abcd",
            "at": 0,
            "f": 0.0,
            "d": 0.0,
            "b": True,
            "raw": b"",
        },
    }[spec]


def decodes_or_refuses(serde: Serde, data: bytes) -> None:
    started = time.monotonic()
    with contextlib.suppress(DeserializationError):
        serde.deserialize(data)
    took = time.monotonic() - started
    budget = SLOW_S + SLOW_S_PER_MB * len(data) / 2**20
    assert took < budget, f"{serde.name}: {took:.1f}s on {len(data)} bytes"


def encodes_or_refuses(serde: Serde, value: Any) -> None:
    with contextlib.suppress(SerializationError):
        assert isinstance(serde.serialize(value), bytes)


def zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def framings(serde: Serde, body: bytes) -> list[bytes]:
    """``body`` as it would arrive: bare, and behind each header the serde knows."""
    if isinstance(serde, AvroSerde):
        return [body, MARKER + serde.schema.fingerprint + body]
    if isinstance(serde, RegistryAvroSerde):
        return [body, struct.pack(">BI", 0, 1) + body]
    return [body]


@FUZZ
@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes_decode_or_raise_a_deserialization_error(
    hostile_store: SchemaStore, data: bytes
) -> None:
    for serde in every_serde(hostile_store):
        for framed in framings(serde, data):
            decodes_or_refuses(serde, framed)


@FUZZ
@given(
    magic=st.integers(0, 255),
    schema_id=st.integers(0, 2**32 - 1),
    fingerprint=st.binary(min_size=8, max_size=8),
    body=st.binary(max_size=50),
)
def test_wrong_magic_bytes_fingerprints_and_schema_ids_are_deserialization_errors(
    hostile_store: SchemaStore, magic: int, schema_id: int, fingerprint: bytes, body: bytes
) -> None:
    for serde in every_serde(hostile_store):
        decodes_or_refuses(serde, struct.pack(">BI", magic, schema_id) + body)
        decodes_or_refuses(serde, MARKER + fingerprint + body)
        decodes_or_refuses(serde, MARKER + fingerprint[: len(body) % 8])


def test_an_unknown_schema_id_names_the_id(hostile_store: SchemaStore) -> None:
    serde = resolve_serde(
        "avro:shop.Order", schemas=hostile_store, registry=Registry(), subject="s"
    )
    with pytest.raises(DeserializationError, match="unknown schema id 4242"):
        serde.deserialize(struct.pack(">BI", 0, 4242) + b"\x02a")


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(lambda: b"\x00" * HUGE, id="zeros"),
        pytest.param(lambda: b"\xff" * HUGE, id="ones"),
        pytest.param(lambda: b"[" * HUGE, id="json-nesting"),
        pytest.param(lambda: b'"' + b"a" * HUGE + b'"', id="json-string"),
        pytest.param(lambda: zigzag(HUGE - 10) + b"x" * (HUGE - 10), id="avro-length"),
        pytest.param(lambda: b"\x00\x02" * (HUGE // 2), id="avro-recursion"),
        pytest.param(lambda: b"\x02\x00" * (HUGE // 2), id="avro-nested-arrays"),
        pytest.param(lambda: zigzag(2**62) * 3, id="avro-huge-block-counts"),
        pytest.param(lambda: zigzag(-(2**62)) + zigzag(HUGE), id="avro-negative-block"),
    ],
)
def test_huge_values_decode_or_raise_in_bounded_time(
    hostile_store: SchemaStore, payload: Callable[[], bytes]
) -> None:
    data = payload()
    for serde in every_serde(hostile_store):
        # Framed only: bare bytes take the same decoder. The two guarded
        # schemas' pass is linear in the bytes (0.5 s per MB): 1 MB of the
        # pattern shows it as well as 5 would, in a fifth of the time.
        sized = data[: 2**20] if serde.name in HOSTILE_SPECS else data
        decodes_or_refuses(serde, framings(serde, sized)[-1])


def test_a_deep_legitimate_tree_still_decodes(hostile_store: SchemaStore) -> None:
    node: Any = None
    for i in range(200):  # deeper than any record seen in practice, within the guard
        node = {"label": str(i), "next": node}
    serde = resolve_serde("avro:graph.Node", schemas=hostile_store)
    assert serde.deserialize(serde.serialize(node)) == node


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.binary()
    | st.datetimes(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
        | st.dictionaries(st.integers(), inner, max_size=2)
        | st.sets(st.integers(), max_size=2)
    ),
    max_leaves=10,
)


@FUZZ
@given(value=values)
def test_arbitrary_values_encode_or_raise_a_serialization_error(
    hostile_store: SchemaStore, value: Any
) -> None:
    for serde in every_serde(hostile_store):
        encodes_or_refuses(serde, value)


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb"])
def test_lone_surrogates_are_serialization_errors(hostile_store: SchemaStore, text: str) -> None:
    for serde in every_serde(hostile_store):
        encodes_or_refuses(serde, text)
        encodes_or_refuses(serde, {"id": text, "label": text, "street": text, "city": text})
