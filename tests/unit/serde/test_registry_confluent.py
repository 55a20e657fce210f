"""The Confluent client adapter and mock:// registries (needs the registry extra)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from streamkit.errors import DeserializationError
from streamkit.serde import ConfluentSchemaRegistry, RegistryAvroSerde, SchemaStore, resolve_serde
from streamkit.serde.registry import shared_registry

sr = pytest.importorskip(
    "confluent_kafka.schema_registry",
    reason="needs the registry extra: pip install 'streamkit[registry]'",
)

SUBJECT = "orders-value"
V1_ORDER = {
    "id": "o-1",
    "amount_cents": 1299,
    "ship_to": {"street": "Main St 1", "city": "Ghent"},
    "coupon": None,
}
LATEST_ORDER = {
    "id": "o-2",
    "amount_cents": 4500,
    "ship_to": {"street": "Quay 9", "city": "Porto"},
    "qty": 3,
    "note": None,
}


class CallCounter:
    """Wraps one client method and counts calls, passing everything through."""

    def __init__(self, method: Any) -> None:
        self.method = method
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.method(*args, **kwargs)


def avro(spec: str, store: SchemaStore, url: str) -> RegistryAvroSerde:
    serde = resolve_serde(spec, schemas=store, registry=url, subject=SUBJECT)
    assert isinstance(serde, RegistryAvroSerde)
    return serde


def test_one_client_per_url(registry_url: str) -> None:
    assert shared_registry(registry_url) is shared_registry(registry_url)
    assert shared_registry(registry_url) is not shared_registry(registry_url + "-other")


def test_serdes_on_one_mock_url_share_schemas(store: SchemaStore, registry_url: str) -> None:
    data = avro("avro:shop.Order@v1", store, registry_url).serialize(V1_ORDER)
    decoded = avro("avro:shop.Order", store, registry_url).deserialize(data)
    expected = {k: v for k, v in V1_ORDER.items() if k != "coupon"}
    assert decoded == {**expected, "qty": 1, "note": None}
    with pytest.raises(DeserializationError, match=r"unknown schema id"):
        avro("avro:shop.Order", store, registry_url + "-other").deserialize(data)


def test_registry_is_called_once_for_many_records(
    store: SchemaStore, registry_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = shared_registry(registry_url)._client
    register = CallCounter(client.register_schema)
    get_schema = CallCounter(client.get_schema)
    monkeypatch.setattr(client, "register_schema", register)
    monkeypatch.setattr(client, "get_schema", get_schema)
    writer = avro("avro:shop.Order@v1", store, registry_url)
    reader = avro("avro:shop.Order", store, registry_url)
    for n in range(200):
        assert (
            reader.deserialize(writer.serialize({**V1_ORDER, "amount_cents": n}))["amount_cents"]
            == n
        )
    assert register.calls == 1
    assert get_schema.calls == 1


def test_the_registered_text_is_the_self_contained_schema(
    store: SchemaStore, registry_url: str
) -> None:
    data = avro("avro:shop.Order", store, registry_url).serialize(LATEST_ORDER)
    schema_id = int.from_bytes(data[1:5], "big")
    registered = shared_registry(registry_url)._client.get_schema(schema_id)
    assert registered.schema_str == store.get("shop.Order").to_json()
    assert registered.schema_type == "AVRO"
    assert registered.references == []


def test_fetch_follows_references_depth_first(store: SchemaStore, registry_url: str) -> None:
    registry = shared_registry(registry_url)
    address = store.get("shop.Address").to_json()
    order = (
        store.get("shop.Order")
        .to_json()
        .replace(store.get("shop.Address").to_json(), '"shop.Address"')
    )
    registry.register("shop.Address", address)
    reference = sr.SchemaReference("shop.Address", "shop.Address", 1)
    order_id = registry._client.register_schema(
        SUBJECT, sr.Schema(order, "AVRO", references=[reference])
    )
    assert list(registry.fetch(order_id)) == [address, order]


def test_unknown_id_is_a_lookup_error(registry_url: str) -> None:
    with pytest.raises(LookupError, match=r"schema id 12345"):
        shared_registry(registry_url).fetch(12345)


class RefusingClient:
    def __init__(self, status: int) -> None:
        self.status = status

    def register_schema(self, subject: str, schema: Any) -> int:
        raise sr.SchemaRegistryError(self.status, self.status * 100, "refused")

    def get_schema(self, schema_id: int) -> Any:
        raise sr.SchemaRegistryError(self.status, self.status * 100, "refused")


@pytest.mark.parametrize("status", [409, 422])
def test_rejected_schemas_become_value_errors(status: int) -> None:
    registry = ConfluentSchemaRegistry(cast(Any, RefusingClient(status)))
    with pytest.raises(ValueError, match="refused"):
        registry.register(SUBJECT, '"string"')


@pytest.mark.parametrize("status", [401, 500])
def test_other_registry_errors_propagate(status: int) -> None:
    registry = ConfluentSchemaRegistry(cast(Any, RefusingClient(status)))
    with pytest.raises(sr.SchemaRegistryError):
        registry.register(SUBJECT, '"string"')
    with pytest.raises(sr.SchemaRegistryError):
        registry.fetch(1)


def test_non_avro_schemas_are_value_errors(registry_url: str) -> None:
    registry = shared_registry(registry_url)
    schema_id = registry._client.register_schema(SUBJECT, sr.Schema('{"type":"object"}', "JSON"))
    with pytest.raises(ValueError, match=rf"schema id {schema_id} is JSON, not AVRO"):
        registry.fetch(schema_id)


def test_a_missing_reference_is_a_lookup_error(store: SchemaStore, registry_url: str) -> None:
    registry = shared_registry(registry_url)
    reference = sr.SchemaReference("shop.Address", "no-such-subject", 1)
    schema_id = registry._client.register_schema(
        SUBJECT, sr.Schema('"string"', "AVRO", references=[reference])
    )
    with pytest.raises(LookupError, match=rf"schema id {schema_id} \(or a schema it references\)"):
        registry.fetch(schema_id)


# --- credentials (issue 20, review 1.5) --------------------------------------

USER_INFO = "SRKEY:sr-secret"


def test_user_info_is_passed_as_basic_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    confs: list[dict[str, Any]] = []
    real = sr.SchemaRegistryClient.new_client

    def new_client(conf: dict[str, Any]) -> Any:
        confs.append(dict(conf))
        return real(conf)

    monkeypatch.setattr(sr.SchemaRegistryClient, "new_client", staticmethod(new_client))
    shared_registry("mock://with-credentials-conf", USER_INFO)
    shared_registry("mock://without-credentials-conf")
    assert confs == [
        {"url": "mock://with-credentials-conf", "basic.auth.user.info": USER_INFO},
        {"url": "mock://without-credentials-conf"},
    ]


def test_the_client_authenticates_with_the_user_info(store: SchemaStore, registry_url: str) -> None:
    registry = shared_registry(registry_url, USER_INFO)
    # confluent's client splits it into the (user, password) of every request.
    client: Any = registry._client
    assert client._rest_client.auth == ("SRKEY", "sr-secret")
    serde = resolve_serde(
        "avro:shop.Order",
        schemas=store,
        registry=registry_url,
        subject=SUBJECT,
        registry_user_info=USER_INFO,
    )
    assert isinstance(serde, RegistryAvroSerde) and serde._registry is registry
    assert serde.deserialize(serde.serialize(LATEST_ORDER)) == LATEST_ORDER


def test_one_client_per_url_and_credentials(registry_url: str) -> None:
    with_user_info = shared_registry(registry_url, USER_INFO)
    assert shared_registry(registry_url, USER_INFO) is with_user_info
    assert shared_registry(registry_url) is not with_user_info
    assert shared_registry(registry_url, "other:secret") is not with_user_info
