"""Avro in the Confluent wire format, with schemas kept in a Schema Registry.

Wire layout of one record::

    00 | 4-byte big-endian schema id | Avro binary body

The registry is contacted only off the per-record path: once to register the
serde's schema (on the first ``serialize``, so declaring an app does no I/O)
and once per writer schema id seen by ``deserialize``. Both results are
cached in the serde for the life of the process; ids are immutable in a
registry, so the cache never goes stale.

Registry failures that are not about the record (the registry is down,
credentials are refused) propagate unwrapped: turning them into
``DeserializationError`` would send good records to the dead-letter topic.

Requires the ``registry`` extra (``pip install 'streamkit[registry]'``) for
the Confluent client; a custom ``SchemaRegistry`` needs nothing extra.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from io import BytesIO
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

import orjson
from fastavro import parse_schema, schemaless_writer
from fastavro.schema import to_parsing_canonical_form

from streamkit.errors import ConfigError, DeserializationError, SerializationError
from streamkit.serde.avro import RecordReader, encode_error, read_record, record_reader
from streamkit.serde.schemas import AvroSchema

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaReference, SchemaRegistryClient

_WIRE_HEADER = struct.Struct(">BI")
_WIRE_MAGIC = 0


def topic_subject(topic: str, role: Literal["key", "value"]) -> str:
    """Return the subject for a topic's keys or values (Confluent's TopicNameStrategy)."""
    return f"{topic}-{role}"


class SchemaRegistry(Protocol):
    """The two registry calls a serde makes; the seam tests plug a fake into."""

    def register(self, subject: str, schema: str) -> int:
        """Register Avro ``schema`` (JSON text) under ``subject``; return its id.

        Idempotent: registering a schema already under the subject returns
        its existing id. Called once per serde, on its first record.

        Raises:
            ValueError: The registry rejected the schema (incompatible with
                the subject's compatibility rule, or invalid).

        """
        ...

    def fetch(self, schema_id: int) -> Sequence[str]:
        """Return the Avro schema with id ``schema_id`` as JSON texts.

        Schemas it references come first, each before its users, and the
        schema itself last. Called once per id per serde.

        Raises:
            LookupError: No schema has this id.
            ValueError: The id names a schema that is not Avro.

        """
        ...


class ConfluentSchemaRegistry:
    """``SchemaRegistry`` over confluent-kafka's client, real or ``mock://``.

    Example::

        from confluent_kafka.schema_registry import SchemaRegistryClient

        client = SchemaRegistryClient({"url": url, "basic.auth.user.info": "key:secret"})
        serde = resolve_serde("avro:shop.Order", registry=ConfluentSchemaRegistry(client),
                              subject=topic_subject("orders", "value"))
    """

    def __init__(self, client: SchemaRegistryClient) -> None:
        self._client = client

    def register(self, subject: str, schema: str) -> int:
        """Register through the client; map 409 and 422 answers to ``ValueError``."""
        sr = _confluent()
        try:
            return self._client.register_schema(subject, sr.Schema(schema, "AVRO"))
        except sr.SchemaRegistryError as exc:
            # 409: incompatible with the subject's history; 422: invalid.
            if exc.http_status_code in (409, 422):
                raise ValueError(str(exc)) from exc
            raise

    def fetch(self, schema_id: int) -> Sequence[str]:
        """Fetch the schema and, depth first, the schemas it references."""
        sr = _confluent()
        texts: list[str] = []
        try:
            schema = self._client.get_schema(schema_id)
            if schema.schema_type not in (None, "AVRO"):
                raise ValueError(f"schema id {schema_id} is {schema.schema_type}, not AVRO")
            self._add_references(schema.references or [], texts, set())
        except sr.SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise LookupError(
                    f"schema id {schema_id} (or a schema it references) is not in the registry"
                ) from exc
            raise
        texts.append(schema.schema_str)
        return texts

    def _add_references(
        self, references: list[SchemaReference], texts: list[str], seen: set[tuple[str, int]]
    ) -> None:
        for reference in references:
            key = (reference.subject, int(reference.version))
            if key in seen:
                continue
            seen.add(key)
            registered = self._client.get_version(*key)
            self._add_references(registered.schema.references or [], texts, seen)
            texts.append(registered.schema.schema_str)


_shared: dict[tuple[str, str | None], ConfluentSchemaRegistry] = {}
_shared_lock = threading.Lock()


def shared_registry(url: str, user_info: str | None = None) -> ConfluentSchemaRegistry:
    """Return the process-wide registry client for ``url``, creating it once.

    Sharing is what makes two serdes on one ``mock://name`` URL see the same
    schemas (confluent's mock keeps its store per client object); for a real
    registry it shares one connection pool and one cache. Clients are keyed
    by URL and credentials, so two apps in one process may use different ones.

    Args:
        url: ``http(s)://host[:port]``, several joined by commas, or
            ``mock://name``; never with a ``user:password@`` part.
        user_info: Basic-auth credentials, ``user:password``
            (``schema_registry_user_info``); ``None`` for none.

    Raises:
        ConfigError: ``url`` is not ``http://``, ``https://`` or ``mock://``,
            or carries credentials.
        ImportError: The ``registry`` extra is not installed.

    """
    # No URL or credentials in any message here: they may carry a password.
    if not url.startswith(("http://", "https://", "mock://")):
        raise ConfigError("registry", "must start with http://, https:// or mock://")
    if any("@" in urlsplit(part.strip()).netloc for part in url.split(",")):
        raise ConfigError(
            "schema_registry_url",
            "carries credentials (user:password@): put the credentials in "
            "schema_registry_user_info (a Secret in the chart) and leave them out of the URL",
        )
    if user_info is not None and ":" not in user_info:
        raise ConfigError("schema_registry_user_info", "expected user:password; it has no ':'")
    conf = {"url": url}
    if user_info is not None:
        conf["basic.auth.user.info"] = user_info
    with _shared_lock:
        registry = _shared.get((url, user_info))
        if registry is None:
            # new_client returns confluent's in-process mock for mock:// URLs.
            client = _confluent().SchemaRegistryClient.new_client(conf)
            registry = _shared[url, user_info] = ConfluentSchemaRegistry(client)
        return registry


def _confluent() -> Any:
    """Import confluent's registry client, naming the extra when it is missing."""
    try:
        import confluent_kafka.schema_registry as sr
    except ImportError as exc:
        raise ImportError(
            "a Schema Registry needs the registry extra: pip install 'streamkit[registry]'"
        ) from exc
    return sr


class RegistryAvroSerde:
    """Avro in the Confluent wire format, interoperable with Confluent's serializers.

    ``serialize`` registers the serde's schema under ``subject`` on first use
    and writes its id before every record. ``deserialize`` reads the id,
    fetches that writer schema once, and resolves it into the serde's schema,
    so records written with older or newer compatible schemas decode into the
    shape this app expects.

    Caches are plain dicts filled on first sight of an id: a race between
    threads fetches twice and stores the same value, which is harmless.
    """

    __slots__ = (
        "_header",
        "_parsed",
        "_read_plain",
        "_readers",
        "_registry",
        "_unpack",
        "name",
        "schema",
        "subject",
    )

    def __init__(
        self,
        schema: AvroSchema,
        registry: SchemaRegistry,
        subject: str,
        *,
        name: str | None = None,
    ) -> None:
        """Bind the schema and the registry; no registry call happens here.

        Args:
            schema: The reader schema, also the one registered and written.
            registry: Where schemas are registered and fetched.
            subject: Subject to register under, usually ``topic_subject(topic, role)``.
            name: The spec the user wrote, for messages; defaults to ``avro:<name>``.

        """
        self.name = name if name is not None else f"avro:{schema.name}"
        self.schema = schema
        self.subject = subject
        self._registry = registry
        self._parsed = schema.parsed
        self._header: bytes | None = None
        self._read_plain = record_reader(schema.parsed, None)
        self._readers: dict[int, RecordReader] = {}
        self._unpack = _WIRE_HEADER.unpack_from

    def serialize(self, value: Any) -> bytes:
        """Encode ``value`` behind the magic byte and the registered schema id."""
        header = self._header
        if header is None:
            header = self._register()
        stream = BytesIO()
        stream.write(header)
        try:
            schemaless_writer(stream, self._parsed, value, strict_allow_default=True)
        except Exception as exc:
            # See AvroSerde.serialize: fastavro's error types vary by field type.
            raise encode_error(self.name, value, exc) from exc
        return stream.getvalue()

    def deserialize(self, data: bytes) -> Any:
        """Decode a Confluent wire format record, fetching an unseen writer schema once."""
        try:
            magic, schema_id = self._unpack(data)
        except struct.error as exc:
            raise DeserializationError(
                f"{self.name}: truncated: {len(data)} bytes, the Confluent wire format "
                "header alone is 5"
            ) from exc
        if magic != _WIRE_MAGIC:
            raise DeserializationError(
                f"{self.name}: magic byte {magic:#04x}, expected 0x00 (Confluent wire format)"
            )
        read = self._readers.get(schema_id)
        if read is None:
            read = self._fetch(schema_id)
        return read_record(self.name, data, read, _WIRE_HEADER.size)

    def _register(self) -> bytes:
        try:
            schema_id = self._registry.register(self.subject, self.schema.to_json())
        except ValueError as exc:
            # The schema, not the value, is wrong; but it surfaces while
            # encoding, and the caller handles it as a failed emit.
            raise SerializationError(
                f"{self.name}: the registry rejected the schema for subject {self.subject}: {exc}"
            ) from exc
        header = _WIRE_HEADER.pack(_WIRE_MAGIC, schema_id)
        # Our own id needs no fetch: the bytes are written with our schema.
        self._readers[schema_id] = self._read_plain
        self._header = header
        return header

    def _fetch(self, schema_id: int) -> RecordReader:
        try:
            texts = self._registry.fetch(schema_id)
        except LookupError as exc:
            raise DeserializationError(
                f"{self.name}: unknown schema id {schema_id} (subject {self.subject})"
            ) from exc
        except ValueError as exc:
            raise DeserializationError(f"{self.name}: {exc}") from exc
        try:
            named: dict[str, Any] = {}
            writer: Any = None
            for text in texts:
                writer = parse_schema(orjson.loads(text), named)
            if writer is None:
                raise ValueError("the registry returned no schema text")
            canonical = to_parsing_canonical_form(writer)
        except Exception as exc:
            # Whatever the registry returned cannot be read as Avro; records
            # with this id cannot be decoded, which makes each a bad record.
            raise DeserializationError(
                f"{self.name}: schema id {schema_id} is not a usable Avro schema: {exc!r}"
            ) from exc
        same = canonical == self.schema.canonical_form
        read = self._read_plain if same else record_reader(writer, self._parsed)
        self._readers[schema_id] = read
        return read
