"""Codecs: each topic's serdes resolved from the app config (needs the registry extra)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamkit.config import AppConfig
from streamkit.runtime.codecs import Codecs
from streamkit.serde import RegistryAvroSerde
from streamkit.serde.registry import shared_registry
from streamkit.topics import Topic

pytest.importorskip(
    "confluent_kafka.schema_registry",
    reason="needs the registry extra: pip install 'streamkit[registry]'",
)

SCHEMAS = Path(__file__).parents[1] / "serde" / "schemas"


def test_the_registry_credentials_reach_the_client() -> None:
    url = "mock://codecs-credentials"
    config = AppConfig.load(
        "orders",
        {"brokers": "127.0.0.1:9092", "schemas_dir": str(SCHEMAS), "schema_registry_url": url},
        env={"STREAMKIT_SCHEMA_REGISTRY_USER_INFO": "SRKEY:sr-secret"},
    )
    codec = Codecs(config)(Topic("orders", value_serde="avro:shop.Order"))
    assert isinstance(codec.value, RegistryAvroSerde)
    assert codec.value._registry is shared_registry(url, "SRKEY:sr-secret")
