"""Every contract test runs twice: on the in-memory broker and on a real one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.contract.drivers import Cluster, KafkaCluster, MemoryCluster


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.integration)])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    driver: Cluster
    if request.param == "memory":
        driver = MemoryCluster()
    else:
        driver = KafkaCluster(
            request.getfixturevalue("kafka_bootstrap"),
            request.getfixturevalue("new_topic"),
            request.getfixturevalue("unique_name"),
        )
    try:
        yield driver
    finally:
        driver.close()


def memory_cannot_model(reason: str) -> pytest.MarkDecorator:
    """Mark a behaviour the memory broker does not have: a strict xfail on its variant only.

    Strict, so the day the memory broker learns it, the mark must go.
    """
    return pytest.mark.memory_xfail(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        mark = item.get_closest_marker("memory_xfail")
        if mark is not None and item.callspec.params.get("cluster") == "memory":  # type: ignore[attr-defined]
            item.add_marker(pytest.mark.xfail(strict=True, reason=mark.args[0]))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "memory_xfail(reason): the memory broker cannot model this (strict xfail there)"
    )
