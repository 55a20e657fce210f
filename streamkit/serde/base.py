"""The serde contract every topic codec implements.

A serde is chosen once per topic at declaration time; the runtime then calls
the two bound methods directly for every record, so implementations keep all
lookups (schemas, registry ids, encoders) in ``__init__``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Serde(Protocol):
    """Turns values into bytes and back for one topic.

    ``name`` is the spec the user wrote (``"json"``, ``"avro:shop.Order"``),
    used in error messages and ``streamkit topics describe``.
    """

    name: str

    def serialize(self, value: Any) -> bytes:
        """Encode ``value``; raise ``SerializationError`` when it does not fit."""
        ...

    def deserialize(self, data: bytes) -> Any:
        """Decode ``data``; raise ``DeserializationError`` for malformed input."""
        ...
