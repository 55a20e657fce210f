"""Turning the serde spec a user wrote into a bound serde, once per topic."""

from __future__ import annotations

from collections.abc import Callable

from streamkit.errors import DeclarationError
from streamkit.serde.avro import AvroSerde
from streamkit.serde.base import Serde
from streamkit.serde.registry import RegistryAvroSerde, SchemaRegistry, shared_registry
from streamkit.serde.schemas import SchemaStore
from streamkit.serde.simple import BytesSerde, JsonSerde, StrSerde

_SCHEMALESS: dict[str, Callable[[], Serde]] = {
    "bytes": BytesSerde,
    "str": StrSerde,
    "json": JsonSerde,
}
_AVRO_PREFIX = "avro:"
VALID_SPECS = (
    "'bytes', 'str', 'json', 'avro:<full record name>' (for example 'avro:shop.Order', "
    "or 'avro:shop.Order@v1' to pin a version), or an object with name, serialize and "
    "deserialize"
)


def resolve_serde(
    spec: str | Serde,
    *,
    schemas: SchemaStore | None = None,
    registry: str | SchemaRegistry | None = None,
    subject: str | None = None,
    registry_user_info: str | None = None,
) -> Serde:
    """Return the serde for ``spec``, with every lookup done now rather than per record.

    Call it once per topic and role (key or value) when the topic is declared.
    Serdes never see ``None``: a tombstone is handled by the runtime before
    any serde is called, in both directions.

    Specs:
        ``"bytes"``: bytes passed through. ``"str"``: UTF-8 text.
        ``"json"``: JSON through orjson. ``"avro:shop.Order"``: the newest
        version of ``shop.Order`` in the schema store; ``"avro:shop.Order@v1"``
        pins the version read from ``order.v1.avsc``. Any object with
        ``name``, ``serialize`` and ``deserialize`` is returned as is.

    Example::

        store = SchemaStore("schemas")
        value = resolve_serde("avro:shop.Order", schemas=store, registry="mock://dev",
                              subject=topic_subject("orders", "value"))
        key = resolve_serde("str")

    Args:
        spec: What the user wrote for the topic's key or value.
        schemas: Where Avro specs find their schema; by default a new
            ``SchemaStore`` over ``./schemas``. Pass one store for every topic
            to read the files once. Ignored by non-Avro specs.
        registry: A Schema Registry URL (``http(s)://...`` or ``mock://name``)
            or a ``SchemaRegistry``. With one, Avro uses the Confluent wire
            format; without, the single-object encoding. Ignored by non-Avro specs.
        subject: The registry subject, required with ``registry``; usually
            ``topic_subject(topic, "key" or "value")``.
        registry_user_info: Basic-auth credentials (``user:password``) for a
            registry given as a URL; ignored with a ``SchemaRegistry``.

    Raises:
        DeclarationError: The spec is unknown, its schema or version is not
            in the store, or a registry is given without a subject.
        ConfigError: The registry URL has an unsupported scheme or carries
            credentials, or ``registry_user_info`` is not ``user:password``.
        ImportError: A registry URL is given without the ``registry`` extra.

    """
    if not isinstance(spec, str):
        # The protocol check only looks for the three attributes; it runs
        # once, at declaration time.
        if isinstance(spec, Serde):
            return spec
        raise DeclarationError(
            f"unknown serde {spec!r} of type {type(spec).__name__}; valid: {VALID_SPECS}"
        )
    schemaless = _SCHEMALESS.get(spec)
    if schemaless is not None:
        return schemaless()
    if spec.startswith(_AVRO_PREFIX):
        return _resolve_avro(spec, schemas, registry, subject, registry_user_info)
    raise DeclarationError(f"unknown serde {spec!r}; valid: {VALID_SPECS}")


def _resolve_avro(
    spec: str,
    schemas: SchemaStore | None,
    registry: str | SchemaRegistry | None,
    subject: str | None,
    user_info: str | None,
) -> Serde:
    name, _, version = spec.removeprefix(_AVRO_PREFIX).partition("@")
    if not name:
        raise DeclarationError(f"serde {spec!r} names no Avro schema; valid: {VALID_SPECS}")
    store = schemas if schemas is not None else SchemaStore()
    try:
        schema = store.get(name, version or None)
    except DeclarationError as exc:
        raise DeclarationError(f"serde {spec!r}: {exc}") from exc
    if registry is None:
        # Every version in the store may have written the records this
        # topic holds, so every fingerprint gets a decoder.
        return AvroSerde(schema, writers=store, name=spec)
    if subject is None:
        raise DeclarationError(
            f"serde {spec!r}: a Schema Registry needs a subject; pass "
            "subject=topic_subject(topic, 'value') (or 'key')"
        )
    client = shared_registry(registry, user_info) if isinstance(registry, str) else registry
    return RegistryAvroSerde(schema, client, subject, name=spec)
