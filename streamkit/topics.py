"""Topic declarations: a name, its shape on the broker, and its serdes.

A :class:`Topic` is what ``app.topic(...)`` returns and what agents are bound
to. Serdes are given as specs (``"json"``, ``"avro:shop.Order"``) and turned
into codec objects once, when the app is prepared to run, because Avro specs
need the schema directory and registry from the validated config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from streamkit.errors import DeclarationError
from streamkit.serde.base import Serde

SerdeSpec = str | Serde

# Kafka's own rule: 1-249 characters of [a-zA-Z0-9._-].
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


@dataclass(frozen=True, slots=True)
class Topic:
    """A declared topic.

    Attributes:
        name: The Kafka topic name.
        value_serde: Spec or codec for record values.
        key_serde: Spec or codec for record keys (``str`` by default: most keys are ids).
        partitions: Partition count used when streamkit creates the topic.
        replication: Replication factor used when streamkit creates the topic.
        config: Topic configs (``retention.ms`` ...) used at creation.
    """

    name: str
    value_serde: SerdeSpec = "json"
    key_serde: SerdeSpec = "str"
    partitions: int | None = None
    replication: int | None = None
    config: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _TOPIC_NAME.fullmatch(self.name) or self.name in {".", ".."}:
            raise DeclarationError(
                f"invalid topic name {self.name!r}: use 1-249 of letters, digits, '.', '_', '-'"
            )
        for attr in ("partitions", "replication"):
            count = getattr(self, attr)
            if count is not None and (not isinstance(count, int) or count < 1):
                raise DeclarationError(f"topic {self.name}: {attr} must be a positive integer")

    def __str__(self) -> str:
        return self.name
