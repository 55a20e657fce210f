"""Avro records in the Avro spec's single-object encoding, with schema evolution.

Wire layout of one record::

    C3 01 | 8-byte CRC-64-AVRO fingerprint of the writer schema (little-endian) | Avro binary body

The fingerprint makes each record self-identifying without a Schema Registry:
the reader finds the writer schema among every version in its
``SchemaStore`` and resolves it to its own (newest) schema, so a record
written with ``order.v1.avsc`` decodes into the shape of ``order.avsc``, with
defaults for the fields v1 did not have.

Bytes that do not start with ``C3 01`` are read as plain Avro binary written
with the reader schema, so producers that write bare Avro interoperate. The
price of that leniency: a bare record whose first field is an ``int`` or
``long`` equal to -98 also starts with ``C3 01`` (its zig-zag varint) and is
rejected as an unknown fingerprint.

Serdes never receive ``None``: tombstones are handled by the runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from io import BytesIO
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from streamkit.errors import DeserializationError, SerializationError
from streamkit.serde.avro_guard import guard, needs_guard
from streamkit.serde.schemas import AvroSchema

MARKER = b"\xc3\x01"
"""The two bytes that open every single-object encoded record."""

_PREFIX_LEN = len(MARKER) + 8
_MAX_PROBLEM = 300

RecordReader = Callable[[BytesIO], Any]
"""Decodes one record from a stream positioned at the start of the Avro body."""


def record_reader(writer: Any, reader: Any | None) -> RecordReader:
    """Bind fastavro's decoder to one writer schema and one reader schema.

    Called once per writer schema, never per record. A writer schema that is
    recursive, or has collections of items that take no bytes, gets a check
    of the bytes before fastavro sees them (``avro_guard``). Pass ``reader=None``
    when the writer schema is the reader schema (same canonical form): fastavro
    then skips schema resolution, which halves the decoding time of a small
    record (about 6 µs instead of 12 µs).

    Args:
        writer: Parsed schema the bytes were written with.
        reader: Parsed schema to resolve into, or None to decode as written.

    """
    if not needs_guard(writer):

        def read(stream: BytesIO) -> Any:
            return schemaless_reader(stream, writer, reader)

        return read
    check = guard(writer)

    def read_guarded(stream: BytesIO) -> Any:
        # Recursive or zero-width-item schemas: bytes that would crash or
        # stall fastavro are refused first (avro_guard.py says which and why).
        with stream.getbuffer() as view:
            check(view, stream.tell())
        return schemaless_reader(stream, writer, reader)

    return read_guarded


def encode_error(name: str, value: Any, exc: Exception) -> SerializationError:
    """Build the error for a value that does not fit the schema."""
    return SerializationError(f"{name}: cannot encode {type(value).__name__} as Avro: {exc}")


def decode_error(name: str, data: bytes, exc: Exception) -> DeserializationError:
    """Build the error for bytes fastavro could not decode."""
    # repr, because fastavro's EOFError on truncated input has an empty
    # message; cut, because its SchemaResolutionError prints both schemas
    # whole (kilobytes), and this message travels with every dead letter.
    problem = repr(exc)
    if len(problem) > _MAX_PROBLEM:
        problem = problem[:_MAX_PROBLEM] + "..."
    return DeserializationError(f"{name}: malformed Avro ({len(data)} bytes): {problem}")


def read_record(name: str, data: bytes, read: RecordReader, start: int) -> Any:
    """Decode the one record that fills ``data`` from ``start`` on.

    Shared by both framings: any decoding failure is a bad record (corrupt
    input surfaces as EOFError, ValueError, IndexError, UnicodeDecodeError or
    fastavro's SchemaResolutionError, and the set is not documented), and
    bytes left over mean the data was not written with this schema.
    """
    # BytesIO over bytes shares the buffer until written to: no copy.
    stream = BytesIO(data)
    stream.seek(start)
    try:
        value = read(stream)
    except Exception as exc:
        raise decode_error(name, data, exc) from exc
    left = len(data) - stream.tell()
    if left:
        raise DeserializationError(
            f"{name}: {left} of {len(data)} bytes left after the Avro record; "
            "the data was not written with this schema"
        )
    return value


class AvroSerde:
    """Avro with single-object encoding: self-identifying records, no registry.

    ``serialize`` writes with the reader schema (the newest version, unless
    the spec pinned one). ``deserialize`` accepts any schema of the store it
    was built from, by fingerprint, and plain Avro binary without the marker.
    Values are dicts shaped like the record; encoding is strict about extra
    keys, which are typos more often than intent, while missing fields take
    their schema defaults.

    Example::

        store = SchemaStore("schemas")
        serde = AvroSerde(store.get("shop.Order"), writers=store)
        data = serde.serialize({"id": "o-1", "qty": 2})
    """

    __slots__ = ("_header", "_parsed", "_read_plain", "_readers", "name", "schema")

    def __init__(
        self, schema: AvroSchema, *, writers: Iterable[AvroSchema] = (), name: str | None = None
    ) -> None:
        """Bind the schema and a decoder for every known writer schema.

        Args:
            schema: The reader schema; records are also written with it.
            writers: Schemas records may have been written with, usually the
                whole ``SchemaStore``; ``schema`` itself is always included.
            name: The spec the user wrote, for messages; defaults to ``avro:<name>``.

        """
        self.name = name if name is not None else f"avro:{schema.name}"
        self.schema = schema
        self._parsed = schema.parsed
        self._header = MARKER + schema.fingerprint
        self._read_plain = record_reader(schema.parsed, None)
        self._readers: dict[bytes, RecordReader] = {
            writer.fingerprint: record_reader(writer.parsed, schema.parsed) for writer in writers
        }
        # Versions that differ only in docs or defaults share a fingerprint
        # with the reader; their binary layout is the reader's, so no resolution.
        self._readers[schema.fingerprint] = self._read_plain

    def serialize(self, value: Any) -> bytes:
        """Encode ``value`` behind the marker and the reader schema's fingerprint."""
        stream = BytesIO()
        stream.write(self._header)
        try:
            schemaless_writer(stream, self._parsed, value, strict_allow_default=True)
        except Exception as exc:
            # fastavro signals a value that does not fit with ValueError,
            # TypeError, AttributeError or KeyError depending on the type;
            # all of them mean the same thing here.
            raise encode_error(self.name, value, exc) from exc
        return stream.getvalue()

    def deserialize(self, data: bytes) -> Any:
        """Decode a single-object encoded record, or plain Avro binary."""
        if data.startswith(MARKER):
            read = self._readers.get(data[2:_PREFIX_LEN])
            if read is None:
                raise self._unknown_writer(data)
            return read_record(self.name, data, read, _PREFIX_LEN)
        return read_record(self.name, data, self._read_plain, 0)

    def _unknown_writer(self, data: bytes) -> DeserializationError:
        if len(data) < _PREFIX_LEN:
            return DeserializationError(
                f"{self.name}: truncated single-object header ({len(data)} bytes, need "
                f"{_PREFIX_LEN})"
            )
        return DeserializationError(
            f"{self.name}: writer schema fingerprint {data[2:_PREFIX_LEN].hex()} (CRC-64-AVRO "
            f"as on the wire) matches none of the {len(self._readers)} schemas known; add the "
            "writer's schema to the schema store"
        )
