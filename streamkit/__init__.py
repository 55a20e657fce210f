"""streamkit: Kafka stream processing for Python.

Declare topics and agents on an :class:`App`; run them with ``streamkit run``.
"""

from streamkit.agent import Agent
from streamkit.app import App
from streamkit.config import AppConfig
from streamkit.context import Context
from streamkit.errors import (
    AgentError,
    AgentSignal,
    BrokerError,
    ClientError,
    ConfigError,
    DeadLetter,
    DeadLetterLimitError,
    DeclarationError,
    DeliveryError,
    DeserializationError,
    RecordError,
    RemoteError,
    RequestTimeout,
    SerdeError,
    SerializationError,
    SkipRecord,
    StateError,
    StreamkitError,
)
from streamkit.group_by import GroupBy
from streamkit.policies import NO_DEAD_LETTERS, NO_RETRY, DeadLetterPolicy, RetryPolicy
from streamkit.state.table import Table
from streamkit.state.topic_table import GlobalTable, SourceTable
from streamkit.topics import Topic
from streamkit.windows import Hopping, Session, Sliding, Tumbling, Window, Windowed

__all__ = [
    "NO_DEAD_LETTERS",
    "NO_RETRY",
    "Agent",
    "AgentError",
    "AgentSignal",
    "App",
    "AppConfig",
    "BrokerError",
    "ClientError",
    "ConfigError",
    "Context",
    "DeadLetter",
    "DeadLetterLimitError",
    "DeadLetterPolicy",
    "DeclarationError",
    "DeliveryError",
    "DeserializationError",
    "GlobalTable",
    "GroupBy",
    "Hopping",
    "RecordError",
    "RemoteError",
    "RequestTimeout",
    "RetryPolicy",
    "SerdeError",
    "SerializationError",
    "Session",
    "SkipRecord",
    "Sliding",
    "SourceTable",
    "StateError",
    "StreamkitError",
    "Table",
    "Topic",
    "Tumbling",
    "Window",
    "Windowed",
]
