"""Serdes of every topic a worker touches, resolved once before anything connects."""

from __future__ import annotations

from dataclasses import dataclass

from streamkit.config import AppConfig
from streamkit.serde import SchemaStore, resolve_serde
from streamkit.serde.base import Serde
from streamkit.topics import Topic


@dataclass(frozen=True, slots=True)
class Codec:
    """The serdes of one topic, resolved."""

    key: Serde
    value: Serde


class Codecs:
    """Resolves and caches each topic's key and value serdes.

    The schema store is only loaded when some topic uses Avro, so apps
    without a ``schemas/`` directory never touch the file system for it.
    """

    def __init__(self, config: AppConfig) -> None:
        self._config = config
        self._store: SchemaStore | None = None
        self._codecs: dict[str, Codec] = {}

    def __call__(self, topic: Topic) -> Codec:
        """The codec of ``topic``."""
        codec = self._codecs.get(topic.name)
        if codec is None:
            specs = (topic.key_serde, topic.value_serde)
            if self._store is None and any(
                isinstance(s, str) and s.startswith("avro") for s in specs
            ):
                self._store = SchemaStore(self._config.schemas_dir)
            registry = self._config.schema_registry_url
            user_info = self._config.schema_registry_user_info
            codec = self._codecs[topic.name] = Codec(
                key=resolve_serde(
                    topic.key_serde,
                    schemas=self._store,
                    registry=registry,
                    subject=f"{topic.name}-key",
                    registry_user_info=user_info,
                ),
                value=resolve_serde(
                    topic.value_serde,
                    schemas=self._store,
                    registry=registry,
                    subject=f"{topic.name}-value",
                    registry_user_info=user_info,
                ),
            )
        return codec
