"""The pipeline as a graph: topics, agents and timers, drawn as Mermaid or Graphviz DOT.

Pure and deterministic: the same declarations give byte-identical text, so
a rendered graph can be committed to docs and checked in CI. Nodes and edges
are sorted, never taken in declaration order.

The graph is bipartite: every edge joins one agent and one topic, either
``in`` (the topic feeds the agent) or ``out`` (the agent writes to it). Each
edge also has a ``kind``; the renderers draw ``consumes`` and ``emits`` as
solid arrows and any other kind as a dashed arrow labelled with it.

Edges come from :data:`EDGE_RULES`, one function per kind of relation:
``consumes`` and ``emits`` from the declarations, ``dead_letter`` (agent →
its dead-letter topic), ``retry`` (agent ⇄ each delayed-retry tier, which
the agent both writes and reads) and ``table_<name>`` (agent → the table's
changelog). Another kind is one more rule appended
there, or passed as ``extra_edges``::

    def audit_edges(app: App, agent: Agent) -> Iterator[Edge]:
        yield Edge(agent.name, "out", "audit", f"{app.name}.audit")

Topics an edge names but the app does not declare still get a node.

Timers (``@app.timer`` and ``@app.crontab``) are nodes of their own, drawn
as hexagons labelled with their schedule. A timer reads no topic, so it is
no part of the agent-topic edges above (nor of :func:`consumed_topics`):
each :class:`TimerNode` carries the topics it emits to, drawn as solid
arrows from the timer.

Example::

    print(render_mermaid(build_graph(app)))
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from streamkit.agent import Agent
from streamkit.app import App
from streamkit.timers import Timer
from streamkit.topics import SerdeSpec, Topic

Direction = Literal["in", "out"]
Format = Literal["mermaid", "dot"]
FORMATS: tuple[Format, ...] = ("mermaid", "dot")

# Kinds drawn as the main data flow; every other kind is drawn dashed.
_MAIN_KINDS = frozenset({"consumes", "emits"})


@dataclass(frozen=True, slots=True, order=True)
class TopicNode:
    """A topic in the graph.

    Attributes:
        name: The Kafka topic name.
        key_serde: The key serde's name; empty for a topic the app does not declare.
        value_serde: The value serde's name; empty for a topic the app does not declare.
    """

    name: str
    key_serde: str = ""
    value_serde: str = ""


@dataclass(frozen=True, slots=True, order=True)
class TimerNode:
    """A timer or crontab in the graph.

    Attributes:
        name: The timer's name.
        schedule: ``every 30s``, or ``cron */5 * * * * (UTC)``.
        emits: The topics it may emit to, sorted.
    """

    name: str
    schedule: str
    emits: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Edge:
    """One arrow between an agent and a topic.

    Graphs sort edges by agent, inputs before outputs, the main flow
    (``consumes``, ``emits``) before other kinds, then by kind and topic.

    Attributes:
        agent: The agent's name.
        direction: ``in`` for topic → agent, ``out`` for agent → topic.
        kind: ``consumes``, ``emits``, or a later kind such as ``dead_letter``.
        topic: The topic's name.
    """

    agent: str
    direction: Direction
    kind: str
    topic: str


@dataclass(frozen=True, slots=True)
class Graph:
    """A sorted pipeline graph, ready to render.

    Attributes:
        app: The app name (the graph's title).
        topics: Topic nodes sorted by name, including unconnected ones.
        agents: Agent names, sorted.
        edges: Edges, sorted (see :class:`Edge`).
        timers: Timer nodes sorted by name, each with its emit targets.
    """

    app: str
    topics: tuple[TopicNode, ...]
    agents: tuple[str, ...]
    edges: tuple[Edge, ...]
    timers: tuple[TimerNode, ...] = ()


EdgeRule = Callable[[App, Agent], Iterable[Edge]]


def serde_name(spec: SerdeSpec) -> str:
    """The name a serde was declared with (a spec string, or a codec's ``name``)."""
    return spec if isinstance(spec, str) else str(getattr(spec, "name", type(spec).__name__))


def consumes_edges(app: App, agent: Agent) -> Iterator[Edge]:
    """The agent's input topic."""
    yield Edge(agent.name, "in", "consumes", agent.source.name)


def emits_edges(app: App, agent: Agent) -> Iterator[Edge]:
    """Every topic the agent may emit to, resolved as the runtime resolves them."""
    for topic in app.emit_targets(agent):
        yield Edge(agent.name, "out", "emits", topic.name)


def dead_letter_edges(app: App, agent: Agent) -> Iterator[Edge]:
    """The agent's dead-letter topic, when dead-lettering is on."""
    topic = app.dead_letter_topic(agent)
    if topic is not None:
        yield Edge(agent.name, "out", "dead_letter", topic.name)


def retry_edges(app: App, agent: Agent) -> Iterator[Edge]:
    """Each delayed-retry tier: the agent writes failed records there and reads them back."""
    return _round_trip_edges(agent, "retry", app.retry_topics(agent))


def table_edges(app: App, agent: Agent) -> Iterator[Edge]:
    """Each table's changelog: the agent writes it at checkpoints; restores read it back."""
    for table in agent.tables:
        # A window's store is named after its window, so its edge says what it is.
        kind = "window_store" if table.windowed else f"table_{table.name}"
        yield Edge(agent.name, "out", kind, table.changelog_name)


def delay_edges(app: App, agent: Agent) -> Iterator[Edge]:
    """Each delay tier: records sent with ``delay=`` wait there, then the agent runs them."""
    return _round_trip_edges(agent, "delay", app.delay_topics(agent))


def _round_trip_edges(agent: Agent, kind: str, tiers: Iterable[Topic]) -> Iterator[Edge]:
    # A tier is a topic the agent both writes and reads back (the graph
    # sorts the edges, so the order of the two does not matter).
    for topic in tiers:
        yield Edge(agent.name, "in", kind, topic.name)
        yield Edge(agent.name, "out", kind, topic.name)


def join_edges(app: App, agent: Agent) -> Iterator[Edge]:
    """Each source table the agent joins: it reads the table's topic, partition by partition."""
    for table in agent.joins:
        yield Edge(agent.name, "in", f"joins_{table.name}", table.source.name)


EDGE_RULES: tuple[EdgeRule, ...] = (
    consumes_edges,
    emits_edges,
    dead_letter_edges,
    retry_edges,
    table_edges,
    join_edges,
    delay_edges,
)


def timer_schedule(timer: Timer) -> str:
    """``every 30s`` (``every 0.5s``) for an interval, ``cron <spec> (UTC)`` for a crontab."""
    if timer.every is None:
        return f"cron {timer.cron} (UTC)"
    # float(...): every=30 arrives as an int, which has no is_integer() before 3.12.
    every = float(timer.every)
    return f"every {int(every) if every.is_integer() else every}s"


def timer_node(app: App, timer: Timer) -> TimerNode:
    """The timer's node, its emit targets resolved as the scheduler resolves them."""
    targets = app.resolve_emits(f"timer {timer.name}", timer.emits)
    return TimerNode(timer.name, timer_schedule(timer), tuple(sorted({t.name for t in targets})))


def _edge_order(edge: Edge) -> tuple[str, str, bool, str, str]:
    return (edge.agent, edge.direction, edge.kind not in _MAIN_KINDS, edge.kind, edge.topic)


def consumed_topics(graph: Graph) -> tuple[str, ...]:
    """Every topic the app's consumer group reads (sources and retry tiers), sorted."""
    return tuple(sorted({e.topic for e in graph.edges if e.direction == "in"}))


def build_graph(app: App, extra_edges: Sequence[EdgeRule] = ()) -> Graph:
    """Collect the app's topics, agents and edges, sorted.

    Args:
        app: The app whose declarations to draw; nothing connects to Kafka.
        extra_edges: Rules run after :data:`EDGE_RULES`, for relations the
            core does not know yet.

    Raises:
        DeclarationError: An agent or a timer emits to a topic the app does
            not declare (the same check ``streamkit run`` makes at start).
    """
    edges = {
        edge
        for agent in app.agents.values()
        for rule in (*EDGE_RULES, *extra_edges)
        for edge in rule(app, agent)
    }
    topics = {
        name: TopicNode(name, serde_name(t.key_serde), serde_name(t.value_serde))
        for name, t in app.topics.items()
    }
    for edge in edges:
        topics.setdefault(edge.topic, TopicNode(edge.topic))
    return Graph(
        app=app.name,
        topics=tuple(sorted(topics.values())),
        agents=tuple(sorted(app.agents)),
        edges=tuple(sorted(edges, key=_edge_order)),
        timers=tuple(sorted(timer_node(app, t) for t in app.timers.values())),
    )


def render(graph: Graph, fmt: Format = "mermaid") -> str:
    """Render ``graph`` as ``mermaid`` or ``dot`` text ending in a newline."""
    if fmt == "dot":
        return render_dot(graph)
    return render_mermaid(graph)


def _topic_caption(topic: TopicNode) -> str:
    if not topic.value_serde:
        return "(not declared)"
    return f"key: {topic.key_serde}, value: {topic.value_serde}"


def _kind_label(kind: str) -> str:
    return kind.replace("_", " ")


# --- Mermaid -----------------------------------------------------------------

_MERMAID_ESCAPES = {'"': "#quot;", "<": "#lt;", ">": "#gt;"}


def _mermaid_text(text: str) -> str:
    return "".join(_MERMAID_ESCAPES.get(ch, ch) for ch in text)


def _mermaid_ids(prefix: str, names: Iterable[str]) -> dict[str, str]:
    """Readable node ids; names that clean up to the same id get ``_2``, ``_3``...

    Mermaid ids cannot hold ``.`` or ``-``, which topic names often do. The
    names arrive sorted, so the suffixes are deterministic too.
    """
    ids: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        base = prefix + re.sub(r"[^A-Za-z0-9]", "_", name)
        candidate, n = base, 1
        while candidate in taken:
            n += 1
            candidate = f"{base}_{n}"
        taken.add(candidate)
        ids[name] = candidate
    return ids


def render_mermaid(graph: Graph) -> str:
    """A Mermaid ``flowchart``: topics as cylinders, agents as rounded boxes, timers as hexagons."""
    topic_ids = _mermaid_ids("t_", (t.name for t in graph.topics))
    agent_ids = _mermaid_ids("a_", graph.agents)
    # "tm_" cannot collide with "t_": the second character differs.
    timer_ids = _mermaid_ids("tm_", (t.name for t in graph.timers))
    lines = ["flowchart LR"]
    for topic in graph.topics:
        label = f"{topic.name}<br/>{_mermaid_text(_topic_caption(topic))}"
        lines.append(f'    {topic_ids[topic.name]}[("{label}")]')
    for agent in graph.agents:
        lines.append(f'    {agent_ids[agent]}("{_mermaid_text(agent)}")')
    for timer in graph.timers:
        label = f"{_mermaid_text(timer.name)}<br/>{_mermaid_text(timer.schedule)}"
        lines.append(f'    {timer_ids[timer.name]}{{{{"{label}"}}}}')
    for edge in graph.edges:
        ends = (topic_ids[edge.topic], agent_ids[edge.agent])
        src, dst = ends if edge.direction == "in" else ends[::-1]
        arrow = "-->" if edge.kind in _MAIN_KINDS else f"-. {_kind_label(edge.kind)} .->"
        lines.append(f"    {src} {arrow} {dst}")
    for timer in graph.timers:
        for target in timer.emits:
            lines.append(f"    {timer_ids[timer.name]} --> {topic_ids[target]}")
    return "\n".join(lines) + "\n"


# --- Graphviz DOT --------------------------------------------------------------


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render_dot(graph: Graph) -> str:
    """A Graphviz ``digraph``: topics as cylinders, agents as rounded boxes, timers as hexagons."""
    lines = [
        f"digraph {_dot_quote(graph.app)} {{",
        "    rankdir=LR;",
        '    node [fontname="Helvetica"];',
    ]
    for topic in graph.topics:
        label = _dot_quote(f"{topic.name}\n{_topic_caption(topic)}")
        lines.append(f"    {_dot_quote('topic:' + topic.name)} [shape=cylinder, label={label}];")
    for agent in graph.agents:
        node = _dot_quote("agent:" + agent)
        lines.append(f"    {node} [shape=box, style=rounded, label={_dot_quote(agent)}];")
    for timer in graph.timers:
        label = _dot_quote(f"{timer.name}\n{timer.schedule}")
        lines.append(f"    {_dot_quote('timer:' + timer.name)} [shape=hexagon, label={label}];")
    for edge in graph.edges:
        ends = (_dot_quote("topic:" + edge.topic), _dot_quote("agent:" + edge.agent))
        src, dst = ends if edge.direction == "in" else ends[::-1]
        attrs = (
            ""
            if edge.kind in _MAIN_KINDS
            else f" [style=dashed, label={_dot_quote(_kind_label(edge.kind))}]"
        )
        lines.append(f"    {src} -> {dst}{attrs};")
    for timer in graph.timers:
        for target in timer.emits:
            lines.append(
                f"    {_dot_quote('timer:' + timer.name)} -> {_dot_quote('topic:' + target)};"
            )
    lines.append("}")
    return "\n".join(lines) + "\n"
