"""Group-wide rate limits: each worker's share of an agent's budget, as a token bucket.

``@app.agent(source, rate_limit="100/s")`` limits how many records the
*whole consumer group* starts per second, not each worker. No worker talks
to another about it: each takes the share of the budget that matches the
share of the agent's partitions it owns,

    worker rate = group rate x owned partitions / total partitions,

counted over the agent's inputs (its source, its retry and delay tiers),
and recomputed on every assignment change (:meth:`RateLimits.reshare`,
called after each rebalance callback that moved partitions). Because the shares of
one assignment add up to 1, the group never starts more than the group
rate, however many workers there are and however the partitions are spread.

The cost of not talking: a worker gets its share by partition *count*, not
by traffic. A worker whose partitions are quiet leaves part of the budget
unused while another with busy partitions waits (docs/rate-limits.md).

Each worker's share is enforced by a :class:`TokenBucket` in front of
*starting* records (every agent call: in-place retries and retry tiers
count too). A partition task that finds no token reserves the next one and
awaits it, so the other partitions and the event loop go on; there is
no polling. Agents without a rate limit have no bucket at all: the partition
task picks a loop without one when it starts.

Burst: a bucket holds at most one second of its share (at least one token),
so after a quiet spell a worker may start that many records at once; over
any window longer than a second the rate holds to within that one second's
worth, group-wide.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence

from streamkit.agent import Agent
from streamkit.types import TopicPartition

# A bucket holds this many seconds of its rate: the burst after a quiet spell.
BURST_S = 1.0


def share(owned: int, total: int) -> float:
    """The fraction of a group-wide budget a worker owning ``owned`` of ``total`` partitions takes.

    ``total`` is never below ``owned`` (a partition count read before the
    topic grew counts the partitions seen since), and 0 partitions own nothing.
    """
    total = max(total, owned)
    return owned / total if total else 0.0


class TokenBucket:
    """One worker's share of one agent's rate limit; used on the event loop only.

    Tokens refill continuously at ``rate`` per second up to ``capacity``. A
    caller takes one token per record with :meth:`take`; when there is none,
    it still takes it (the count goes below zero) and is told how long to
    wait for it. Reserving instead of retrying means that N partitions
    waiting at once wake one after another, each exactly when its token is
    due, instead of all waking for every token.

    Args:
        group_rate: Records per second for the whole group.
        monotonic: The clock (the harness's manual clock in tests).
        burst_s: Seconds of the worker's rate a full bucket holds.
    """

    def __init__(
        self, group_rate: float, monotonic: Callable[[], float], burst_s: float = BURST_S
    ) -> None:
        self.group_rate = group_rate
        self._monotonic = monotonic
        self._burst_s = burst_s
        self.rate = 0.0  # this worker's share, in records per second
        self.capacity = 1.0
        # A new bucket holds one token: a worker that just started may start
        # one record at once, not a whole second's worth on top of the group.
        self.tokens = 1.0
        self._stamp = monotonic()
        # Set while the worker has a share: a take() at rate 0 (a partition
        # started just before its share was computed) waits for it.
        self._rated: asyncio.Event | None = None
        # Read by metrics: seconds partition tasks spent waiting for tokens.
        self.waited = 0.0

    def _refill(self) -> float:
        now = self._monotonic()
        elapsed = max(now - self._stamp, 0.0)
        self._stamp = now
        tokens = min(self.tokens + elapsed * self.rate, self.capacity)
        self.tokens = tokens
        return tokens

    def take(self) -> float:
        """Take one token; return 0.0 if it was there, else the seconds until it is.

        The token is the caller's either way: it must wait that long and then
        start its record, or :meth:`give_back` the token if it will not.
        ``inf`` means the worker has no share yet (:meth:`until_rated`).
        """
        tokens = self._refill() - 1.0
        self.tokens = tokens
        if tokens >= 0.0:
            return 0.0
        if self.rate <= 0.0:
            return float("inf")
        return -tokens / self.rate

    def give_back(self) -> None:
        """Return a token taken for a record that will not start (its partition was revoked)."""
        self.tokens = min(self.tokens + 1.0, self.capacity)

    def set_rate(self, rate: float) -> None:
        """Change this worker's share (loop thread); earned tokens stay, up to the new cap."""
        self._refill()
        self.rate = rate
        self.capacity = max(rate * self._burst_s, 1.0)
        self.tokens = min(self.tokens, self.capacity)
        rated = self._rated
        if rated is not None:
            if rate > 0.0:
                rated.set()
            else:
                rated.clear()

    async def until_rated(self) -> None:
        """Return once the worker has a share (loop thread)."""
        if self._rated is None:
            self._rated = asyncio.Event()
            if self.rate > 0.0:
                self._rated.set()
        await self._rated.wait()

    def __repr__(self) -> str:
        return (
            f"TokenBucket(group_rate={self.group_rate}, rate={self.rate:.3f}, "
            f"tokens={self.tokens:.2f}, capacity={self.capacity:.2f})"
        )


class RateLimits:
    """The buckets of one worker's rate-limited agents, and their shares.

    Args:
        agents: The agents the worker runs; only those with a ``rate_limit``
            get a bucket.
        inputs: Each agent's input topics by agent name (its source, then its
            retry and delay tiers): the partitions its budget is shared over.
        monotonic: The clock.
    """

    def __init__(
        self,
        agents: Iterable[Agent],
        inputs: Mapping[str, Sequence[str]],
        monotonic: Callable[[], float],
    ) -> None:
        self.buckets: dict[str, TokenBucket] = {}
        self._inputs: dict[str, tuple[str, ...]] = {}
        for agent in agents:
            if agent.rate_limit is not None:
                self.buckets[agent.name] = TokenBucket(agent.rate_limit, monotonic)
                self._inputs[agent.name] = tuple(inputs.get(agent.name, (agent.source.name,)))
        # Partition counts per input topic, from the broker at start
        # (Worker.run); a topic missing there counts what it has seen.
        self.totals: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self.buckets)

    def topics(self) -> set[str]:
        """Every input topic of a rate-limited agent."""
        return {t for names in self._inputs.values() for t in names}

    def bucket_of(self, agent: str) -> TokenBucket | None:
        """The agent's bucket; ``None`` when it has no rate limit."""
        return self.buckets.get(agent)

    def shares(self, owned: Iterable[TopicPartition]) -> dict[str, float]:
        """Each rate-limited agent's share for a worker that owns ``owned``.

        A partition number at or past a topic's known count means the topic
        grew since it was read: the count follows what was seen.
        """
        owned = list(owned)
        out = {}
        for agent, topics in self._inputs.items():
            mine = [tp for tp in owned if tp.topic in topics]
            total = 0
            for topic in topics:
                seen = max((tp.partition + 1 for tp in mine if tp.topic == topic), default=0)
                total += max(self.totals.get(topic, 0), seen)
            out[agent] = share(len(mine), total)
        return out

    def reshare(self, owned: Iterable[TopicPartition]) -> dict[str, float]:
        """Set each bucket's rate from what is owned now (loop thread); return the shares."""
        shares = self.shares(owned)
        for agent, fraction in shares.items():
            bucket = self.buckets[agent]
            bucket.set_rate(bucket.group_rate * fraction)
        return shares
