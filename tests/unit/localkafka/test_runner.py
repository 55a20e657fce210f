"""LocalKafka behaviour that needs no Java: configuration, refusal paths, stopping by pidfile."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamkit.errors import ConfigError, LocalKafkaError
from streamkit.localkafka import LocalKafka, default_data_dir, free_ports, process


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("STREAMKIT_CACHE_DIR", str(root))
    return root


@pytest.fixture
def kafka(tmp_path: Path) -> LocalKafka:
    port, controller_port = free_ports(2)
    return LocalKafka(port, controller_port=controller_port, data_dir=tmp_path / "data")


@pytest.fixture
def fake_broker(kafka: LocalKafka) -> Iterator[subprocess.Popen[bytes]]:
    """A process that looks like a broker started earlier by the CLI from kafka's data dir."""
    kafka.data_dir.mkdir(parents=True)
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", str(kafka.server_properties)],
        start_new_session=True,
    )
    process.write_pidfile(kafka.data_dir, child.pid)
    # Between fork and exec the child still shows the parent's command line;
    # the runner recognises a broker by its command line, so wait for exec.
    deadline = time.monotonic() + 10
    while str(kafka.server_properties) not in (process.command_line(child.pid) or ""):
        assert time.monotonic() < deadline, "the fake broker never exec'd"
        time.sleep(0.01)
    yield child
    if child.poll() is None:
        child.kill()
    child.wait()


def test_defaults_follow_the_port(cache: Path) -> None:
    kafka = LocalKafka(29092)
    assert kafka.controller_port == 29093
    assert kafka.bootstrap == "127.0.0.1:29092"
    assert kafka.data_dir == cache / "kafka" / "run-29092"
    assert default_data_dir(29092) == kafka.data_dir
    assert kafka.log_file == kafka.data_dir / "server.log"


def test_same_port_twice_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(LocalKafkaError, match="must differ"):
        LocalKafka(29092, controller_port=29092, data_dir=tmp_path)


def test_bad_extra_property_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        LocalKafka(29092, data_dir=tmp_path, extra_properties={"listeners": "PLAINTEXT://:1"})


@pytest.mark.parametrize("which", ["port", "controller port"])
def test_start_refuses_a_port_someone_else_listens_on(kafka: LocalKafka, which: str) -> None:
    taken = kafka.port if which == "port" else kafka.controller_port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", taken))
        sock.listen()
        with pytest.raises(LocalKafkaError, match=f"{which} {taken} .* already in use"):
            kafka.start()
    assert not kafka.data_dir.exists()


def test_stop_without_a_broker_is_a_no_op(kafka: LocalKafka) -> None:
    kafka.stop()
    kafka.stop()
    assert not kafka.is_running()


def test_a_stale_pidfile_is_ignored_and_cleaned(kafka: LocalKafka) -> None:
    kafka.data_dir.mkdir(parents=True)
    # The pid of a finished, reaped process; reuse within this test is unlikely
    # and would still be rejected by the command-line check.
    stale = subprocess.Popen([sys.executable, "-c", "pass"])
    stale.wait()
    process.write_pidfile(kafka.data_dir, stale.pid)
    assert kafka.running_pid() is None
    kafka.stop()
    assert process.read_pidfile(kafka.data_dir) is None


def test_a_reused_pid_is_not_mistaken_for_our_broker(kafka: LocalKafka) -> None:
    kafka.data_dir.mkdir(parents=True)
    # This test process is alive, but its command line names no server.properties.
    process.write_pidfile(kafka.data_dir, os.getpid())
    assert kafka.running_pid() is None


@pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="the fake broker is our child: only /proc shows it died before we reap it",
)
def test_a_broker_from_an_earlier_process_is_found_and_stopped(
    kafka: LocalKafka, fake_broker: subprocess.Popen[bytes]
) -> None:
    assert kafka.running_pid() == fake_broker.pid
    with pytest.raises(LocalKafkaError, match="already runs"):
        kafka.start()
    kafka.stop(timeout=30)
    assert fake_broker.poll() is not None
    assert process.read_pidfile(kafka.data_dir) is None
    assert kafka.running_pid() is None
