"""Bad configuration stops ``streamkit run`` at start with one clear line;
``replay`` and ``dlq redrive`` show what they would do and act only when told.

The first tests run the real command in a subprocess; none of them reaches a
broker, because validation happens before anything connects, or because
nothing listens where the broker should be. The confirmation tests drive the
commands in-process with click's CliRunner, with Kafka stubbed out.
"""

import functools
import json
import os
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import streamkit.cli
import streamkit.cli_dlq
import streamkit.cli_params
from streamkit.cli import main
from streamkit.cli_params import NOTHING_DONE
from streamkit.ops import dlq as dlq_ops
from streamkit.ops import render
from streamkit.ops import replay as replay_ops
from streamkit.ops.dlq import DeadLetterRecord, DeadLetterSummary, RedriveResult
from streamkit.ops.replay import ReplayResult
from streamkit.runtime.failures import H_EXCEPTION, H_MESSAGE, H_OFFSET, H_PARTITION, H_TOPIC
from streamkit.types import TopicPartition

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
        [
            "replay",
            "pipelines.example:app",
            "--agent",
            "double",
            "--whole-topic",
            "--to-live-topics",
        ],
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


# --- preview first, act when told: replay and dlq redrive -------------------

NOTHING_DONE_LINE = "streamkit: nothing done: pass --yes to run it"
TP0, TP1 = TopicPartition("example.in", 0), TopicPartition("example.in", 1)
RANGES = {TP0: (10, 40), TP1: (0, 25)}


@dataclass
class FakeKafka:
    """What the commands did to Kafka: connections, stored ranges, replays and redrives."""

    connected: int = 0
    stored: list[dict[TopicPartition, tuple[int, int]]] = field(default_factory=list)
    replays: list[dict[str, Any]] = field(default_factory=list)
    redrives: list[dict[str, Any]] = field(default_factory=list)
    tty: bool = False
    # Each redrive reads in these steps: (seconds that pass first, dead letters read).
    steps: list[tuple[float, int]] = field(default_factory=list)
    now: float = 0.0


class _Consumer:
    def close(self) -> None:
        pass


@pytest.fixture
def kafka(monkeypatch: pytest.MonkeyPatch) -> FakeKafka:
    """Kafka stubbed where the commands reach it; stdin is no terminal unless ``tty`` is set."""
    fake = FakeKafka()

    def connect(*_args: Any) -> object:
        fake.connected += 1
        return object()

    def run_replay(*args: Any, **kwargs: Any) -> ReplayResult:
        fake.replays.append({"args": args, **kwargs})
        ranges = args[2]
        ends = {tp: end for tp, (_, end) in ranges.items()}
        return ReplayResult(ranges, ends, dead_lettered=0, seconds=1.0, exit_code=0)

    def redrive(*_args: Any, **kwargs: Any) -> RedriveResult:
        fake.redrives.append(kwargs)
        for seconds, read in fake.steps:
            fake.now += seconds
            kwargs["progress"](read)
        if kwargs["dry_run"]:
            return RedriveResult(matched=3, by_target=Counter({"example.in": 3}), ends={0: 7, 1: 4})
        return RedriveResult(matched=3, sent=3, by_target=Counter({"example.in": 3}))

    monkeypatch.setattr(streamkit.cli, "connect", connect)
    monkeypatch.setattr(streamkit.cli_dlq, "connect", connect)
    monkeypatch.setattr("streamkit.backends.kafka.create_consumer", lambda *a, **k: _Consumer())
    monkeypatch.setattr(replay_ops, "resolve_ranges", lambda *a, **k: dict(RANGES))
    monkeypatch.setattr(replay_ops, "refuse_busy_group", lambda *a, **k: None)
    monkeypatch.setattr(replay_ops, "stored_ranges", lambda *a, **k: {})
    monkeypatch.setattr(replay_ops, "resume_from", lambda _c, ranges, **k: dict(ranges))
    monkeypatch.setattr(
        replay_ops, "store_ranges", lambda _c, ranges, *a: fake.stored.append(dict(ranges))
    )
    monkeypatch.setattr(replay_ops, "run_replay", run_replay)
    monkeypatch.setattr(dlq_ops, "redrive", redrive)
    monkeypatch.setattr(streamkit.cli_params, "_interactive", lambda: fake.tty)
    return fake


REPLAY = ["replay", "pipelines.example:app", "--agent", "double"]
WINDOW = ["--from", "2026-11-20T00:00:00Z", "--to", "2026-11-21T00:00:00Z"]
SHADOW = ["--redirect", "example.out=example.out.shadow"]
REDRIVE = ["dlq", "redrive", "example.double.dlq"]
ENV = {"STREAMKIT_BROKERS": "127.0.0.1:1"}


def invoke(*args: str, answer: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=ENV, input=answer)


def test_replay_without_yes_and_no_terminal_previews_and_does_nothing(kafka: FakeKafka) -> None:
    result = invoke(*REPLAY, *WINDOW, *SHADOW)
    assert result.exit_code == NOTHING_DONE == 4, result.output
    # The preview a dry run shows: ranges and counts per partition, where outputs go.
    assert "replay double: example.in in group" in result.stderr
    assert "example.in[0]" in result.stderr and "30" in result.stderr
    assert "example.out -> example.out.shadow (redirected)" in result.stderr
    assert "example.double.dlq (LIVE topic)" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == NOTHING_DONE_LINE
    assert kafka.stored == [] and kafka.replays == [], "a preview stored a range or ran"


def test_replay_with_yes_runs_the_previewed_range(kafka: FakeKafka) -> None:
    result = invoke(*REPLAY, *WINDOW, *SHADOW, "--yes")
    assert result.exit_code == 0, result.output
    assert "nothing done" not in result.output
    assert kafka.stored == [RANGES]
    [run] = kafka.replays
    assert run["args"][2] == RANGES and run["args"][4] == {"example.out": "example.out.shadow"}
    assert "replay summary" in result.stderr


@pytest.mark.parametrize(("answer", "runs"), [("y\n", 1), ("n\n", 0), ("\n", 0), ("", 0)])
def test_replay_on_a_terminal_asks_and_acts_only_on_yes(
    kafka: FakeKafka, answer: str, runs: int
) -> None:
    kafka.tty = True
    result = invoke(*REPLAY, *WINDOW, *SHADOW, answer=answer)
    assert "Replay 55 records? [y/N]" in result.stderr
    assert len(kafka.replays) == len(kafka.stored) == runs
    if runs:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code == NOTHING_DONE, result.output
        assert "streamkit: nothing done" in result.stderr


def test_the_question_names_the_live_topics_and_the_whole_topic(kafka: FakeKafka) -> None:
    kafka.tty = True
    result = invoke(*REPLAY, "--whole-topic", "--to-live-topics", answer="n\n")
    assert result.exit_code == NOTHING_DONE, result.output
    assert (
        "Replay 55 records (every retained record), emitting to the LIVE topic(s) example.out?"
        in result.stderr
    )
    assert "example.out (LIVE topic)" in result.stderr


@pytest.mark.parametrize(
    ("args", "flags"),
    [
        ([*WINDOW], ["--to-live-topics"]),
        ([*SHADOW], ["--whole-topic"]),
        ([], ["--to-live-topics", "--whole-topic"]),
        (["--from", "0"], ["--to-live-topics"]),
    ],
    ids=["live-topic", "whole-topic", "both", "from-only-is-a-range"],
)
@pytest.mark.parametrize("yes", [[], ["--yes"]], ids=["no-yes", "yes"])
def test_replay_refuses_live_topics_and_the_whole_topic_unless_told(
    kafka: FakeKafka, args: list[str], flags: list[str], yes: list[str]
) -> None:
    result = invoke(*REPLAY, *args, *yes)
    assert result.exit_code == 2, result.output
    for flag in flags:
        assert f"pass {flag} to mean it" in result.stderr
    if "--to-live-topics" in flags:
        assert "live topic(s) example.out" in result.stderr
        assert "--redirect example.out=DST" in result.stderr
    assert kafka.connected == 0, "refused after connecting"
    assert kafka.replays == []
    told = invoke(*REPLAY, *args, *yes, *flags)
    assert told.exit_code == (0 if yes else NOTHING_DONE), told.output


def test_a_redirect_of_a_topic_the_agent_never_writes_is_refused_before_connecting(
    kafka: FakeKafka,
) -> None:
    result = invoke(*REPLAY, *WINDOW, "--redirect", "example.typo=x", "--to-live-topics")
    assert result.exit_code == 2, result.output
    assert "agent double does not write to example.typo" in result.stderr
    assert kafka.connected == 0


def test_replay_dry_run_previews_says_what_a_run_needs_and_exits_0(kafka: FakeKafka) -> None:
    result = invoke(*REPLAY, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "example.out (LIVE topic)" in result.stderr
    assert "a run needs --to-live-topics" in result.stderr
    assert "a run needs --whole-topic" in result.stderr
    assert "nothing done" not in result.stderr
    assert kafka.stored == [] and kafka.replays == []


def test_redrive_without_yes_and_no_terminal_counts_and_sends_nothing(kafka: FakeKafka) -> None:
    result = invoke(*REDRIVE)
    assert result.exit_code == NOTHING_DONE, result.output
    assert "example.double.dlq: 3 matched, would send 3;" in result.stdout
    assert "  -> example.in: 3" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == NOTHING_DONE_LINE
    assert [call["dry_run"] for call in kafka.redrives] == [True]


def test_redrive_with_yes_sends_at_once_at_the_default_rate(kafka: FakeKafka) -> None:
    result = invoke(*REDRIVE, "--yes")
    assert result.exit_code == 0, result.output
    assert "example.double.dlq: 3 matched, sent 3;" in result.stdout
    [call] = kafka.redrives
    assert call["dry_run"] is False and call["rate"] == 100.0 and call["stop_at"] is None


def test_redrive_on_a_terminal_sends_what_it_counted_after_a_yes(kafka: FakeKafka) -> None:
    kafka.tty = True
    result = invoke(*REDRIVE, "--rate", "none", answer="y\n")
    assert result.exit_code == 0, result.output
    assert "Send these 3 dead letters back (no rate limit)? [y/N]" in result.stderr
    dry, real = kafka.redrives
    assert dry["dry_run"] and not real["dry_run"]
    # Held to the offsets the preview read to: what arrived since is not sent.
    assert real["stop_at"] == {0: 7, 1: 4} and real["rate"] is None


def test_redrive_on_a_terminal_answered_no_sends_nothing(kafka: FakeKafka) -> None:
    kafka.tty = True
    result = invoke(*REDRIVE, answer="n\n")
    assert result.exit_code == NOTHING_DONE, result.output
    assert "(at most 100/s, about 0 s)" in result.stderr
    assert [call["dry_run"] for call in kafka.redrives] == [True]


def test_redrive_dry_run_counts_once_and_exits_0(kafka: FakeKafka) -> None:
    result = invoke(*REDRIVE, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would send 3" in result.stdout and "nothing done" not in result.stderr
    assert [call["dry_run"] for call in kafka.redrives] == [True]


@pytest.mark.parametrize(
    ("command", "args", "rate"),
    [
        ("redrive", [], 100.0),
        ("redrive", ["--rate", "none"], None),
        ("redrive", ["--rate", "2000/s"], 2000.0),
        ("replay", [], None),
        ("replay", ["--rate", "None"], None),
    ],
)
def test_redrive_has_a_default_rate_and_none_lifts_it(
    command: str, args: list[str], rate: float | None
) -> None:
    if command == "redrive":
        ctx = streamkit.cli_dlq.dlq_redrive.make_context("redrive", [*REDRIVE[2:], *args])
    else:
        ctx = streamkit.cli.replay.make_context("replay", [*REPLAY[1:], *args])
    assert ctx.params["rate"] == rate


def test_redrive_prints_progress_every_5_s_when_stderr_is_no_terminal(
    kafka: FakeKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `kubectl exec` without -t: no bar, so a long redrive would say nothing until it ends.
    clock: Callable[[], float] = lambda: kafka.now  # noqa: E731
    monkeypatch.setattr(render, "Every", functools.partial(render.Every, clock=clock))
    kafka.steps = [(0.0, 100), (4.0, 100), (1.0, 100), (1.0, 100)]
    sent = invoke(*REDRIVE, "--yes")
    assert sent.exit_code == 0, sent.output
    assert sent.stderr.splitlines() == [
        "redriving example.double.dlq: 100 dead letters read",
        "redriving example.double.dlq: 300 dead letters read",
    ]
    assert "sent 3" in sent.stdout  # the summary stays on stdout, for scripts
    kafka.tty = True  # asks first: the preview counts, then the run knows how far it goes
    asked = invoke(*REDRIVE, answer="y\n")
    assert asked.exit_code == 0, asked.output
    lines = [line for line in asked.stderr.splitlines() if "dead letters read" in line]
    assert lines == [
        "counting example.double.dlq: 100 dead letters read",
        "counting example.double.dlq: 300 dead letters read",
        "redriving example.double.dlq: 100 of 400 dead letters read",
        "redriving example.double.dlq: 300 of 400 dead letters read",
    ]


def test_every_is_due_at_once_then_once_per_period() -> None:
    now = [0.0]
    every = render.Every(5.0, clock=lambda: now[0])
    seen = []
    for step in (0.0, 4.9, 0.1, 1.0, 6.0):
        now[0] += step
        seen.append(every.due())
    assert seen == [True, False, True, False, True]


# --- dlq show --no-values ---------------------------------------------------

PII = ("alice@example.com", "4111-1111", "cust-7")


@pytest.fixture
def one_dead_letter(monkeypatch: pytest.MonkeyPatch) -> None:
    """``summarize`` returns one sample whose key, value and own header hold personal data."""
    record = DeadLetterRecord(
        partition=0,
        offset=5,
        timestamp_ms=1_700_000_000_000,
        key=PII[0].encode(),
        value=f'{{"card": "{PII[1]}"}}'.encode(),
        headers=[
            ("customer", PII[2].encode()),
            (H_EXCEPTION, b"builtins.KeyError"),
            (H_MESSAGE, b"'price'"),
            (H_TOPIC, b"example.in"),
            (H_PARTITION, b"0"),
            (H_OFFSET, b"41"),
        ],
    )
    summary = DeadLetterSummary("example.double.dlq")
    summary.add(record, samples=3)
    monkeypatch.setattr(streamkit.cli_dlq, "connect", lambda *_a: object())
    monkeypatch.setattr(dlq_ops, "summarize", lambda *_a, **_k: summary)


@pytest.mark.usefixtures("one_dead_letter")
@pytest.mark.parametrize("as_json", [False, True], ids=["tables", "json"])
def test_dlq_show_no_values_hides_keys_values_and_record_headers(as_json: bool) -> None:
    show = ["dlq", "show", "example.double.dlq", *(["--json"] if as_json else [])]
    shown = invoke(*show)
    assert shown.exit_code == 0, shown.output
    assert PII[0] in shown.stdout and PII[1] in shown.stdout  # by default, as before
    hidden = invoke(*show, "--no-values")
    assert hidden.exit_code == 0, hidden.output
    for text in PII:
        assert text not in hidden.stdout
    # What failed and where stays: that is what on call needs.
    assert "KeyError" in hidden.stdout and "example.in[0]@41" in hidden.stdout
    if as_json:
        [sample] = json.loads(hidden.stdout)["samples"]
        assert "key" not in sample and "value" not in sample
        assert set(sample["headers"]) == {H_EXCEPTION, H_MESSAGE, H_TOPIC, H_PARTITION, H_OFFSET}


def test_the_help_and_the_docs_name_the_real_checkpoint_interval() -> None:
    # What an interrupted redrive sends again is the records since the last commit.
    every = f"{dlq_ops.CHECKPOINT_EVERY} records sent"
    assert every in " ".join((streamkit.cli_dlq.dlq_redrive.help or "").split())
    failures = (ROOT / "docs" / "failures.md").read_text(encoding="utf-8")
    assert every in " ".join(failures.split())
