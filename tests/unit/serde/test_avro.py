from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import schemaless_writer

from streamkit.errors import DeserializationError, SerializationError
from streamkit.serde import AvroSerde, SchemaStore, Serde

V1_ORDER = {
    "id": "o-1",
    "amount_cents": 1299,
    "ship_to": {"street": "Main St 1", "city": "Ghent"},
    "coupon": "SPRING",
}
LATEST_ORDER = {
    "id": "o-2",
    "amount_cents": 4500,
    "ship_to": {"street": "Quay 9", "city": "Porto"},
    "qty": 3,
    "note": "ring twice",
}


@pytest.fixture
def latest(store: SchemaStore) -> AvroSerde:
    return AvroSerde(store.get("shop.Order"), writers=store, name="avro:shop.Order")


@pytest.fixture
def v1(store: SchemaStore) -> AvroSerde:
    return AvroSerde(store.get("shop.Order", "v1"), writers=store, name="avro:shop.Order@v1")


def plain_avro(schema: Any, value: dict[str, Any]) -> bytes:
    stream = io.BytesIO()
    schemaless_writer(stream, schema, value)
    return stream.getvalue()


def test_avro_serde_satisfies_the_protocol(latest: AvroSerde) -> None:
    assert isinstance(latest, Serde)
    assert latest.name == "avro:shop.Order"


def test_round_trip(latest: AvroSerde) -> None:
    assert latest.deserialize(latest.serialize(LATEST_ORDER)) == LATEST_ORDER


def test_framing_is_single_object_encoding(latest: AvroSerde, store: SchemaStore) -> None:
    schema = store.get("shop.Order")
    data = latest.serialize(LATEST_ORDER)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == schema.fingerprint
    assert data[10:] == plain_avro(schema.parsed, LATEST_ORDER)


def test_missing_fields_with_defaults_are_filled_when_writing(latest: AvroSerde) -> None:
    value = {k: v for k, v in LATEST_ORDER.items() if k not in ("qty", "note")}
    assert latest.deserialize(latest.serialize(value)) == {**value, "qty": 1, "note": None}


def test_old_writer_decodes_into_the_newest_shape(latest: AvroSerde, v1: AvroSerde) -> None:
    # v1 lacks qty and note (defaults fill them) and has coupon (dropped).
    decoded = latest.deserialize(v1.serialize(V1_ORDER))
    expected = {k: v for k, v in V1_ORDER.items() if k != "coupon"}
    assert decoded == {**expected, "qty": 1, "note": None}


def test_new_writer_decodes_into_an_older_reader(latest: AvroSerde, v1: AvroSerde) -> None:
    decoded = v1.deserialize(latest.serialize(LATEST_ORDER))
    expected = {k: v for k, v in LATEST_ORDER.items() if k not in ("qty", "note")}
    assert decoded == {**expected, "coupon": None}


def test_plain_avro_without_marker_is_read_with_the_reader_schema(
    latest: AvroSerde, store: SchemaStore
) -> None:
    data = plain_avro(store.get("shop.Order").parsed, LATEST_ORDER)
    assert latest.deserialize(data) == LATEST_ORDER


def test_writers_outside_the_serde_are_unknown(store: SchemaStore) -> None:
    lonely = AvroSerde(store.get("shop.Order"))  # no writers: only its own schema
    v1_data = AvroSerde(store.get("shop.Order", "v1")).serialize(V1_ORDER)
    with pytest.raises(DeserializationError) as info:
        lonely.deserialize(v1_data)
    message = str(info.value)
    assert message.startswith("avro:shop.Order: writer schema fingerprint ")
    assert v1_data[2:10].hex() in message


def test_unknown_fingerprint_is_named(latest: AvroSerde) -> None:
    data = b"\xc3\x01" + bytes.fromhex("0102030405060708") + b"\x00"
    with pytest.raises(DeserializationError, match=r"fingerprint 0102030405060708 "):
        latest.deserialize(data)


def test_a_writer_of_another_type_fails_to_resolve(latest: AvroSerde, store: SchemaStore) -> None:
    address = AvroSerde(store.get("shop.Address"))
    data = address.serialize({"street": "s", "city": "c"})
    with pytest.raises(DeserializationError, match=r"^avro:shop\.Order: malformed Avro") as info:
        latest.deserialize(data)
    # fastavro's message holds both schemas whole; ours stays short.
    assert "SchemaResolutionError" in str(info.value)
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("cut", [1, 5, 11, -1])
def test_truncated_records_are_deserialization_errors(latest: AvroSerde, cut: int) -> None:
    data = latest.serialize(LATEST_ORDER)[:cut]
    with pytest.raises(DeserializationError, match=r"^avro:shop\.Order: (truncated|malformed)"):
        latest.deserialize(data)


def test_truncated_plain_avro_is_a_deserialization_error(
    latest: AvroSerde, store: SchemaStore
) -> None:
    data = plain_avro(store.get("shop.Order").parsed, LATEST_ORDER)[:-3]
    with pytest.raises(DeserializationError, match=r"malformed Avro \(\d+ bytes\): EOFError"):
        latest.deserialize(data)


def test_trailing_bytes_are_rejected(latest: AvroSerde) -> None:
    with pytest.raises(DeserializationError, match=r"2 of \d+ bytes left after the Avro record"):
        latest.deserialize(latest.serialize(LATEST_ORDER) + b"\x00\x00")


def test_invalid_utf8_in_a_string_field_is_a_deserialization_error(
    store: SchemaStore,
) -> None:
    serde = AvroSerde(store.get("shop.Address"))
    # street: length 2 (zig-zag 4), then bytes that are not UTF-8.
    with pytest.raises(DeserializationError) as info:
        serde.deserialize(b"\x04\xff\xfe\x02c")
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (
            {"id": "o", "ship_to": {"street": "s", "city": "c"}},
            "amount_cents is specified in the schema but missing",
        ),
        ({**LATEST_ORDER, "qty": "three"}, "integer is required"),
        ({**LATEST_ORDER, "quantity": 3}, "more fields than the schema"),
        (["not", "a", "record"], ""),
    ],
)
def test_values_that_do_not_fit_are_serialization_errors(
    latest: AvroSerde, value: Any, problem: str
) -> None:
    with pytest.raises(SerializationError, match=rf"^avro:shop\.Order: cannot encode .*{problem}"):
        latest.serialize(value)


def test_recursive_types_round_trip(store: SchemaStore) -> None:
    serde = AvroSerde(store.get("graph.Node"), writers=store)
    chain = {"label": "a", "next": {"label": "b", "next": {"label": "c", "next": None}}}
    assert serde.deserialize(serde.serialize(chain)) == chain


def test_default_name_is_the_spec(store: SchemaStore) -> None:
    assert AvroSerde(store.get("graph.Node")).name == "avro:graph.Node"
