"""http_port, http_host and liveness_timeout: validated like every other setting."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streamkit.config import AppConfig
from streamkit.errors import ConfigError

BROKERS = {"brokers": "127.0.0.1:9092"}


def test_off_by_default_on_loopback_with_a_minute_of_liveness() -> None:
    config = AppConfig.load("shop", BROKERS, env={})
    assert (config.http_port, config.http_host, config.liveness_timeout) == (None, "127.0.0.1", 60)
    assert "statistics.interval.ms" not in config.librdkafka("consumer")


def test_from_the_environment_and_from_code() -> None:
    env = {"STREAMKIT_HTTP_PORT": "8080", "STREAMKIT_HTTP_HOST": "0.0.0.0"}
    config = AppConfig.load("shop", BROKERS, env={**env, "STREAMKIT_LIVENESS_TIMEOUT": "2.5"})
    assert (config.http_port, config.http_host, config.liveness_timeout) == (8080, "0.0.0.0", 2.5)
    assert AppConfig.load("shop", {**BROKERS, "http_port": 9000}, env=env).http_port == 9000
    assert AppConfig.load("shop", BROKERS, env={"STREAMKIT_HTTP_PORT": ""}).http_port is None


def test_statistics_only_with_the_endpoint_and_overridable() -> None:
    on = AppConfig.load("shop", {**BROKERS, "http_port": 8080}, env={})
    assert on.librdkafka("consumer")["statistics.interval.ms"] == 5000
    assert "statistics.interval.ms" not in on.librdkafka("producer")
    tuned = AppConfig.load(
        "shop",
        {**BROKERS, "http_port": 8080},
        env={"STREAMKIT_CONSUMER_STATISTICS_INTERVAL_MS": "500"},
    )
    assert tuned.librdkafka("consumer")["statistics.interval.ms"] == "500"


@pytest.mark.parametrize(
    ("overrides", "env", "message"),
    [
        ({}, {"STREAMKIT_HTTP_PORT": "0"}, "STREAMKIT_HTTP_PORT: expected a port number (1-65535)"),
        ({}, {"STREAMKIT_HTTP_PORT": "65536"}, "STREAMKIT_HTTP_PORT: expected a port"),
        ({}, {"STREAMKIT_HTTP_PORT": "http"}, "STREAMKIT_HTTP_PORT: expected a port"),
        ({"http_port": -1}, {}, "http_port=: expected a port number"),
        ({"http_port": True}, {}, "http_port=: expected a port number"),
        ({}, {"STREAMKIT_HTTP_HOST": " "}, "STREAMKIT_HTTP_HOST: expected a host name"),
        ({}, {"STREAMKIT_LIVENESS_TIMEOUT": "0"}, "STREAMKIT_LIVENESS_TIMEOUT: must be a positive"),
    ],
)
def test_bad_values_name_the_setting(
    overrides: dict[str, object], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AppConfig.load("shop", {**BROKERS, **overrides}, env=env)


def test_the_run_command_refuses_a_bad_port_before_loading_anything() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamkit", "run", "pipelines.example:app", "--http-port", "70000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Invalid value for '--http-port'" in result.stderr
