from __future__ import annotations

from typing import Any

import orjson
import pytest

from streamkit.errors import DeserializationError, SerializationError
from streamkit.serde import BytesSerde, JsonSerde, Serde, StrSerde


@pytest.mark.parametrize("serde", [BytesSerde(), StrSerde(), JsonSerde()])
def test_simple_serdes_satisfy_the_protocol(serde: Serde) -> None:
    assert isinstance(serde, Serde)


def test_bytes_pass_through_without_copy() -> None:
    serde = BytesSerde()
    data = b"\x00\xffraw"
    assert serde.serialize(data) is data
    assert serde.deserialize(data) is data


@pytest.mark.parametrize("buffer", [bytearray(b"abc"), memoryview(b"abc")])
def test_bytes_copies_mutable_buffers(buffer: bytearray | memoryview) -> None:
    out = BytesSerde().serialize(buffer)
    assert type(out) is bytes
    assert out == b"abc"


@pytest.mark.parametrize("value", ["text", 1, None, [1]])
def test_bytes_rejects_non_buffers(value: Any) -> None:
    with pytest.raises(SerializationError, match=r"^bytes: expected bytes.*got "):
        BytesSerde().serialize(value)


def test_str_round_trip_is_utf8() -> None:
    serde = StrSerde()
    data = serde.serialize("Zürich €")
    assert data == "Zürich €".encode()
    assert serde.deserialize(data) == "Zürich €"


def test_str_invalid_utf8_is_a_deserialization_error() -> None:
    with pytest.raises(DeserializationError, match=r"^str: not valid UTF-8") as info:
        StrSerde().deserialize(b"ok\xff\xfe")
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (123, "str: accepts only str, got int 123"),
        (b"bytes", "str: accepts only str, got bytes b'bytes'"),
        (12.5, "str: accepts only str, got float 12.5"),
    ],
)
def test_str_wrong_type_names_the_value_its_type_and_what_it_accepts(
    value: Any, message: str
) -> None:
    # The codec's own TypeError ("descriptor 'encode' for 'str' objects
    # doesn't apply to a 'int' object") says nothing a user can act on, so
    # it is not chained either.
    with pytest.raises(SerializationError) as info:
        StrSerde().serialize(value)
    assert str(info.value) == message
    assert info.value.__cause__ is None


def test_str_wrong_type_shortens_a_long_value() -> None:
    with pytest.raises(SerializationError) as info:
        StrSerde().serialize(list(range(1000)))
    assert len(str(info.value)) < 120
    assert str(info.value).startswith("str: accepts only str, got list [0, 1, 2")


def test_str_unencodable_text_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError, match=r"^str: cannot encode as UTF-8") as info:
        StrSerde().serialize("lone \ud800 surrogate")
    assert isinstance(info.value.__cause__, UnicodeEncodeError)


@pytest.mark.parametrize(
    "value",
    [{"id": "o-1", "items": [1, 2.5, None, True], "nested": {"a": "é"}}, [1, "two"], "s", 7, None],
)
def test_json_round_trip(value: Any) -> None:
    serde = JsonSerde()
    assert serde.deserialize(serde.serialize(value)) == value


def test_json_output_is_compact_utf8() -> None:
    assert JsonSerde().serialize({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()


@pytest.mark.parametrize("data", [b'{"a": 1', b"", b"nope", b'{"a":"\xff"}', b"[1] [2]"])
def test_json_malformed_is_a_deserialization_error(data: bytes) -> None:
    with pytest.raises(DeserializationError, match=r"^json: malformed JSON") as info:
        JsonSerde().deserialize(data)
    assert isinstance(info.value.__cause__, orjson.JSONDecodeError)


@pytest.mark.parametrize("value", [{1, 2}, {1: "non-str key"}, 2**70, object()])
def test_json_unencodable_is_a_serialization_error(value: Any) -> None:
    with pytest.raises(SerializationError, match=r"^json: cannot encode as JSON") as info:
        JsonSerde().serialize(value)
    assert isinstance(info.value.__cause__, orjson.JSONEncodeError)


def test_messages_use_the_name_the_serde_was_given() -> None:
    with pytest.raises(DeserializationError, match=r"^orders-json: "):
        JsonSerde(name="orders-json").deserialize(b"{")
