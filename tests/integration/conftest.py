"""Factories for tests that run workers against the real broker.

The broker itself comes from streamkit's pytest plugin (``kafka_bootstrap``,
``new_topic``, ``unique_name``); these fixtures add producing, reading back,
and worker processes that are always stopped at teardown.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from streamkit import App
from streamkit.backends.kafka import ensure_topics
from tests.integration.helpers import ROOT, WorkerProcess, delete_topics


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def start_worker(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: start ``streamkit run TARGET`` with extra env; killed at teardown."""
    started: list[WorkerProcess] = []

    def start(target: str, **env: str) -> WorkerProcess:
        full_env = {
            **os.environ,
            "STREAMKIT_BROKERS": kafka_bootstrap,
            "STREAMKIT_LOG_FORMAT": "json",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]),
            **env,
        }
        worker = WorkerProcess(target, full_env, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient(
        {"bootstrap.servers": kafka_bootstrap, "logger": logging.getLogger(__name__)}
    )


@pytest.fixture
def fresh_topics(admin: AdminClient) -> Iterator[Callable[[App], None]]:
    """Factory: empty topics exactly as ``app`` declares them; deleted after the test.

    For pipeline modules whose topic names are fixed (``pipelines.*``): the
    session broker is private to the test run, so recreating them is safe.
    """
    created: list[str] = []

    def fresh(app: App) -> None:
        names = sorted(app.topics)
        delete_topics(admin, names)
        assert ensure_topics(admin, app.topics.values()) == names
        created.extend(names)

    yield fresh
    delete_topics(admin, created)


@pytest.fixture
def pipeline_env(
    new_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> Callable[..., dict[str, str]]:
    """Factory: env for ``tests.integration.apps.configurable`` with fresh names.

    ``pipeline_env(partitions=4, **env)`` gives unique input and output topics,
    app and group names, the app's dead-letter topic name under ``DLQ``, and a
    6 s session timeout so a killed worker's partitions move quickly; ``env``
    adds or overrides variables.
    """

    def make(partitions: int = 4, **env: str) -> dict[str, str]:
        app = unique_name("app")
        return {
            "TEST_APP": app,
            "TEST_IN": new_topic(partitions=partitions),
            "TEST_OUT": new_topic(partitions=partitions),
            "STREAMKIT_GROUP_ID": app,
            "DLQ": f"{app}.forward.dlq",
            # A killed worker's partitions move after this long (classic);
            # the test broker sets the KIP-848 equivalent broker-side.
            "STREAMKIT_SESSION_TIMEOUT_MS": "6000",
            **env,
        }

    return make


@pytest.fixture
def stateful_env(
    new_topic: Callable[..., str], unique_name: Callable[[str], str], tmp_path: Path
) -> Callable[..., dict[str, str]]:
    """Factory: env for a stateful test app (tables, windows) with fresh names.

    ``stateful_env(prefix, partitions=4, **env)`` gives unique input and
    output topics, app and group names, a state directory of the test's own
    and a 6 s session timeout; ``env`` adds or overrides variables.
    """

    def make(prefix: str, partitions: int = 4, **env: str) -> dict[str, str]:
        app = unique_name(prefix)
        return {
            "TEST_APP": app,
            "TEST_IN": new_topic(partitions=partitions),
            "TEST_OUT": new_topic(partitions=partitions),
            "STREAMKIT_GROUP_ID": app,
            "STREAMKIT_SESSION_TIMEOUT_MS": "6000",
            "STREAMKIT_STATE_DIR": str(tmp_path / "state"),
            **env,
        }

    return make


@pytest.fixture
def topics_to_delete(admin: AdminClient) -> Iterator[list[str]]:
    """Names the test appends (changelogs, late topics the app created): deleted after it."""
    names: list[str] = []
    yield names
    delete_topics(admin, names)
