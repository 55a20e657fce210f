"""The plugin's pure decisions; tests/integration exercises the fixtures for real."""

from __future__ import annotations

import importlib
import re

import pytest

from streamkit import pytest_plugin
from streamkit.localkafka import container
from streamkit.pytest_plugin import (
    NameFactory,
    choose_broker_source,
    make_unique_name,
    short_test_id,
)

TOPIC_CHARS = re.compile(r"[A-Za-z0-9._-]+")


def _no_docker_call() -> bool:
    raise AssertionError("docker must not be probed")


def test_env_var_wins_without_probing_docker() -> None:
    env = {"STREAMKIT_TEST_BROKERS": "kafka-1:9092,kafka-2:9092"}
    assert choose_broker_source(env, _no_docker_call) == "env"


def test_container_when_docker_answers_else_local() -> None:
    assert choose_broker_source({}, lambda: True) == "container"
    assert choose_broker_source({"STREAMKIT_TEST_BROKERS": "  "}, lambda: True) == "container"
    assert choose_broker_source({}, lambda: False) == "local"


def test_docker_usable_swallows_every_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_import(name: str, package: str | None = None) -> object:
        raise RuntimeError(f"cannot import {name}")

    monkeypatch.setattr(importlib, "import_module", broken_import)
    assert container.docker_usable() is False


@pytest.mark.parametrize(
    ("test_name", "expected"),
    [
        ("test_restart_keeps_data", "restart-keeps-data"),
        ("test_codec[avro-Order.v1]", "codec-avro-order-v1"),
        ("test_" + "x" * 100, "x" * 32),
        ("test_[]", "test"),
    ],
)
def test_short_test_id(test_name: str, expected: str) -> None:
    assert short_test_id(test_name) == expected


def test_unique_names_are_valid_distinct_and_bounded() -> None:
    names = {make_unique_name("orders", "my-test") for _ in range(100)}
    assert len(names) == 100
    for name in names:
        assert re.fullmatch(r"orders-my-test-[0-9a-f]{8}", name)
    long_name = make_unique_name("bad prefix/with:chars" * 20, "t")
    assert TOPIC_CHARS.fullmatch(long_name)
    assert len(long_name) <= 249


def test_unique_name_fixture_embeds_the_test_name(unique_name: NameFactory) -> None:
    first, second = unique_name("grp"), unique_name("grp")
    assert first != second
    assert first.startswith("grp-unique-name-fixture-embeds-the-")


def test_the_integration_marker_is_declared(pytestconfig: pytest.Config) -> None:
    markers = [line.split(":", 1)[0] for line in pytestconfig.getini("markers")]
    assert markers.count("integration") == 1


def test_plugin_import_starts_nothing() -> None:
    # Fixtures import their machinery lazily: the plugin module itself must not
    # pull in the Kafka client (loaded for every pytest run of every user).
    assert "AdminClient" not in vars(pytest_plugin)
    assert "LocalKafka" not in vars(pytest_plugin)
