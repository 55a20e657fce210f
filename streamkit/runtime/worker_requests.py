"""The worker's side of serving: request answers, delay tiers, and rate-limit shares.

Split from :mod:`streamkit.runtime.worker`, like its table, commit and
transaction duties. Each agent option that serves callers of ``ask``,
``submit`` and ``send(delay=...)`` adds a little to the worker:

* ``requests=True``: task statuses sent at once (:class:`StatusSender`),
  and a dead letter that answers the request it failed
  (:mod:`streamkit.runtime.requests`);
* ``delays``: the delay tiers, more inputs of the agent whose heads not due
  yet move down the ladder instead of running (:mod:`streamkit.runtime.delays`);
* ``rate_limit``: a bucket per agent, its share recomputed whenever the
  owned partitions change (:mod:`streamkit.runtime.rate_limit`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from streamkit.agent import Agent
from streamkit.app import App
from streamkit.backends.base import Backend
from streamkit.clock import Clock
from streamkit.config import AppConfig
from streamkit.runtime.bounds import Bounds
from streamkit.runtime.delays import Hops, hopping
from streamkit.runtime.failures import Recovery, Settle
from streamkit.runtime.partition import PartitionWorker
from streamkit.runtime.processor import Processor
from streamkit.runtime.rate_limit import RateLimits
from streamkit.runtime.requests import StatusSender, answer_failures

log = structlog.get_logger("streamkit.worker")


class RequestDuties:
    """The base of :class:`~streamkit.runtime.worker.Worker`: requests, delay tiers, rate limits.

    The annotations are the part of the worker these duties use.
    """

    app: App
    agents: list[Agent]
    config: AppConfig
    bounds: Bounds | None
    producer: Any
    workers: dict[Any, PartitionWorker]
    processors: dict[str, Processor]
    recoveries: dict[str, Recovery]
    delayed_topics: set[str]
    statuses: StatusSender | None
    rate_limits: RateLimits
    _backend: Backend
    _clock: Clock

    def _on_loop(self, fn: Callable[[Any], object], arg: Any) -> None:
        raise NotImplementedError

    def _on_client_error(self, err: Any) -> None:
        raise NotImplementedError

    def _new_statuses(self, transactional: bool) -> StatusSender | None:
        """The sender of task statuses, when an agent serves requests; ``None`` otherwise."""
        if not any(a.requests for a in self.agents):
            return None
        backend, config = self._backend, self.config
        # At least once the worker's producer sends statuses at once;
        # exactly once it is transactional, so they get their own.
        return StatusSender(
            self.app.name,
            (lambda: backend.producer(config, error_cb=self._on_client_error))
            if transactional
            else (lambda: self.producer),
        )

    def _answer_requests(self, agent: Agent, recovery: Recovery, send: Settle) -> None:
        """A request that fails for good is answered where it is dead-lettered."""
        if agent.requests:
            recovery.on_dead_letter = answer_failures(self.app.name, agent.name, send)

    def _add_delay_tiers(self, agent: Agent, recovery: Recovery, send: Settle) -> None:
        """The agent's delay tiers, read when due; heads not due yet move down the ladder.

        Not in a replay: it reads a fixed range, not records to come.
        """
        if self.bounds:
            return
        delays = tuple(t.name for t in self.app.delay_topics(agent))
        if not delays:
            return
        hops = Hops(agent.delays, delays, send, self._clock)
        for tier in delays:
            self.processors[tier] = hopping(self.processors[agent.source.name], hops)
            self.recoveries[tier] = recovery
            self.delayed_topics.add(tier)

    def _new_rate_limits(self) -> RateLimits:
        """A bucket per rate-limited agent, over every input topic it has.

        The source, retry and delay tiers: each is a call of the agent. Made
        once, after the first :meth:`_build`: a fence's second build keeps
        the buckets and their shares.
        """
        inputs: dict[str, list[str]] = {}
        for topic, processor in self.processors.items():
            inputs.setdefault(processor.agent.name, []).append(topic)
        return RateLimits(self.agents, inputs, self._clock.monotonic)

    def _reshare(self) -> None:
        """The owned partitions changed (fetcher thread): new rate-limit shares, on the loop."""
        self._on_loop(lambda _: self._apply_shares(), None)

    def _apply_shares(self) -> None:
        # On the loop, from the partitions owned now: a revoke's partitions
        # are gone from self.workers by the time its callback returns.
        owned = [tp for tp, w in list(self.workers.items()) if not w.released]
        for agent, share in self.rate_limits.reshare(owned).items():
            bucket = self.rate_limits.buckets[agent]
            log.info(
                "rate limit share",
                agent=agent,
                share=round(share, 4),
                rate_per_s=round(bucket.rate, 3),
                group_rate_per_s=bucket.group_rate,
            )

    def _count_partitions(self) -> None:
        """Partition counts of the rate-limited agents' inputs, from the broker (executor thread).

        A share is owned over total partitions, and an undeclared topic's
        total is only known to the broker. A topic it does not have (yet)
        counts its declared partitions, or those the worker comes to own.
        """
        limits = self.rate_limits
        reader = self._backend.reader(self.config)
        try:
            for topic in sorted(limits.topics()):
                found = reader.partitions(topic)
                declared = self.app.topics.get(topic)
                if found is None and declared is not None:
                    found = declared.partitions
                if found:
                    limits.totals[topic] = int(found)
        finally:
            reader.close()
