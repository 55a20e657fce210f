"""The pinned Kafka in a Docker container, via testcontainers (optional).

Used by the pytest plugin when ``testcontainers`` is installed and a Docker
engine answers. It runs the official ``apache/kafka`` image of the same
version as the jar broker, with the same test-friendly settings, so a suite
behaves the same on a laptop with Docker and on a machine without.

testcontainers' own ``KafkaContainer`` is not used: it drives Confluent
Platform images (Kafka 3.6 by default), which lack the KIP-848 consumer
protocol streamkit relies on.

The container's client port is published on the same host port number, so
the address the broker advertises is known before the container starts.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import PurePosixPath
from typing import Any

from streamkit.errors import LocalKafkaError
from streamkit.localkafka.config import broker_properties, new_cluster_id
from streamkit.localkafka.fetch import KAFKA_VERSION
from streamkit.localkafka.probe import wait_until_answers
from streamkit.localkafka.process import free_ports

IMAGE = f"apache/kafka:{KAFKA_VERSION}"
# The image's default log directory, writable by its unprivileged user.
_CONTAINER_LOG_DIR = PurePosixPath("/tmp/kraft-combined-logs")

# A Docker engine that does not answer a ping within 2 s is not one a test
# session should wait on; the jar broker is the fallback.
_PING_TIMEOUT_S = 2
# Pulling the image (about 400 MB) happens inside start(); startup proper
# then takes 5-10 s.
_READY_TIMEOUT_S = 120.0


def docker_usable() -> bool:
    """Tell whether testcontainers is installed and a Docker engine answers.

    Never raises: any failure (package missing, no socket, permission denied,
    a warning promoted to an error by the caller's filters) means "no".
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module("testcontainers.core.container")
            # Imported by name: docker ships no type stubs, and mypy would
            # otherwise demand types-docker from every user of this module.
            docker: Any = importlib.import_module("docker")
            client = docker.from_env(timeout=_PING_TIMEOUT_S)
            try:
                return bool(client.ping())
            finally:
                client.close()
    except Exception:
        return False


def env_name(key: str) -> str:
    """Map a broker property to the ``apache/kafka`` image's environment variable.

    The image's convention: prefix ``KAFKA_``, upper case, ``_`` becomes
    ``___``, ``-`` becomes ``__``, ``.`` becomes ``_``.
    """
    mapped = key.replace("_", "___").replace("-", "__").replace(".", "_")
    return "KAFKA_" + mapped.upper()


def container_env(host: str, port: int, controller_port: int) -> dict[str, str]:
    """Return the environment configuring the image like a ``LocalKafka``.

    The image uses its built-in defaults only when no ``KAFKA_`` variable is
    set, so this supplies every required setting, not just the overrides.
    """
    props = broker_properties(
        port=port, controller_port=controller_port, log_dir=_CONTAINER_LOG_DIR
    )
    props["listeners"] = f"PLAINTEXT://0.0.0.0:{port},CONTROLLER://localhost:{controller_port}"
    props["advertised.listeners"] = f"PLAINTEXT://{host}:{port}"
    props["controller.quorum.voters"] = f"1@localhost:{controller_port}"
    env = {env_name(key): value for key, value in props.items()}
    env["CLUSTER_ID"] = new_cluster_id()
    return env


class KafkaContainerBroker:
    """A running ``apache/kafka`` container; :meth:`stop` removes it."""

    def __init__(self) -> None:
        from testcontainers.core.container import DockerContainer

        (port,) = free_ports(1)
        controller_port = 9093 if port != 9093 else 9094
        self._container: Any = DockerContainer(IMAGE)
        host = str(self._container.get_docker_client().host())
        self._container.with_bind_ports(port, port)
        for name, value in container_env(host, port, controller_port).items():
            self._container.with_env(name, value)
        self.host = host
        self.port = port

    @property
    def bootstrap(self) -> str:
        """The ``bootstrap.servers`` value for clients."""
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        """Start the container and return once the broker answers.

        Raises:
            LocalKafkaError: It did not answer in time (with the container log tail).

        """
        self._container.start()
        problem = wait_until_answers(self.host, self.port, _READY_TIMEOUT_S)
        if problem is not None:
            stdout, stderr = self._container.get_logs()
            tail = "\n".join((stdout + stderr).decode(errors="replace").splitlines()[-40:])
            self.stop()
            raise LocalKafkaError(f"kafka container {IMAGE}: {problem}; last log lines:\n{tail}")

    def stop(self) -> None:
        """Stop and remove the container."""
        self._container.stop()
