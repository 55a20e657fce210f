"""What happens when a record fails: retry, dead-letter, or stop.

Two frozen policies, given per agent::

    @app.agent(
        source,
        emits=[sink],
        retry=RetryPolicy(attempts=5, backoff=0.2, max_delay=10, retry_on=(TimeoutError,)),
        dead_letter=DeadLetterPolicy(topic="orders.failed", max_consecutive=20),
    )

The defaults (a few quick in-place attempts, then the agent's dead-letter
topic) account for every record without stalling a partition for long; a
dead-letter limit stops the worker when a bad deploy would otherwise drain
the whole stream into the dead-letter topic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from streamkit.errors import DeclarationError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """In-place retries with exponential backoff and jitter.

    A record being retried holds back its partition (or only its key, for an
    agent with ``concurrency > 1``); other partitions keep flowing, because
    the wait is an ``await``, never a blocking sleep.

    Attributes:
        attempts: Total tries, the first included (1 = no retry).
        backoff: Delay before the first retry, in seconds.
        multiplier: Each further delay is this many times the previous one.
        max_delay: Upper bound of one delay, in seconds.
        jitter: Each delay is drawn from ``[d * (1 - jitter), d]`` so retries of
            many records spread out instead of hitting a dependency at once.
        retry_on: Exception types worth retrying; others go straight to dead letters.
        retry_topics: Delays in seconds of delayed-retry tiers (for example
            ``(60, 600)``): after the in-place attempts, the record moves to
            ``<app>.<agent>.retry.<delay>s`` and is tried again, once, when due,
            without blocking anything. Empty: no delayed retries.
    """

    attempts: int = 3
    backoff: float = 0.05
    multiplier: float = 2.0
    max_delay: float = 2.0
    jitter: float = 0.5
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    retry_topics: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise DeclarationError("RetryPolicy.attempts must be at least 1")
        if self.backoff < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise DeclarationError("RetryPolicy delays must be >= 0 and multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise DeclarationError("RetryPolicy.jitter must be between 0 and 1")
        if any(d <= 0 for d in self.retry_topics):
            raise DeclarationError("RetryPolicy.retry_topics are positive delays in seconds")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.backoff * self.multiplier ** (attempt - 1), self.max_delay)
        low = base * (1 - self.jitter)
        return (rng or random).uniform(low, base)

    def retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` is worth another attempt."""
        return isinstance(exc, self.retry_on)


NO_RETRY = RetryPolicy(attempts=1)
"""Fail over to dead letters (or stop) on the first error."""


@dataclass(frozen=True, slots=True)
class DeadLetterPolicy:
    """Where failed records go, and when to stop instead.

    Attributes:
        enabled: Send failed records to a dead-letter topic. When off, a
            failed record stops the worker with its offset uncommitted.
        topic: The dead-letter topic (default ``<app name>.<agent name>.dlq``).
        max_consecutive: Stop the worker when this many records in a row were
            dead-lettered.
        max_ratio: ...or when more than this share of the last ``window``
            records were dead-lettered.
        window: Records the ratio is measured over.
    """

    enabled: bool = True
    topic: str | None = None
    max_consecutive: int = 100
    max_ratio: float = 0.2
    window: int = 1000
    partitions: int | None = field(default=None)

    def __post_init__(self) -> None:
        if self.max_consecutive < 1 or self.window < 1:
            raise DeclarationError("DeadLetterPolicy limits must be positive")
        if not 0 < self.max_ratio <= 1:
            raise DeclarationError("DeadLetterPolicy.max_ratio must be in (0, 1]")


NO_DEAD_LETTERS = DeadLetterPolicy(enabled=False)
"""A failed record stops the worker (the foundation's behaviour)."""
