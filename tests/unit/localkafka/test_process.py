from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamkit.localkafka import process

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="zombie detection reads /proc"
)


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _sleeper(*extra_args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", *extra_args],
        start_new_session=True,
    )


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = process.free_ports(3)
    assert len(set(ports)) == 3
    assert all(process.port_is_free(port) for port in ports)


def test_a_listening_port_is_neither_free_nor_silent(listener: int) -> None:
    assert not process.port_is_free(listener)
    assert process.port_accepts(listener)


def test_a_free_port_accepts_nothing() -> None:
    (port,) = process.free_ports(1)
    assert not process.port_accepts(port)


def test_pidfile_roundtrip_and_garbage(tmp_path: Path) -> None:
    assert process.read_pidfile(tmp_path) is None
    process.write_pidfile(tmp_path, 4242)
    assert process.read_pidfile(tmp_path) == 4242
    (tmp_path / process.PIDFILE_NAME).write_text("not a pid\n")
    assert process.read_pidfile(tmp_path) is None
    process.remove_pidfile(tmp_path)
    process.remove_pidfile(tmp_path)  # idempotent
    assert not (tmp_path / process.PIDFILE_NAME).exists()


def test_command_line_names_the_arguments() -> None:
    child = _sleeper("marker-argument")
    try:
        # Right after fork the child has not exec'd yet and has no command line.
        deadline = time.monotonic() + 30
        command = process.command_line(child.pid)
        while command is None and time.monotonic() < deadline:
            time.sleep(0.01)
            command = process.command_line(child.pid)
        assert command is not None
        assert "marker-argument" in command
        assert process.command_line(process.free_ports(1)[0] + 4_000_000) is None
    finally:
        child.kill()
        child.wait()


@linux_only
def test_an_unreaped_exited_child_counts_as_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # It becomes a zombie (exited, not reaped) because nobody waits on it.
        assert process.wait_dead(child.pid, timeout=30)
    finally:
        child.wait()


def test_signal_group_and_wait_dead_stop_a_process_group() -> None:
    child = _sleeper()
    try:
        assert process.is_alive(child.pid)
        process.signal_group(child.pid, signal.SIGTERM)
        assert child.wait(timeout=30) == -signal.SIGTERM
        assert not process.is_alive(child.pid)
        process.signal_group(child.pid, signal.SIGTERM)  # a vanished group is fine
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_wait_dead_gives_up_at_the_deadline() -> None:
    child = _sleeper()
    try:
        started = time.monotonic()
        assert not process.wait_dead(child.pid, timeout=0.2)
        assert time.monotonic() - started < 5
    finally:
        child.kill()
        child.wait()
