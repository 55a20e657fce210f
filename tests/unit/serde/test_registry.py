"""RegistryAvroSerde against an in-memory SchemaRegistry fake (no extra needed)."""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from fastavro import schemaless_writer

from streamkit.errors import ConfigError, DeserializationError, SerializationError
from streamkit.serde import RegistryAvroSerde, SchemaStore, Serde, topic_subject
from streamkit.serde.registry import shared_registry

SUBJECT = "orders-value"
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
    "note": None,
}


class FakeRegistry:
    """Ids like a real registry: one per distinct (subject, schema); counts every call."""

    def __init__(self) -> None:
        self.texts: dict[int, list[str]] = {}
        self.ids: dict[tuple[str, str], int] = {}
        self.register_calls = 0
        self.fetch_calls = 0

    def register(self, subject: str, schema: str) -> int:
        self.register_calls += 1
        key = (subject, schema)
        if key not in self.ids:
            self.ids[key] = len(self.texts) + 1
            self.texts[self.ids[key]] = [schema]
        return self.ids[key]

    def fetch(self, schema_id: int) -> Sequence[str]:
        self.fetch_calls += 1
        try:
            return self.texts[schema_id]
        except KeyError:
            raise LookupError(schema_id) from None


class FailingRegistry(FakeRegistry):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def register(self, subject: str, schema: str) -> int:
        raise self.error

    def fetch(self, schema_id: int) -> Sequence[str]:
        raise self.error


@pytest.fixture
def fake() -> FakeRegistry:
    return FakeRegistry()


def serde(
    store: SchemaStore, registry: FakeRegistry, version: str | None = None
) -> RegistryAvroSerde:
    return RegistryAvroSerde(store.get("shop.Order", version), registry, SUBJECT)


def wire(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def plain_avro(schema: Any, value: Any) -> bytes:
    stream = io.BytesIO()
    schemaless_writer(stream, schema, value)
    return stream.getvalue()


def test_topic_subject_is_topic_name_strategy() -> None:
    assert topic_subject("orders", "value") == "orders-value"
    assert topic_subject("orders", "key") == "orders-key"


def test_round_trip_in_confluent_wire_format(store: SchemaStore, fake: FakeRegistry) -> None:
    latest = serde(store, fake)
    assert isinstance(latest, Serde)
    data = latest.serialize(LATEST_ORDER)
    schema_id = fake.ids[(SUBJECT, store.get("shop.Order").to_json())]
    assert data == wire(schema_id, plain_avro(store.get("shop.Order").parsed, LATEST_ORDER))
    assert latest.deserialize(data) == LATEST_ORDER


def test_registers_once_on_first_record_not_at_declaration(
    store: SchemaStore, fake: FakeRegistry
) -> None:
    latest = serde(store, fake)
    assert fake.register_calls == 0
    records = [latest.serialize({**LATEST_ORDER, "qty": n}) for n in range(100)]
    assert fake.register_calls == 1
    # The writer decodes its own id without asking the registry.
    assert [latest.deserialize(r)["qty"] for r in records] == list(range(100))
    assert fake.fetch_calls == 0


def test_fetches_each_writer_schema_once(store: SchemaStore, fake: FakeRegistry) -> None:
    records = [serde(store, fake).serialize(LATEST_ORDER) for _ in range(3)]
    records += [serde(store, fake, "v1").serialize(V1_ORDER) for _ in range(3)]
    reader = serde(store, fake)
    for _ in range(50):
        for record in records:
            reader.deserialize(record)
    # Two ids: the newest (the reader's own, but this reader never
    # registered it) and v1.
    assert fake.fetch_calls == 2


def test_old_writer_decodes_into_the_newest_shape(store: SchemaStore, fake: FakeRegistry) -> None:
    data = serde(store, fake, "v1").serialize(V1_ORDER)
    expected = {k: v for k, v in V1_ORDER.items() if k != "coupon"}
    assert serde(store, fake).deserialize(data) == {**expected, "qty": 1, "note": None}


def test_new_writer_decodes_into_an_older_reader(store: SchemaStore, fake: FakeRegistry) -> None:
    data = serde(store, fake).serialize(LATEST_ORDER)
    expected = {k: v for k, v in LATEST_ORDER.items() if k not in ("qty", "note")}
    assert serde(store, fake, "v1").deserialize(data) == {**expected, "coupon": None}


def test_writer_schemas_with_references_resolve(store: SchemaStore, fake: FakeRegistry) -> None:
    # Another producer registered Order with a reference to Address instead
    # of inlining it: the registry returns the referenced text first.
    address = store.get("shop.Address").to_json()
    order = orjson.loads(store.get("shop.Order", "v1").to_json())
    order["fields"][2]["type"] = "shop.Address"
    fake.texts[41] = [address, orjson.dumps(order).decode()]
    body = plain_avro(store.get("shop.Order", "v1").parsed, V1_ORDER)
    decoded = serde(store, fake).deserialize(wire(41, body))
    assert decoded["ship_to"] == V1_ORDER["ship_to"]
    assert decoded["qty"] == 1


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", r"truncated: 0 bytes"),
        (b"\x00\x00\x01", r"truncated: 3 bytes"),
        (b"\xc3\x01\x00\x00\x00\x00\x00\x00\x00\x00", r"magic byte 0xc3, expected 0x00"),
        (wire(999, b"\x00"), r"unknown schema id 999 \(subject orders-value\)"),
    ],
)
def test_bad_framing_is_a_deserialization_error(
    store: SchemaStore, fake: FakeRegistry, data: bytes, problem: str
) -> None:
    with pytest.raises(DeserializationError, match=rf"^avro:shop\.Order: {problem}"):
        serde(store, fake).deserialize(data)


def test_truncated_body_and_trailing_bytes_are_errors(
    store: SchemaStore, fake: FakeRegistry
) -> None:
    latest = serde(store, fake)
    data = latest.serialize(LATEST_ORDER)
    with pytest.raises(DeserializationError, match=r"malformed Avro"):
        latest.deserialize(data[:-4])
    with pytest.raises(DeserializationError, match=r"1 of \d+ bytes left"):
        latest.deserialize(data + b"\x00")


def test_unusable_writer_schema_is_a_deserialization_error(
    store: SchemaStore, fake: FakeRegistry
) -> None:
    fake.texts[5] = ['{"type": "record", "name": "Broken", "fields": [{"name": "x"}]}']
    with pytest.raises(DeserializationError, match=r"schema id 5 is not a usable Avro schema"):
        serde(store, fake).deserialize(wire(5, b""))


def test_non_avro_schema_is_a_deserialization_error(store: SchemaStore) -> None:
    registry = FailingRegistry(ValueError("schema id 7 is PROTOBUF, not AVRO"))
    with pytest.raises(DeserializationError, match=r"PROTOBUF, not AVRO"):
        serde(store, registry).deserialize(wire(7, b""))


def test_registry_outage_is_not_blamed_on_the_record(store: SchemaStore) -> None:
    # A DeserializationError would send good records to the dead-letter topic.
    registry = FailingRegistry(ConnectionError("registry down"))
    with pytest.raises(ConnectionError):
        serde(store, registry).deserialize(wire(1, b""))
    with pytest.raises(ConnectionError):
        serde(store, registry).serialize(LATEST_ORDER)


def test_rejected_schema_is_a_serialization_error_naming_the_subject(store: SchemaStore) -> None:
    registry = FailingRegistry(ValueError("incompatible with version 3"))
    with pytest.raises(
        SerializationError, match=r"rejected the schema for subject orders-value: incompatible"
    ):
        serde(store, registry).serialize(LATEST_ORDER)


def test_values_that_do_not_fit_are_serialization_errors(
    store: SchemaStore, fake: FakeRegistry
) -> None:
    with pytest.raises(SerializationError, match=r"^avro:shop\.Order: cannot encode dict"):
        serde(store, fake).serialize({**LATEST_ORDER, "amount_cents": "lots"})


def test_unsupported_url_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"registry: must start with http://"):
        shared_registry("ftp://user:secret@registry")


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "confluent_kafka.schema_registry", None)
    with pytest.raises(ImportError, match=r"pip install 'streamkit\[registry\]'"):
        shared_registry("mock://no-extra")


@pytest.mark.parametrize(
    "url",
    [
        "https://SRKEY:sr-secret-do-not-show@psrc-123.confluent.cloud",
        "mock://SRKEY:sr-secret-do-not-show@dev",
        "http://registry-a:8081,https://SRKEY:sr-secret-do-not-show@registry-b",
    ],
)
def test_a_url_with_credentials_is_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        shared_registry(url)
    assert info.value.setting == "schema_registry_url"
    assert "put the credentials in schema_registry_user_info (a Secret in the chart)" in str(
        info.value
    )
    assert "sr-secret-do-not-show" not in str(info.value)


def test_user_info_without_a_colon_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as info:
        shared_registry("mock://bad-user-info", "sr-secret-do-not-show")
    assert info.value.setting == "schema_registry_user_info"
    assert "sr-secret-do-not-show" not in str(info.value)
