"""Topic codecs, chosen once per topic at declaration time.

``resolve_serde(spec)`` turns what the user wrote (``"bytes"``, ``"str"``,
``"json"``, ``"avro:shop.Order"``) into an object whose ``serialize`` and
``deserialize`` the runtime calls directly for every record. Keys and values
use the same serdes. Serdes never see ``None``: tombstones are handled by the
runtime.

Avro has two framings: the spec's single-object encoding when no Schema
Registry is configured (``avro.py``), and the Confluent wire format when one
is (``registry.py``). Both resolve the writer's schema into the reader's, so
schemas can evolve without stopping consumers.
"""

from streamkit.serde.avro import AvroSerde
from streamkit.serde.base import Serde
from streamkit.serde.registry import (
    ConfluentSchemaRegistry,
    RegistryAvroSerde,
    SchemaRegistry,
    topic_subject,
)
from streamkit.serde.resolve import resolve_serde
from streamkit.serde.schemas import AvroSchema, SchemaStore
from streamkit.serde.simple import BytesSerde, JsonSerde, StrSerde

__all__ = [
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
