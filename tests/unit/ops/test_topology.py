"""``streamkit graph``: exact Mermaid and DOT text, sorted whatever the declaration order."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines import orders
from streamkit import Agent, App, DeclarationError, Topic
from streamkit.ops.topology import (
    Edge,
    build_graph,
    consumed_topics,
    render,
    render_dot,
    render_mermaid,
)
from streamkit.policies import RetryPolicy

ROOT = Path(__file__).resolve().parents[3]


def shop_app(reverse: bool = False) -> App:
    """Two agents in a chain plus an unused topic; ``reverse`` declares everything backwards."""
    app = App("shop")
    specs: list[tuple[str, dict[str, Any]]] = [
        ("shop.in", {"value_serde": "json", "partitions": 2}),
        ("shop.mid", {"value_serde": "str"}),
        ("shop.out", {"value_serde": "bytes", "key_serde": "bytes"}),
        ("shop.unused", {}),
    ]
    topics = {name: app.topic(name, **kw) for name, kw in (specs[::-1] if reverse else specs)}

    def clean(value: Any) -> Any:
        return value

    def pack(value: Any) -> Any:
        return value

    pack_emits: list[Topic | str] = [topics["shop.out"], "shop.unused"]
    agents: list[tuple[Callable[[Any], Any], Topic, list[Topic | str]]] = [
        (clean, topics["shop.in"], [topics["shop.mid"]]),
        (pack, topics["shop.mid"], pack_emits[::-1] if reverse else pack_emits),
    ]
    for fn, source, emits in agents[::-1] if reverse else agents:
        app.agent(source, emits=emits)(fn)
    return app


SHOP_MERMAID = """\
flowchart LR
    t_shop_clean_dlq[("shop.clean.dlq<br/>key: bytes, value: bytes")]
    t_shop_in[("shop.in<br/>key: str, value: json")]
    t_shop_mid[("shop.mid<br/>key: str, value: str")]
    t_shop_out[("shop.out<br/>key: bytes, value: bytes")]
    t_shop_pack_dlq[("shop.pack.dlq<br/>key: bytes, value: bytes")]
    t_shop_unused[("shop.unused<br/>key: str, value: json")]
    a_clean("clean")
    a_pack("pack")
    t_shop_in --> a_clean
    a_clean --> t_shop_mid
    a_clean -. dead letter .-> t_shop_clean_dlq
    t_shop_mid --> a_pack
    a_pack --> t_shop_out
    a_pack --> t_shop_unused
    a_pack -. dead letter .-> t_shop_pack_dlq
"""

SHOP_DOT = """\
digraph "shop" {
    rankdir=LR;
    node [fontname="Helvetica"];
    "topic:shop.clean.dlq" [shape=cylinder, label="shop.clean.dlq\\nkey: bytes, value: bytes"];
    "topic:shop.in" [shape=cylinder, label="shop.in\\nkey: str, value: json"];
    "topic:shop.mid" [shape=cylinder, label="shop.mid\\nkey: str, value: str"];
    "topic:shop.out" [shape=cylinder, label="shop.out\\nkey: bytes, value: bytes"];
    "topic:shop.pack.dlq" [shape=cylinder, label="shop.pack.dlq\\nkey: bytes, value: bytes"];
    "topic:shop.unused" [shape=cylinder, label="shop.unused\\nkey: str, value: json"];
    "agent:clean" [shape=box, style=rounded, label="clean"];
    "agent:pack" [shape=box, style=rounded, label="pack"];
    "topic:shop.in" -> "agent:clean";
    "agent:clean" -> "topic:shop.mid";
    "agent:clean" -> "topic:shop.clean.dlq" [style=dashed, label="dead letter"];
    "topic:shop.mid" -> "agent:pack";
    "agent:pack" -> "topic:shop.out";
    "agent:pack" -> "topic:shop.unused";
    "agent:pack" -> "topic:shop.pack.dlq" [style=dashed, label="dead letter"];
}
"""

ORDERS_MERMAID = """\
flowchart LR
    t_orders_enriched[("orders.enriched<br/>key: str, value: json")]
    t_orders_hourly_revenue_windows_changelog[("orders.hourly_revenue-windows.changelog<br/>key: str, value: json")]
    t_orders_hourly_revenue_dlq[("orders.hourly_revenue.dlq<br/>key: bytes, value: bytes")]
    t_orders_hourly_revenue_late[("orders.hourly_revenue.late<br/>key: str, value: json")]
    t_orders_hourly_revenue_repartition[("orders.hourly_revenue.repartition<br/>key: str, value: json")]
    t_orders_hourly_revenue_repartition_dlq[("orders.hourly_revenue.repartition.dlq<br/>key: bytes, value: bytes")]
    t_orders_invalid[("orders.invalid<br/>key: str, value: json")]
    t_orders_process_order_dlq[("orders.process_order.dlq<br/>key: bytes, value: bytes")]
    t_orders_rates[("orders.rates<br/>key: str, value: json")]
    t_orders_raw[("orders.raw<br/>key: str, value: avro:shop.Order")]
    t_orders_revenue_hourly[("orders.revenue.hourly<br/>key: str, value: json")]
    t_orders_review[("orders.review<br/>key: str, value: json")]
    a_hourly_revenue("hourly_revenue")
    a_hourly_revenue_repartition("hourly_revenue.repartition")
    a_process_order("process_order")
    t_orders_hourly_revenue_repartition --> a_hourly_revenue
    a_hourly_revenue --> t_orders_hourly_revenue_late
    a_hourly_revenue --> t_orders_revenue_hourly
    a_hourly_revenue -. dead letter .-> t_orders_hourly_revenue_dlq
    a_hourly_revenue -. window store .-> t_orders_hourly_revenue_windows_changelog
    t_orders_enriched --> a_hourly_revenue_repartition
    a_hourly_revenue_repartition --> t_orders_hourly_revenue_repartition
    a_hourly_revenue_repartition -. dead letter .-> t_orders_hourly_revenue_repartition_dlq
    t_orders_raw --> a_process_order
    a_process_order --> t_orders_enriched
    a_process_order --> t_orders_invalid
    a_process_order --> t_orders_review
    a_process_order -. dead letter .-> t_orders_process_order_dlq
"""  # noqa: E501

ORDERS_DOT = """\
digraph "orders" {
    rankdir=LR;
    node [fontname="Helvetica"];
    "topic:orders.enriched" [shape=cylinder, label="orders.enriched\\nkey: str, value: json"];
    "topic:orders.hourly_revenue-windows.changelog" [shape=cylinder, label="orders.hourly_revenue-windows.changelog\\nkey: str, value: json"];
    "topic:orders.hourly_revenue.dlq" [shape=cylinder, label="orders.hourly_revenue.dlq\\nkey: bytes, value: bytes"];
    "topic:orders.hourly_revenue.late" [shape=cylinder, label="orders.hourly_revenue.late\\nkey: str, value: json"];
    "topic:orders.hourly_revenue.repartition" [shape=cylinder, label="orders.hourly_revenue.repartition\\nkey: str, value: json"];
    "topic:orders.hourly_revenue.repartition.dlq" [shape=cylinder, label="orders.hourly_revenue.repartition.dlq\\nkey: bytes, value: bytes"];
    "topic:orders.invalid" [shape=cylinder, label="orders.invalid\\nkey: str, value: json"];
    "topic:orders.process_order.dlq" [shape=cylinder, label="orders.process_order.dlq\\nkey: bytes, value: bytes"];
    "topic:orders.rates" [shape=cylinder, label="orders.rates\\nkey: str, value: json"];
    "topic:orders.raw" [shape=cylinder, label="orders.raw\\nkey: str, value: avro:shop.Order"];
    "topic:orders.revenue.hourly" [shape=cylinder, label="orders.revenue.hourly\\nkey: str, value: json"];
    "topic:orders.review" [shape=cylinder, label="orders.review\\nkey: str, value: json"];
    "agent:hourly_revenue" [shape=box, style=rounded, label="hourly_revenue"];
    "agent:hourly_revenue.repartition" [shape=box, style=rounded, label="hourly_revenue.repartition"];
    "agent:process_order" [shape=box, style=rounded, label="process_order"];
    "topic:orders.hourly_revenue.repartition" -> "agent:hourly_revenue";
    "agent:hourly_revenue" -> "topic:orders.hourly_revenue.late";
    "agent:hourly_revenue" -> "topic:orders.revenue.hourly";
    "agent:hourly_revenue" -> "topic:orders.hourly_revenue.dlq" [style=dashed, label="dead letter"];
    "agent:hourly_revenue" -> "topic:orders.hourly_revenue-windows.changelog" [style=dashed, label="window store"];
    "topic:orders.enriched" -> "agent:hourly_revenue.repartition";
    "agent:hourly_revenue.repartition" -> "topic:orders.hourly_revenue.repartition";
    "agent:hourly_revenue.repartition" -> "topic:orders.hourly_revenue.repartition.dlq" [style=dashed, label="dead letter"];
    "topic:orders.raw" -> "agent:process_order";
    "agent:process_order" -> "topic:orders.enriched";
    "agent:process_order" -> "topic:orders.invalid";
    "agent:process_order" -> "topic:orders.review";
    "agent:process_order" -> "topic:orders.process_order.dlq" [style=dashed, label="dead letter"];
}
"""  # noqa: E501


def test_small_app_as_mermaid() -> None:
    assert render_mermaid(build_graph(shop_app())) == SHOP_MERMAID


def test_small_app_as_dot() -> None:
    assert render_dot(build_graph(shop_app())) == SHOP_DOT


def test_orders_pipeline_as_mermaid() -> None:
    assert render(build_graph(orders.app), "mermaid") == ORDERS_MERMAID


def test_orders_pipeline_as_dot() -> None:
    assert render(build_graph(orders.app), "dot") == ORDERS_DOT


def test_declaration_order_does_not_change_the_output() -> None:
    forwards, backwards = build_graph(shop_app()), build_graph(shop_app(reverse=True))
    assert forwards == backwards
    assert render_mermaid(backwards) == SHOP_MERMAID


def test_operations_doc_shows_the_current_orders_graph() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    blocks = re.findall(r"```mermaid\n(.*?)```", doc, flags=re.S)
    assert ORDERS_MERMAID in blocks, "regenerate with: streamkit graph pipelines.orders:app"


def test_retry_tiers_are_read_and_written_by_their_agent() -> None:
    app = App("r")
    source = app.topic("r.in")

    @app.agent(source, retry=RetryPolicy(retry_topics=(60, 600)), dead_letter=False)
    def work(value: Any) -> None:
        return None

    graph = build_graph(app)
    assert render_mermaid(graph).endswith(
        "    t_r_in --> a_work\n"
        "    t_r_work_retry_600s -. retry .-> a_work\n"
        "    t_r_work_retry_60s -. retry .-> a_work\n"
        "    a_work -. retry .-> t_r_work_retry_600s\n"
        "    a_work -. retry .-> t_r_work_retry_60s\n"
    )
    assert consumed_topics(graph) == ("r.in", "r.work.retry.600s", "r.work.retry.60s")


def test_an_extra_edge_rule_draws_a_new_kind_dashed() -> None:
    def audit(app: App, agent: Agent) -> Iterator[Edge]:
        yield Edge(agent.name, "out", "audit_copy", f"{app.name}.audit")

    graph = build_graph(orders.app, extra_edges=[audit])
    mermaid = render_mermaid(graph)
    assert '    t_orders_audit[("orders.audit<br/>(not declared)")]\n' in mermaid
    assert "    a_process_order -. audit copy .-> t_orders_audit\n" in mermaid
    dot = render_dot(graph)
    edge = '"agent:process_order" -> "topic:orders.audit" [style=dashed, label="audit copy"];'
    assert edge in dot
    assert consumed_topics(graph) == (
        "orders.enriched",
        "orders.hourly_revenue.repartition",
        "orders.raw",
    )


def test_names_that_clean_up_alike_get_distinct_mermaid_ids() -> None:
    app = App("ids")
    dotted, underscored = app.topic("a.b"), app.topic("a_b")

    @app.agent(dotted, emits=[underscored])
    def move(value: Any) -> Any:
        return value

    mermaid = render_mermaid(build_graph(app))
    assert '    t_a_b[("a.b<br/>' in mermaid
    assert '    t_a_b_2[("a_b<br/>' in mermaid
    assert "    a_move --> t_a_b_2\n" in mermaid


def test_labels_are_escaped() -> None:
    class Codec:
        name = 'odd"<codec>'

        def serialize(self, value: Any) -> bytes:
            return b""

        def deserialize(self, data: bytes) -> Any:
            return data

    app = App("esc")
    source = app.topic("esc.in", value_serde=Codec())

    @app.agent(source)
    def sink(value: Any) -> None:
        return None

    graph = build_graph(app)
    assert "value: odd#quot;#lt;codec#gt;" in render_mermaid(graph)
    assert 'value: odd\\"<codec>"' in render_dot(graph)


def test_undeclared_emit_target_is_the_same_error_as_at_start() -> None:
    app = App("typo")
    source = app.topic("typo.in")

    @app.agent(source, emits=["typo.outt"])
    def forward(value: Any) -> Any:
        return value

    with pytest.raises(DeclarationError, match=r"emits to 'typo\.outt'"):
        build_graph(app)


def timer_app() -> App:
    """An interval timer and a crontab feeding topics, one of them read by an agent."""
    app = App("tick")
    beats = app.topic("tick.beats", value_serde="json")
    reports = app.topic("tick.reports", value_serde="json")

    @app.timer(every=30, emits=[beats])
    def heartbeat() -> Any:
        return {}

    @app.timer(every=0.5, emits=[])
    def poll() -> None:
        return None

    @app.crontab("*/5 * * * *", emits=["tick.reports", beats])
    def report() -> Any:
        return {}

    @app.agent(beats, emits=[reports], dead_letter=False)
    def count(value: Any) -> Any:
        return value

    return app


TIMER_MERMAID = """\
flowchart LR
    t_tick_beats[("tick.beats<br/>key: str, value: json")]
    t_tick_reports[("tick.reports<br/>key: str, value: json")]
    t_tick_timers[("tick.timers<br/>key: bytes, value: bytes")]
    a_count("count")
    tm_heartbeat{{"heartbeat<br/>every 30s"}}
    tm_poll{{"poll<br/>every 0.5s"}}
    tm_report{{"report<br/>cron */5 * * * * (UTC)"}}
    t_tick_beats --> a_count
    a_count --> t_tick_reports
    tm_heartbeat --> t_tick_beats
    tm_report --> t_tick_beats
    tm_report --> t_tick_reports
"""

TIMER_DOT = """\
digraph "tick" {
    rankdir=LR;
    node [fontname="Helvetica"];
    "topic:tick.beats" [shape=cylinder, label="tick.beats\\nkey: str, value: json"];
    "topic:tick.reports" [shape=cylinder, label="tick.reports\\nkey: str, value: json"];
    "topic:tick.timers" [shape=cylinder, label="tick.timers\\nkey: bytes, value: bytes"];
    "agent:count" [shape=box, style=rounded, label="count"];
    "timer:heartbeat" [shape=hexagon, label="heartbeat\\nevery 30s"];
    "timer:poll" [shape=hexagon, label="poll\\nevery 0.5s"];
    "timer:report" [shape=hexagon, label="report\\ncron */5 * * * * (UTC)"];
    "topic:tick.beats" -> "agent:count";
    "agent:count" -> "topic:tick.reports";
    "timer:heartbeat" -> "topic:tick.beats";
    "timer:report" -> "topic:tick.beats";
    "timer:report" -> "topic:tick.reports";
}
"""


def test_timers_are_hexagons_with_their_schedule_and_emit_edges_in_mermaid() -> None:
    assert render_mermaid(build_graph(timer_app())) == TIMER_MERMAID


def test_timers_are_hexagons_with_their_schedule_and_emit_edges_in_dot() -> None:
    assert render_dot(build_graph(timer_app())) == TIMER_DOT


def test_timer_emits_are_not_consumed_topics() -> None:
    assert consumed_topics(build_graph(timer_app())) == ("tick.beats",)


def test_undeclared_timer_emit_target_is_the_same_error_as_at_start() -> None:
    app = App("typo")

    @app.timer(every=1, emits=["typo.outt"])
    def tick() -> None:
        return None

    with pytest.raises(DeclarationError, match=r"timer tick emits to 'typo\.outt'"):
        build_graph(app)
