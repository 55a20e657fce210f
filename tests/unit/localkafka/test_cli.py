"""The command line's argument handling and refusal paths (no Java needed)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from streamkit.localkafka import free_ports
from streamkit.localkafka.__main__ import EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_OK, build_parser, main


def test_port_defaults_to_kafka_port_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_PORT", "19999")
    assert build_parser().parse_args(["up"]).port == 19999
    assert build_parser().parse_args(["down", "--port", "123"]).port == 123
    monkeypatch.delenv("KAFKA_PORT")
    assert build_parser().parse_args(["status"]).port == 9092


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_down_and_status_without_a_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = str(free_ports(1)[0])
    args = ["--port", port, "--data-dir", str(tmp_path)]
    assert main(["down", *args]) == EXIT_OK
    assert f"not running on 127.0.0.1:{port}" in capsys.readouterr().out
    assert main(["status", *args]) == EXIT_NOT_RUNNING


def test_up_refuses_a_port_another_program_listens_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert main(["up", "--port", str(port), "--data-dir", str(tmp_path / "d")]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert f"port {port} on 127.0.0.1 is already in use" in err
