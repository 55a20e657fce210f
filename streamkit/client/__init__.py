"""The client for code that is not an agent: ``app.client()`` and ``app.blocking_client()``."""

from streamkit.client.blocking import BlockingClient
from streamkit.client.client import Client, TaskHandle
from streamkit.client.delivery import Delivery, Sent

__all__ = ["BlockingClient", "Client", "Delivery", "Sent", "TaskHandle"]
