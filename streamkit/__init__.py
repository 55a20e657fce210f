"""streamkit: Kafka stream processing for Python.

Declare topics and agents on an :class:`App`; run them with ``streamkit run``.
"""

from streamkit.agent import Agent
from streamkit.app import App
from streamkit.config import AppConfig
from streamkit.context import Context
from streamkit.errors import (
    AgentError,
    BrokerError,
    ConfigError,
    DeclarationError,
    DeliveryError,
    DeserializationError,
    RecordError,
    SerdeError,
    SerializationError,
    StreamkitError,
)
from streamkit.topics import Topic

__all__ = [
    "Agent",
    "AgentError",
    "App",
    "AppConfig",
    "BrokerError",
    "ConfigError",
    "Context",
    "DeclarationError",
    "DeliveryError",
    "DeserializationError",
    "RecordError",
    "SerdeError",
    "SerializationError",
    "StreamkitError",
    "Topic",
]
