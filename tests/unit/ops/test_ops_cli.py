"""The ops commands' wiring and rendering, where no broker is needed."""

from __future__ import annotations

import itertools
import threading

import pytest
from click.testing import CliRunner
from rich.console import Console

from pipelines import orders
from streamkit import BrokerError, Topic
from streamkit.cli import main, replay
from streamkit.cli_dlq import dlq_redrive
from streamkit.ops import render
from streamkit.ops.describe import ObservedTopic, check_topics
from streamkit.ops.lag import Owner, build_report
from streamkit.ops.topology import build_graph, render_dot, render_mermaid


def text_of(renderable: object) -> str:
    console = Console(width=160, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_graph_command_prints_the_rendering(fmt: str) -> None:
    result = CliRunner().invoke(main, ["graph", "pipelines.orders:app", "--format", fmt])
    assert result.exit_code == 0, result.output
    graph = build_graph(orders.app)
    assert result.output == (render_dot(graph) if fmt == "dot" else render_mermaid(graph))


def test_graph_defaults_to_mermaid_and_needs_no_broker() -> None:
    result = CliRunner().invoke(
        main, ["graph", "pipelines.orders:app"], env={"STREAMKIT_BROKERS": ""}
    )
    assert result.exit_code == 0
    assert result.output.startswith("flowchart LR\n")


def test_lag_needs_an_app_or_a_group() -> None:
    result = CliRunner().invoke(main, ["lag"])
    assert result.exit_code == 2
    assert "give MODULE:APP, or --group NAME" in result.output


def test_watch_before_the_app_gets_a_hint() -> None:
    result = CliRunner().invoke(main, ["lag", "--watch", "pipelines.orders:app"])
    assert result.exit_code == 2
    assert "put --watch after MODULE:APP or write --watch=SECONDS" in result.output


def test_watch_rejects_zero() -> None:
    result = CliRunner().invoke(main, ["lag", "pipelines.orders:app", "--watch", "0"])
    assert result.exit_code == 2


# Reaches nothing: nobody listens on port 1, and every case stops before connecting.
UNREACHABLE = {"STREAMKIT_BROKERS": "127.0.0.1:1"}
REPLAY = ["replay", "pipelines.example:app", "--agent", "double"]
REDRIVE = ["dlq", "redrive", "example.double.dlq"]


@pytest.mark.parametrize("value", ["0,x", "x", "0,,3", "-1", "1.5", ""])
def test_replay_partitions_must_be_partition_numbers(value: str) -> None:
    result = CliRunner().invoke(main, [*REPLAY, "--partitions", value], env=UNREACHABLE)
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--partitions'" in result.output
    assert "e.g. 0,3" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_replay_partitions_are_parsed_before_connecting() -> None:
    ctx = replay.make_context("replay", [*REPLAY[1:], "--partitions", " 3,0 ,3"])
    assert ctx.params["partitions"] == [0, 3]


@pytest.mark.parametrize(
    ("env", "group"),
    [({}, "example"), ({"STREAMKIT_GROUP_ID": "orders-live"}, "orders-live")],
    ids=["app name", "STREAMKIT_GROUP_ID"],
)
def test_replay_refuses_the_live_group_before_connecting(env: dict[str, str], group: str) -> None:
    result = CliRunner().invoke(main, [*REPLAY, "--group", group], env={**UNREACHABLE, **env})
    assert result.exit_code == 2, result.output
    assert f"{group} is the app's live consumer group" in result.output
    assert "would overwrite the live pipeline's offsets" in result.output
    assert "cannot reach" not in result.output.lower()


@pytest.mark.parametrize("command", [REPLAY, REDRIVE], ids=["replay", "redrive"])
@pytest.mark.parametrize("value", ["-5", "0", "0/s", "fast", "nan", "inf", "-5/s", "500/min"])
def test_rate_must_be_a_positive_number_per_second(command: list[str], value: str) -> None:
    result = CliRunner().invoke(main, [*command, "--rate", value], env=UNREACHABLE)
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--rate'" in result.output
    assert "records per second above 0" in result.output


@pytest.mark.parametrize(
    ("value", "rate"), [("500", 500.0), ("500/s", 500.0), ("2.5", 2.5), ("0.5/s", 0.5)]
)
def test_rate_takes_the_documented_formats(value: str, rate: float) -> None:
    # `--rate 500/s` is what the chart's backfill Job renders (docs/deploy.md).
    for command, args in ((replay, REPLAY[1:]), (dlq_redrive, REDRIVE[2:])):
        ctx = command.make_context(str(command.name), [*args, "--rate", value])
        assert ctx.params["rate"] == rate


def test_lag_table_shows_dashes_subtotals_and_the_no_commit_rule() -> None:
    report = build_report(
        "orders",
        {"orders.raw": 2, "audit": 1},
        committed={("orders.raw", 0): 5},
        watermarks={("orders.raw", 0): (0, 7), ("orders.raw", 1): (0, 4), ("audit", 0): (0, 1)},
        owners={("orders.raw", 0): Owner("orders-a-1", "10.0.0.7", "m")},
        state="stable",
        members=1,
        missing_topics=["gone"],
    )
    text = text_of(render.lag_table(report))
    assert "group orders (stable, 1 member)" in text
    rows = [line.split("│")[1:-1] for line in text.splitlines() if line.count("│") == 7]
    cells = [[c.strip() for c in row] for row in rows]
    assert cells == [
        ["audit", "0", "-", "1", "1", "-"],
        ["audit total", "", "", "", "1", ""],
        ["orders.raw", "0", "5", "7", "2", "orders-a-1@10.0.0.7"],
        ["orders.raw", "1", "-", "4", "4", "-"],
        ["orders.raw total", "", "", "", "6", ""],
        ["total", "", "", "", "7", ""],
    ]
    assert "no commit: lag counted from the log start (auto.offset.reset=earliest)" in text
    assert "topic gone does not exist" in text


def test_empty_lag_report_says_so() -> None:
    report = build_report("nobody", {}, committed={}, watermarks={})
    assert "no committed offsets to report" in text_of(render.lag_table(report))


def test_describe_table_flags_mismatches() -> None:
    report = check_topics(
        "shop",
        [Topic("a", partitions=4), Topic("b")],
        {"a": ObservedTopic("a", 2, 1, {"cleanup.policy": "delete", "retention.ms": "1"})},
    )
    text = text_of(render.describe_table(report))
    assert "mismatch" in text and "missing" in text
    assert "a: partitions is 2, declared 4" in text
    assert "b: does not exist" in text


def test_compact_json_is_one_line() -> None:
    assert render.to_json({"a": [1, 2]}, compact=True) == '{"a":[1,2]}'


def test_repeat_ends_quietly_on_ctrl_c() -> None:
    calls = itertools.count(1)

    def tick() -> None:
        if next(calls) == 3:
            raise KeyboardInterrupt

    render.repeat(tick, 0.0)
    assert next(calls) == 4


def test_repeat_reports_broker_errors_and_carries_on() -> None:
    stop = threading.Event()
    errors: list[str] = []
    calls = itertools.count(1)

    def tick() -> None:
        n = next(calls)
        if n == 1:
            raise BrokerError("broker away")
        if n == 2:
            stop.set()

    render.repeat(tick, 0.0, stop=stop, on_error=lambda exc: errors.append(str(exc)))
    assert errors == ["broker away"]


def test_repeat_without_error_handler_raises() -> None:
    def tick() -> None:
        raise BrokerError("broker away")

    with pytest.raises(BrokerError):
        render.repeat(tick, 0.0)
