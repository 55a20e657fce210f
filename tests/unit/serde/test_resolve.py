from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import streamkit.serde
from streamkit.errors import DeclarationError
from streamkit.serde import (
    AvroSerde,
    BytesSerde,
    JsonSerde,
    RegistryAvroSerde,
    SchemaStore,
    StrSerde,
    resolve_serde,
)

SCHEMA_DIR = Path(__file__).parent / "schemas"


class UpperSerde:
    name = "upper"

    def serialize(self, value: Any) -> bytes:
        return str(value).upper().encode()

    def deserialize(self, data: bytes) -> Any:
        return data.decode()


class NullRegistry:
    def register(self, subject: str, schema: str) -> int:
        return 1

    def fetch(self, schema_id: int) -> Sequence[str]:
        raise LookupError(schema_id)


def test_public_api_is_exactly_this() -> None:
    assert streamkit.serde.__all__ == sorted(streamkit.serde.__all__)
    assert streamkit.serde.__all__ == [
        "AvroSchema",
        "AvroSerde",
        "BytesSerde",
        "ConfluentSchemaRegistry",
        "JsonSerde",
        "RegistryAvroSerde",
        "SchemaRegistry",
        "SchemaStore",
        "Serde",
        "StrSerde",
        "resolve_serde",
        "topic_subject",
    ]
    for name in streamkit.serde.__all__:
        assert getattr(streamkit.serde, name) is not None


@pytest.mark.parametrize(
    ("spec", "kind"), [("bytes", BytesSerde), ("str", StrSerde), ("json", JsonSerde)]
)
def test_schemaless_specs(spec: str, kind: type) -> None:
    serde = resolve_serde(spec)
    assert type(serde) is kind
    assert serde.name == spec


def test_schemaless_specs_ignore_registry_settings() -> None:
    serde = resolve_serde("json", registry="mock://ignored", subject="t-value")
    assert type(serde) is JsonSerde


def test_a_serde_object_is_returned_as_is() -> None:
    serde = UpperSerde()
    assert resolve_serde(serde) is serde


def test_an_object_that_is_not_a_serde_is_rejected() -> None:
    with pytest.raises(DeclarationError, match=r"of type int; valid: 'bytes', 'str', 'json'"):
        resolve_serde(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", ["yaml", "JSON", "avro", "json "])
def test_unknown_spec_names_it_and_lists_valid_ones(spec: str) -> None:
    with pytest.raises(DeclarationError) as info:
        resolve_serde(spec)
    message = str(info.value)
    assert message.startswith(f"unknown serde {spec!r}; valid: ")
    for valid in ("'bytes'", "'str'", "'json'", "'avro:<full record name>'"):
        assert valid in message


def test_avro_without_registry_is_single_object(store: SchemaStore) -> None:
    serde = resolve_serde("avro:shop.Order", schemas=store)
    assert isinstance(serde, AvroSerde)
    assert serde.name == "avro:shop.Order"
    assert serde.schema is store.get("shop.Order")
    # Every version in the store can be read.
    v1 = resolve_serde("avro:shop.Order@v1", schemas=store)
    record = {"id": "o", "amount_cents": 1, "ship_to": {"street": "s", "city": "c"}}
    assert serde.deserialize(v1.serialize(record))["qty"] == 1


def test_avro_version_pin(store: SchemaStore) -> None:
    serde = resolve_serde("avro:shop.Order@v1", schemas=store)
    assert isinstance(serde, AvroSerde)
    assert serde.schema is store.get("shop.Order", "v1")
    assert serde.name == "avro:shop.Order@v1"


def test_avro_with_registry_uses_the_wire_format(store: SchemaStore) -> None:
    serde = resolve_serde(
        "avro:shop.Order", schemas=store, registry=NullRegistry(), subject="orders-value"
    )
    assert isinstance(serde, RegistryAvroSerde)
    assert serde.subject == "orders-value"
    assert serde.name == "avro:shop.Order"


def test_avro_with_registry_needs_a_subject(store: SchemaStore) -> None:
    with pytest.raises(DeclarationError, match=r"'avro:shop\.Order'.*needs a subject"):
        resolve_serde("avro:shop.Order", schemas=store, registry=NullRegistry())


def test_unknown_avro_name_names_the_spec_and_known_schemas(store: SchemaStore) -> None:
    with pytest.raises(
        DeclarationError, match=r"^serde 'avro:shop\.Ordr': .*known schemas: graph\.Node"
    ):
        resolve_serde("avro:shop.Ordr", schemas=store)


def test_unknown_avro_version_lists_versions(store: SchemaStore) -> None:
    with pytest.raises(DeclarationError, match=r"'avro:shop\.Order@v9'.*versions: v1, latest"):
        resolve_serde("avro:shop.Order@v9", schemas=store)


@pytest.mark.parametrize("spec", ["avro:", "avro:@v1"])
def test_avro_spec_without_a_name(spec: str) -> None:
    with pytest.raises(DeclarationError, match=rf"{spec!r} names no Avro schema"):
        resolve_serde(spec)


def test_default_store_reads_schemas_under_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "node.avsc").write_bytes((SCHEMA_DIR / "node.avsc").read_bytes())
    monkeypatch.chdir(tmp_path)
    serde = resolve_serde("avro:graph.Node")
    assert serde.deserialize(serde.serialize({"label": "x", "next": None})) == {
        "label": "x",
        "next": None,
    }


def test_default_store_missing_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DeclarationError, match=rf"{tmp_path / 'schemas'} does not exist"):
        resolve_serde("avro:graph.Node")
