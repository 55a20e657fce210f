"""The seam between the runtime and a Kafka implementation.

The runtime drives clients with the confluent-kafka method set (``consume``,
``commit``, ``pause``/``resume``, ``assignment``, ``close`` on the consumer;
``produce``, ``poll``, ``flush`` on the producer; messages with ``topic()``,
``partition()``, ``offset()``, ``key()``, ``value()``, ``headers()``,
``timestamp()``, ``error()``). A backend builds such clients from one
config. :class:`~streamkit.backends.kafka.KafkaBackend` is the real one; an
in-memory backend plugs in here so agents run through the same runtime code.
"""

from __future__ import annotations

from typing import Any, Protocol

from streamkit.config import AppConfig


class Backend(Protocol):
    """Builds the consumer and producer a worker uses."""

    def consumer(self, config: AppConfig, **callbacks: Any) -> Any:
        """A group consumer with the runtime's settings; ``callbacks`` as in librdkafka."""
        ...

    def producer(self, config: AppConfig, **callbacks: Any) -> Any:
        """A producer whose delivery reports are served by ``poll``/``flush``."""
        ...

    def reader(self, config: AppConfig) -> Any:
        """A changelog reader for table restores (``streamkit.state.restore.ChangelogReader``)."""
        ...
