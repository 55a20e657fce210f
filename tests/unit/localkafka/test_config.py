from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from streamkit.errors import ConfigError
from streamkit.localkafka import config
from streamkit.localkafka.config import (
    TEST_FRIENDLY_DEFAULTS,
    PropertyValue,
    broker_properties,
    new_cluster_id,
    render_log4j2,
    render_properties,
)


def _props(**extra: PropertyValue) -> dict[str, str]:
    return broker_properties(
        port=19092, controller_port=19093, log_dir=Path("/data/kafka-logs"), extra=extra
    )


def test_listeners_and_voters_are_loopback_on_the_given_ports() -> None:
    props = _props()
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["process.roles"] == "broker,controller"
    assert props["log.dirs"] == "/data/kafka-logs"


def test_test_friendly_defaults_are_applied() -> None:
    props = _props()
    for key, value in TEST_FRIENDLY_DEFAULTS.items():
        assert props[key] == value
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == "1"


def test_extra_properties_override_add_and_remove_defaults() -> None:
    extra: dict[str, PropertyValue] = {
        "num.partitions": 3,
        "auto.create.topics.enable": True,
        "message.max.bytes": "2000000",
        "log.segment.bytes": None,
    }
    props = _props(**extra)
    assert props["num.partitions"] == "3"
    assert props["auto.create.topics.enable"] == "true"
    assert props["message.max.bytes"] == "2000000"
    assert "log.segment.bytes" not in props


@pytest.mark.parametrize("key", ["listeners", "node.id", "log.dirs", "controller.quorum.voters"])
def test_managed_keys_cannot_be_overridden(key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _props(**{key: "x"})
    assert key in caught.value.setting
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("key", ["", "bad key", "a=b", "x\ny"])
def test_malformed_keys_are_rejected(key: str) -> None:
    with pytest.raises(ConfigError):
        _props(**{key: "1"})


def test_kip848_group_settings_satisfy_the_brokers_own_checks() -> None:
    # Kafka refuses to start unless min <= value <= max and heartbeat < session;
    # the maxima are Kafka's defaults (15 s heartbeat, 60 s session).
    props = _props()
    heartbeat = int(props["group.consumer.heartbeat.interval.ms"])
    min_heartbeat = int(props["group.consumer.min.heartbeat.interval.ms"])
    session = int(props["group.consumer.session.timeout.ms"])
    min_session = int(props["group.consumer.min.session.timeout.ms"])
    assert min_heartbeat <= heartbeat <= 15_000
    assert min_session <= session <= 60_000
    assert heartbeat < session
    assert int(props["group.min.session.timeout.ms"]) <= 1000


def test_render_properties_escapes_what_java_would_misread() -> None:
    text = render_properties(
        {"plain": "a b", "path": "C:\\dir", "multi": "one\ntwo", "lead": " x"}, header="hi\nthere"
    )
    assert text.splitlines() == [
        "# hi",
        "# there",
        "plain=a b",
        "path=C:\\\\dir",
        "multi=one\\ntwo",
        "lead=\\ x",
    ]
    assert text.endswith("\n")


def test_cluster_ids_are_16_random_bytes_in_unpadded_urlsafe_base64() -> None:
    ids = {new_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    for cluster_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id)
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_log4j2_config_appends_everything_to_the_given_file(tmp_path: Path) -> None:
    log_file = tmp_path / "server.log"
    lines = render_log4j2(log_file).splitlines()
    assert f"appender.file.fileName={log_file}" in lines
    assert "appender.file.append=true" in lines
    assert "rootLogger.appenderRef.file.ref=server" in lines


def test_cluster_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xfb... encodes to "-" first in URL-safe base64; the second draw is fine.
    draws = iter([b"\xfb" + bytes(15), bytes(16)])
    monkeypatch.setattr("streamkit.localkafka.config.secrets.token_bytes", lambda n: next(draws))
    assert not config.new_cluster_id().startswith("-")
