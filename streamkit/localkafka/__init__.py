"""Run a real Apache Kafka broker from cached jars, for development and tests.

No Docker needed: the pinned Kafka release is fetched once with Maven into
``~/.cache/streamkit`` (or ``$STREAMKIT_CACHE_DIR``) and run with the local
Java 17+. From a shell::

    python -m streamkit.localkafka up --port 9092     # returns once it answers
    python -m streamkit.localkafka down --port 9092

From Python::

    from streamkit.localkafka import LocalKafka, free_ports

    port, controller_port = free_ports(2)
    with LocalKafka(port, controller_port=controller_port, data_dir=tmp) as kafka:
        ...  # kafka.bootstrap == f"127.0.0.1:{port}"

In pytest, the ``streamkit`` plugin's ``kafka_bootstrap`` fixture does this
for you. POSIX only (process groups and signals).
"""

from streamkit.localkafka.config import TEST_FRIENDLY_DEFAULTS, PropertyValue
from streamkit.localkafka.fetch import KAFKA_VERSION, cache_root, fetch_jars, is_fetched
from streamkit.localkafka.process import free_ports
from streamkit.localkafka.runner import LocalKafka, default_data_dir

__all__ = [
    "KAFKA_VERSION",
    "TEST_FRIENDLY_DEFAULTS",
    "LocalKafka",
    "PropertyValue",
    "cache_root",
    "default_data_dir",
    "fetch_jars",
    "free_ports",
    "is_fetched",
]
