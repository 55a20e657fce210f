"""What the endpoints read from a running worker, as Protocols.

:class:`~streamkit.runtime.worker.Worker` satisfies :class:`WorkerView`; the
unit tests pass fakes. Everything here is read from the HTTP server's
threads while the event loop and the fetcher thread write it, without locks:
each read is of one plain value (an int, a float, a reference), which the
GIL keeps whole, and a scrape may see two counters a few records apart. The
runtime keeps only plain counters on its hot path; turning them into
metrics happens here, at scrape time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from streamkit.runtime.rebalance import RebalanceEvent
from streamkit.types import TopicPartition


class TopicView(Protocol):
    """A declared topic."""

    @property
    def name(self) -> str:
        """The topic name."""
        ...


class RestoreView(Protocol):
    """One table partition's restore (:class:`streamkit.state.restore.Progress`)."""

    table: str
    partition: int
    done: int

    @property
    def remaining(self) -> int:
        """Records left to read."""
        ...


class TablesView(Protocol):
    """The worker's tables (:class:`streamkit.runtime.tables.WorkerTables`)."""

    def restoring(self) -> list[str]:
        """``table[partition]`` of each restore in progress."""
        ...

    def restores(self) -> Sequence[RestoreView]:
        """The latest restore of each table partition this worker restored."""
        ...

    def lookup(self, table: str, key: str, timeout: float) -> tuple[int, dict[str, Any]]:
        """``GET /tables/<table>/<key>``: an HTTP status and a JSON body (any thread)."""
        ...


class AgentView(Protocol):
    """An agent declaration."""

    @property
    def name(self) -> str:
        """The agent's name."""
        ...

    @property
    def source(self) -> TopicView:
        """Its input topic."""
        ...


class EmitterView(Protocol):
    """An agent's emitter."""

    @property
    def emitted(self) -> Mapping[str, int]:
        """Records sent so far, per target topic."""
        ...


class WindowsView(Protocol):
    """A windowed agent's counters."""

    @property
    def late(self) -> int:
        """Records that came after every window they belong to had closed."""
        ...

    @property
    def closed(self) -> int:
        """Windows closed so far."""
        ...


class BucketView(Protocol):
    """An agent's rate limit on this worker (:class:`streamkit.runtime.rate_limit.TokenBucket`)."""

    rate: float  # this worker's share, records per second
    group_rate: float
    waited: float  # seconds partitions have waited for tokens


class RateLimitsView(Protocol):
    """The worker's rate-limited agents."""

    @property
    def buckets(self) -> Mapping[str, BucketView]:
        """Each rate-limited agent's bucket, by agent name."""
        ...


class ProcessorView(Protocol):
    """A compiled agent."""

    @property
    def agent(self) -> AgentView:
        """The agent it runs."""
        ...

    @property
    def emitter(self) -> EmitterView | None:
        """Where its emits go and are counted."""
        ...

    @property
    def windows(self) -> WindowsView | None:
        """A windowed agent's counters; ``None`` for other agents."""
        ...


class RecoveryView(Protocol):
    """An agent's failure policy, with its counters."""

    @property
    def agent(self) -> AgentView:
        """The agent."""
        ...

    @property
    def retried(self) -> int:
        """In-place retries."""
        ...

    @property
    def delayed(self) -> int:
        """Records moved to a delayed-retry topic."""
        ...

    @property
    def dead_lettered(self) -> int:
        """Records sent to the dead-letter topic."""
        ...

    @property
    def skipped(self) -> int:
        """Records the agent skipped (``SkipRecord``)."""
        ...


class TicketView(Protocol):
    """One input record in flight."""

    @property
    def offset(self) -> int:
        """Its offset."""
        ...

    @property
    def finished(self) -> bool:
        """Whether the agent is done with it (its emits may still wait for acks)."""
        ...


class OffsetsView(Protocol):
    """A partition's records in flight."""

    @property
    def in_flight(self) -> int:
        """Records started and not yet committable."""
        ...

    def blocked_by(self) -> TicketView | None:
        """The oldest record in flight."""
        ...


class PartitionView(Protocol):
    """One assigned partition."""

    @property
    def tp(self) -> TopicPartition:
        """Which partition."""
        ...

    @property
    def processor(self) -> ProcessorView:
        """The agent working it."""
        ...

    @property
    def offsets(self) -> OffsetsView:
        """Its records in flight."""
        ...

    @property
    def backlog(self) -> int:
        """Records fetched and not yet started."""
        ...

    @property
    def paused(self) -> bool:
        """Whether fetching is paused (backlog over the hard limit)."""
        ...


class HandlersView(Protocol):
    """The rebalance handlers and what they counted."""

    @property
    def budget(self) -> float:
        """Seconds a revoke may take."""
        ...

    @property
    def joined(self) -> bool:
        """A first assignment arrived."""
        ...

    @property
    def member(self) -> str | None:
        """The group member id at the last rebalance."""
        ...

    @property
    def events(self) -> Mapping[RebalanceEvent, int]:
        """Callbacks that moved partitions, per event."""
        ...

    @property
    def seconds(self) -> Mapping[RebalanceEvent, float]:
        """Seconds spent in those callbacks, per event."""
        ...

    @property
    def sync_commits(self) -> int:
        """Synchronous commits made by revokes."""
        ...

    @property
    def sync_commit_seconds(self) -> float:
        """Seconds those commits took, in total."""
        ...


class FetcherView(Protocol):
    """The poll thread."""

    @property
    def polls(self) -> int:
        """``consume()`` calls so far."""
        ...


class AppView(Protocol):
    """The app being run."""

    @property
    def name(self) -> str:
        """The app name."""
        ...


class WorkerView(Protocol):
    """A running worker, as the health checks and the metrics collector see it."""

    @property
    def app(self) -> AppView:
        """The app."""
        ...

    @property
    def group(self) -> str:
        """The consumer group id."""
        ...

    @property
    def workers(self) -> Mapping[Any, PartitionView]:
        """Assigned partitions."""
        ...

    @property
    def processors(self) -> Mapping[str, ProcessorView]:
        """Compiled agents per input topic (retry tiers share their agent's)."""
        ...

    @property
    def recoveries(self) -> Mapping[str, RecoveryView]:
        """Failure policies per input topic (retry tiers share their agent's)."""
        ...

    @property
    def consumed(self) -> Mapping[str, int]:
        """Records handed to agents, per input topic."""
        ...

    @property
    def handlers(self) -> HandlersView:
        """The rebalance handlers."""
        ...

    @property
    def heartbeat(self) -> float | None:
        """Monotonic time of the event loop's last tick; ``None`` before it runs."""
        ...

    @property
    def stats(self) -> str | None:
        """The last librdkafka statistics document, if statistics are on."""
        ...

    @property
    def commits(self) -> int:
        """Asynchronous commits sent."""
        ...

    @property
    def commit_failures(self) -> int:
        """Asynchronous commits the broker refused."""
        ...

    @property
    def transactions(self) -> tuple[int, int]:
        """Exactly once: checkpoint transactions committed and aborted (0, 0 otherwise)."""
        ...

    @property
    def stopping(self) -> bool:
        """Asked to stop."""
        ...

    @property
    def tables(self) -> TablesView | None:
        """The worker's tables, if its agents have any."""
        ...

    @property
    def fetcher(self) -> FetcherView | None:
        """The poll thread, once started."""
        ...

    @property
    def rate_limits(self) -> RateLimitsView:
        """Its agents' rate limits (empty when none has one)."""
        ...
