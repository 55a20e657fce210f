"""The schemaless serdes: raw bytes, UTF-8 text and JSON.

Each class binds the codec function it needs in ``__init__`` so the
per-record methods are one call inside a ``try``. In CPython 3.11 a ``try``
block costs nothing until it raises, so wrapping codec errors into streamkit's
own exceptions adds no per-record cost.

Serdes never receive ``None``: a tombstone (a record whose value is null) is
handled by the runtime before any serde is called.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from typing import Any

import orjson

from streamkit.errors import DeserializationError, SerializationError


class BytesSerde:
    """Passes bytes through untouched, for payloads the agent decodes itself.

    ``bytearray`` and ``memoryview`` are copied into ``bytes`` on the way out
    because the producer keeps a reference until delivery, and a mutable
    buffer could change under it.
    """

    __slots__ = ("name",)

    def __init__(self, name: str = "bytes") -> None:
        self.name = name

    def serialize(self, value: Any) -> bytes:
        """Return ``value`` if it is bytes, a copy if it is another buffer."""
        # An exact type check first: bytes is by far the common case, and
        # `type(x) is bytes` is cheaper than isinstance with a tuple.
        if type(value) is bytes:
            return value
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        raise SerializationError(
            f"{self.name}: expected bytes, bytearray or memoryview, got {type(value).__name__}"
        )

    def deserialize(self, data: bytes) -> Any:
        """Return ``data`` as is; any bytes are valid."""
        return data


class StrSerde:
    """UTF-8 text.

    Strict in both directions: a lone surrogate in a ``str`` or an invalid
    UTF-8 sequence in the bytes raises instead of being replaced, because a
    silently altered key would route the record to another partition.
    """

    __slots__ = ("_decode", "_encode", "name")

    def __init__(self, name: str = "str") -> None:
        self.name = name
        # The unbound methods also type-check their argument: str.encode(42)
        # raises TypeError, where value.encode() would accept any object that
        # happens to have an encode method.
        self._encode: Callable[[str], bytes] = str.encode
        self._decode: Callable[[bytes], str] = bytes.decode

    def serialize(self, value: Any) -> bytes:
        """Encode ``value`` (a ``str``) as UTF-8.

        Raises:
            SerializationError: ``value`` is not a ``str`` (the message gives
                its type and a shortened repr), or holds a lone surrogate.
        """
        try:
            return self._encode(value)
        except TypeError:
            # Not chained: the codec's "descriptor 'encode' for 'str' objects
            # doesn't apply to a 'int' object" adds nothing to this message.
            raise SerializationError(
                f"{self.name}: accepts only str, got {type(value).__name__} {_short_repr(value)}"
            ) from None
        except UnicodeEncodeError as exc:
            raise SerializationError(f"{self.name}: cannot encode as UTF-8: {exc}") from exc

    def deserialize(self, data: bytes) -> Any:
        """Decode UTF-8 ``data`` into a ``str``."""
        try:
            return self._decode(data)
        except UnicodeDecodeError as exc:
            raise DeserializationError(f"{self.name}: not valid UTF-8: {exc}") from exc


# Wrong-type values are shown shortened: enough to recognise an id (most str
# serdes encode keys), while a payload passed by mistake is cut to a few items
# and 40 characters instead of being copied whole into logs and error headers.
# (Repr's keyword arguments are 3.12+, hence the attributes.)
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = 4
_REPR.maxdict = 2


def _short_repr(value: Any) -> str:
    return _REPR.repr(value)


class JsonSerde:
    """JSON through orjson: dicts, lists and scalars in, Python objects out.

    orjson also encodes ``datetime``, ``UUID``, dataclasses and enums; what it
    cannot encode (a ``set``, a dict with non-string keys, an integer over 64
    bits) raises ``SerializationError``. Decoding returns plain ``dict``,
    ``list``, ``str``, ``int``, ``float``, ``bool`` and ``None``.
    """

    __slots__ = ("_dumps", "_loads", "name")

    def __init__(self, name: str = "json") -> None:
        self.name = name
        self._dumps: Callable[[Any], bytes] = orjson.dumps
        self._loads: Callable[[bytes], Any] = orjson.loads

    def serialize(self, value: Any) -> bytes:
        """Encode ``value`` as compact UTF-8 JSON."""
        try:
            return self._dumps(value)
        except orjson.JSONEncodeError as exc:
            raise SerializationError(f"{self.name}: cannot encode as JSON: {exc}") from exc

    def deserialize(self, data: bytes) -> Any:
        """Decode JSON ``data``; invalid UTF-8 counts as malformed JSON."""
        try:
            return self._loads(data)
        except orjson.JSONDecodeError as exc:
            # The message gives the position, not the payload: records may
            # carry personal data, and the dead-letter topic keeps the bytes.
            raise DeserializationError(f"{self.name}: malformed JSON: {exc}") from exc
