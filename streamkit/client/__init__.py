"""The client for code that is not an agent: ``app.client()`` and ``app.blocking_client()``."""

from streamkit.client.blocking import BlockingClient
from streamkit.client.client import Client, Sent, TaskHandle

__all__ = ["BlockingClient", "Client", "Sent", "TaskHandle"]
