"""Factories for tests that run workers against the real broker.

The broker itself comes from streamkit's pytest plugin (``kafka_bootstrap``,
``new_topic``, ``unique_name``); these fixtures add producing, reading back,
and worker processes that are always stopped at teardown.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType

import pytest
from confluent_kafka.admin import AdminClient

from streamkit import App
from streamkit.backends.kafka import ensure_topics
from tests.integration.helpers import FAST_FAILOVER, ROOT, WorkerProcess, delete_topics

# A ceiling, not an expectation: a worker gets its partitions in about a
# second, a loaded 2-core machine with several brokers' JVMs takes longer.
_JOIN_S = 60.0


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
def start_member(start_worker: Callable[..., WorkerProcess]) -> Callable[..., WorkerProcess]:
    """Factory: ``start_worker``, then wait until the worker owns partitions.

    For tests that need the worker in its group before they go on (send to
    it, start another, kill it): its ``"partitions assigned"`` line says the
    rebalance is over. A worker that exits first fails the test at once.
    """

    def start(target: str, **env: str) -> WorkerProcess:
        worker = start_worker(target, **env)
        worker.wait_for_log('"partitions assigned"', timeout=_JOIN_S)
        return worker

    return start


@pytest.fixture
def fresh_import(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., ModuleType]]:
    """Factory: import modules anew with ``env`` set, as a process started with it would.

    ``fresh_import(env, *modules)`` sets ``env`` and ``STREAMKIT_BROKERS``
    (undone at teardown), drops ``modules`` from :data:`sys.modules` and
    imports them in the order given, returning the last. For apps that read
    their names from the environment at import: they are dropped again at
    teardown, so the next test's import gets names of its own.
    """
    imported: list[str] = []

    def load(env: Mapping[str, str], *modules: str) -> ModuleType:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("STREAMKIT_BROKERS", kafka_bootstrap)
        for module in modules:
            sys.modules.pop(module, None)
        imported.extend(modules)
        return [importlib.import_module(module) for module in modules][-1]

    yield load
    for module in imported:
        sys.modules.pop(module, None)


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
def app_env(
    new_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> Callable[..., dict[str, str]]:
    """Factory: the names one test app runs under, every one new to the broker.

    ``app_env(prefix, partitions=4, topics=("TEST_IN", "TEST_OUT"), **env)``
    gives ``TEST_APP`` and ``STREAMKIT_GROUP_ID`` (both ``unique_name(prefix)``)
    and a new topic of ``partitions`` under each name in ``topics``; ``env``
    adds or overrides variables (:data:`FAST_FAILOVER`, a topic made apart
    for its own partitions or config, which then replaces the default one).
    """

    def make(
        prefix: str,
        partitions: int = 4,
        topics: tuple[str, ...] = ("TEST_IN", "TEST_OUT"),
        **env: str,
    ) -> dict[str, str]:
        app = unique_name(prefix)
        made = {name: new_topic(partitions=partitions) for name in topics if name not in env}
        return {"TEST_APP": app, **made, "STREAMKIT_GROUP_ID": app, **env}

    return make


@pytest.fixture
def pipeline_env(app_env: Callable[..., dict[str, str]]) -> Callable[..., dict[str, str]]:
    """Factory: env for ``tests.integration.apps.configurable`` with fresh names.

    ``pipeline_env(partitions=4, **env)`` gives unique input and output topics,
    app and group names, the app's dead-letter topic name under ``DLQ``, and
    :data:`FAST_FAILOVER` so a killed worker's partitions move quickly;
    ``env`` adds or overrides variables.
    """

    def make(partitions: int = 4, **env: str) -> dict[str, str]:
        names = app_env("app", partitions, **env)
        return {"DLQ": f"{names['TEST_APP']}.forward.dlq", **FAST_FAILOVER, **names}

    return make


@pytest.fixture
def stateful_env(
    app_env: Callable[..., dict[str, str]], tmp_path: Path
) -> Callable[..., dict[str, str]]:
    """Factory: env for a stateful test app (tables, windows) with fresh names.

    ``stateful_env(prefix, partitions=4, **env)`` gives unique input and
    output topics, app and group names, a state directory of the test's own
    and :data:`FAST_FAILOVER`; ``env`` adds or overrides variables.
    """

    def make(prefix: str, partitions: int = 4, **env: str) -> dict[str, str]:
        state = {**FAST_FAILOVER, "STREAMKIT_STATE_DIR": str(tmp_path / "state")}
        return app_env(prefix, partitions, **{**state, **env})

    return make


@pytest.fixture
def topics_to_delete(admin: AdminClient) -> Iterator[list[str]]:
    """Names the test appends (changelogs, late topics the app created): deleted after it."""
    names: list[str] = []
    yield names
    delete_topics(admin, names)
