"""Bad configuration stops ``streamkit run`` at start with one clear line.

These run the real command in a subprocess; none of them reaches a broker,
because validation happens before anything connects, or because nothing
listens where the broker should be.
"""

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKIT_")}
    return subprocess.run(
        [sys.executable, "-m", "streamkit", *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


BROKERS = {"STREAMKIT_BROKERS": "127.0.0.1:1"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "invalid setting STREAMKIT_BROKERS: no brokers configured"),
        (
            {**BROKERS, "STREAMKIT_COMMIT_EVERY": "lots"},
            "invalid setting STREAMKIT_COMMIT_EVERY: expected a number; got 'lots'",
        ),
        (
            {**BROKERS, "STREAMKIT_AUTO_OFFSET_RESET": "middle"},
            "invalid setting STREAMKIT_AUTO_OFFSET_RESET: must be one of earliest, latest",
        ),
        ({"STREAMKIT_BROKERS": "nohost"}, "invalid setting STREAMKIT_BROKERS: expected host:port"),
        (
            {**BROKERS, "STREAMKIT_KAFKA_NOT_A_PROPERTY": "1"},
            "invalid setting STREAMKIT_KAFKA_NOT_A_PROPERTY: librdkafka rejected it",
        ),
        (
            {**BROKERS, "STREAMKIT_PRODUCER_LINGER_MS": "soon"},
            "invalid setting STREAMKIT_PRODUCER_LINGER_MS: librdkafka rejected it",
        ),
        (
            {**BROKERS, "STREAMKIT_KAFKA_ENABLE_AUTO_COMMIT": "true"},
            "invalid setting STREAMKIT_KAFKA_ENABLE_AUTO_COMMIT: enable.auto.commit is managed",
        ),
    ],
)
def test_bad_setting_gives_one_clear_line(env: dict[str, str], message: str) -> None:
    result = run_cli("run", "pipelines.example:app", env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"streamkit: {message}"), lines[0]


def test_secret_value_never_echoed() -> None:
    env = {**BROKERS, "STREAMKIT_KAFKA_SASL_PASSWORD": "hunter2", "STREAMKIT_FETCH_BATCH": "-1"}
    result = run_cli("run", "pipelines.example:app", env=env)
    assert result.returncode == 2
    assert "hunter2" not in result.stderr + result.stdout


def test_unknown_module() -> None:
    result = run_cli("run", "pipelines.nope:app", env=BROKERS)
    assert result.returncode == 2
    assert "cannot import pipelines.nope" in result.stderr
    assert "Traceback" not in result.stderr


APPS_MODULE = "from streamkit import App\napp = App('mod')\nadmin = App('mod-admin')\ncount = 42\n"


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        (
            APPS_MODULE,
            "mod:ap",
            "module mod has no attribute ap; its streamkit Apps: mod:admin, mod:app",
        ),
        ("x = 1\n", "mod:app", "module mod has no attribute app; it has no streamkit App"),
        (
            APPS_MODULE,
            "mod:count",
            "mod:count is int, not a streamkit App; its streamkit Apps: mod:admin, mod:app",
        ),
    ],
    ids=["missing-attribute", "no-apps-at-all", "not-an-app"],
)
@pytest.mark.parametrize("command", ["graph", "run"])
def test_a_bad_target_names_the_module_and_the_apps_it_has(
    tmp_path: Path, source: str, target: str, message: str, command: str
) -> None:
    (tmp_path / "mod.py").write_text(source)
    result = run_cli(command, target, env=BROKERS, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert message in result.stderr, result.stderr


def test_undeclared_emit_target_fails_at_start(tmp_path: Path) -> None:
    (tmp_path / "typo.py").write_text(
        "from streamkit import App\n"
        "app = App('typo')\n"
        "src = app.topic('typo.in')\n"
        "@app.agent(src, emits=['typo.outt'])\n"
        "def f(value):\n"
        "    return value\n"
    )
    result = run_cli("run", "typo:app", env=BROKERS, cwd=tmp_path)
    assert result.returncode == 2
    assert "emits to 'typo.outt', which app typo does not declare" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "run" in result.stdout and "topics" in result.stdout


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening, so nobody takes it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "command",
    [
        ["replay", "pipelines.example:app", "--agent", "double"],
        ["dlq", "show", "example.double.dlq"],
        ["dlq", "redrive", "example.double.dlq"],
        ["lag", "pipelines.example:app"],
        ["topics", "describe", "pipelines.example:app"],
    ],
    ids=["replay", "dlq-show", "dlq-redrive", "lag", "topics-describe"],
)
def test_an_unreachable_broker_is_one_line_and_exit_1(command: list[str], dead_port: int) -> None:
    brokers = f"127.0.0.1:{dead_port}"
    result = run_cli(*command, "--timeout", "1", env={"STREAMKIT_BROKERS": brokers})
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("streamkit:")]
    assert len(ours) == 1, result.stderr[-2000:]
    assert ours[0].startswith(f"streamkit: cannot reach Kafka at {brokers} after 1s: "), ours
    assert result.stdout == ""
