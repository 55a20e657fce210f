"""A worker made of plain values, shaped like ``streamkit.observability.state.WorkerView``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamkit.runtime.rebalance import RebalanceEvent
from streamkit.types import TopicPartition


@dataclass
class FakeTopic:
    name: str


@dataclass
class FakeAgent:
    name: str
    source: FakeTopic


@dataclass
class FakeEmitter:
    emitted: dict[str, int]


@dataclass
class FakeWindows:
    late: int = 0
    closed: int = 0


@dataclass
class FakeProcessor:
    agent: FakeAgent
    emitter: FakeEmitter | None
    windows: FakeWindows | None = None


@dataclass
class FakeRecovery:
    agent: FakeAgent
    retried: int = 0
    delayed: int = 0
    dead_lettered: int = 0
    skipped: int = 0


@dataclass
class FakeTicket:
    offset: int
    finished: bool = False


@dataclass
class FakeOffsets:
    tickets: list[FakeTicket] = field(default_factory=list)

    @property
    def in_flight(self) -> int:
        return len(self.tickets)

    def blocked_by(self) -> FakeTicket | None:
        return self.tickets[0] if self.tickets else None


@dataclass
class FakePartition:
    tp: TopicPartition
    processor: FakeProcessor
    offsets: FakeOffsets = field(default_factory=FakeOffsets)
    backlog: int = 0
    paused: bool = False


@dataclass
class FakeHandlers:
    budget: float = 30.0
    joined: bool = False
    member: str | None = None
    events: dict[RebalanceEvent, int] = field(
        default_factory=lambda: {"assign": 0, "revoke": 0, "lost": 0}
    )
    seconds: dict[RebalanceEvent, float] = field(
        default_factory=lambda: {"assign": 0.0, "revoke": 0.0, "lost": 0.0}
    )
    sync_commits: int = 0
    sync_commit_seconds: float = 0.0


@dataclass
class FakeFetcher:
    polls: int = 0


@dataclass
class FakeApp:
    name: str


@dataclass
class FakeRestore:
    table: str
    partition: int
    done: int
    remaining: int


@dataclass
class FakeTables:
    """Tables being restored, and the answer a lookup gives."""

    restoring_now: list[str] = field(default_factory=list)
    restored: list[FakeRestore] = field(default_factory=list)
    answer: tuple[int, dict[str, Any]] = (404, {"error": "no such key"})
    asked: list[tuple[str, str]] = field(default_factory=list)

    def restoring(self) -> list[str]:
        return self.restoring_now

    def restores(self) -> list[FakeRestore]:
        return self.restored

    def lookup(self, table: str, key: str, timeout: float) -> tuple[int, dict[str, Any]]:
        self.asked.append((table, key))
        return self.answer


@dataclass
class FakeBucket:
    rate: float
    group_rate: float
    waited: float = 0.0


@dataclass
class FakeRateLimits:
    buckets: dict[str, FakeBucket] = field(default_factory=dict)


@dataclass
class FakeWorker:
    app: FakeApp = field(default_factory=lambda: FakeApp("shop"))
    group: str = "shop"
    workers: dict[Any, FakePartition] = field(default_factory=dict)
    processors: dict[str, FakeProcessor] = field(default_factory=dict)
    recoveries: dict[str, FakeRecovery] = field(default_factory=dict)
    consumed: dict[str, int] = field(default_factory=dict)
    handlers: FakeHandlers = field(default_factory=FakeHandlers)
    heartbeat: float | None = None
    stats: str | None = None
    commits: int = 0
    commit_failures: int = 0
    transactions: tuple[int, int] = (0, 0)
    stopping: bool = False
    fetcher: FakeFetcher | None = None
    tables: FakeTables | None = None
    rate_limits: FakeRateLimits = field(default_factory=lambda: FakeRateLimits())


def orders_worker() -> FakeWorker:
    """Agent ``enrich`` on ``orders`` (two partitions) with retry tier ``orders.retry``."""
    agent = FakeAgent("enrich", FakeTopic("orders"))
    processor = FakeProcessor(agent, FakeEmitter({"orders.out": 0, "orders.review": 0}))
    recovery = FakeRecovery(agent)
    worker = FakeWorker(
        processors={"orders": processor, "orders.retry": processor},
        recoveries={"orders": recovery, "orders.retry": recovery},
        consumed={"orders": 0, "orders.retry": 0},
        fetcher=FakeFetcher(),
    )
    for n in (0, 1):
        tp = TopicPartition("orders", n)
        worker.workers[tp] = FakePartition(tp, processor)
    return worker
