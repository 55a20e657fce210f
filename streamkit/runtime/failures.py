"""Failed records: retry them, move them to a retry topic, dead-letter them, or stop.

One :class:`Recovery` per agent turns a failure into the next step,
following the agent's :class:`~streamkit.policies.RetryPolicy` and
:class:`~streamkit.policies.DeadLetterPolicy`. The partition worker does the
waiting (an ``await``, so other partitions go on); this module decides and
produces.

A failure is handled here whatever its stage, once: an agent that raised, a
value that did not decode or encode, and an emit the broker refused, whether
``produce()`` refused it at once or its delivery report failed later. A
refused emit's cause is a :class:`~streamkit.errors.DeliveryError`: a
retriable one (a timeout, too few in-sync replicas) gets the agent's in-place
attempts and tiers like any retriable failure; a permanent one (a record
larger than the topic allows, a missing topic) goes straight to the
dead-letter topic.

A dead letter keeps the original key, value bytes and headers untouched and
adds provenance headers: Kafka Streams' ``__streams.errors.*`` (so existing
tooling reads them) and ``streamkit.errors.*``. Like any emit, it is tied to
the input record's ticket: the input offset is committed only once the
broker acknowledged the dead letter (or the move to a retry tier). If the
broker refuses that record too, the worker stops and the offset stays
uncommitted for good; nothing is ever committed past a record that is in
neither the output nor a dead-letter topic.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException

from streamkit.agent import Agent
from streamkit.clock import Clock, SystemClock
from streamkit.errors import (
    AgentError,
    DeadLetter,
    DeadLetterLimitError,
    DeliveryError,
    SkipRecord,
)
from streamkit.runtime.offsets import Ticket
from streamkit.types import Headers

log = structlog.get_logger("streamkit.failures")

# Kafka Streams' names (KIP-1034), then streamkit's own.
H_EXCEPTION = "__streams.errors.exception"
H_MESSAGE = "__streams.errors.message"
H_STACKTRACE = "__streams.errors.stacktrace"
H_TOPIC = "__streams.errors.topic"
H_PARTITION = "__streams.errors.partition"
H_OFFSET = "__streams.errors.offset"
H_GROUP = "streamkit.errors.group"
H_AGENT = "streamkit.errors.agent"
H_ATTEMPTS = "streamkit.errors.attempts"
H_FIRST_FAILURE = "streamkit.errors.first_failure_ts"
H_STAGE = "streamkit.errors.stage"
# Delayed retries: when the record is due, and which tier it is in.
H_RETRY_DUE = "streamkit.retry.due_ts"
H_RETRY_TIER = "streamkit.retry.tier"
# Redrive loop protection: how many times the record was sent back.
H_REDRIVES = "streamkit.redrive.count"

ERROR_HEADERS = frozenset(
    {
        H_EXCEPTION,
        H_MESSAGE,
        H_STACKTRACE,
        H_TOPIC,
        H_PARTITION,
        H_OFFSET,
        H_GROUP,
        H_AGENT,
        H_ATTEMPTS,
        H_FIRST_FAILURE,
        H_STAGE,
        H_RETRY_DUE,
        H_RETRY_TIER,
    }
)

# A stack trace header is for a human reading one dead letter; 8 KiB keeps
# the deepest frames without letting a recursion error bloat the record.
_MAX_STACKTRACE = 8192


# Delivery errors another attempt can get past: the record was fine, the
# cluster was not (a leader moving, replicas catching up, an outage longer
# than message.timeout.ms). Anything else (too large, a missing topic, no
# ACL) fails the same way every time and goes straight to dead letters.
_RETRIABLE_DELIVERY = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._PURGE_INFLIGHT,
        KafkaError._PURGE_QUEUE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.BROKER_NOT_AVAILABLE,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.KAFKA_STORAGE_ERROR,
    }
)


# A sender of the records that settle a failure (dead letters, tier moves):
# ``send(topic, value, key, headers, ticket)``, a
# :class:`~streamkit.runtime.processor.Send` made with ``settling=True`` (or
# ``exactly_once.hold_settling``). Spelled as a Callable, not that Protocol:
# this module is below processor.py, and no settling record has a timestamp.
Settle = Callable[[str, bytes | None, bytes | None, Headers, Ticket], None]


def produce_failure(msg: Any, err: Any, problem: str) -> AgentError:
    """The failure of an emit the broker (or ``produce()``) refused, stage ``produce``.

    Args:
        msg: The input record the emit was made for.
        err: librdkafka's error (a ``KafkaError``, or anything printable).
        problem: What happened, for the message.
    """
    code = err.code() if isinstance(err, KafkaError) else None
    retriable = code in _RETRIABLE_DELIVERY or (isinstance(err, KafkaError) and err.retriable())
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    cause = DeliveryError(
        topic,
        partition,
        offset,
        f"{problem}: {err}",
        code=err.name() if isinstance(err, KafkaError) else str(err),
        retriable=retriable,
    )
    error = AgentError(topic, partition, offset, f"{problem}: {err}", stage="produce")
    error.__cause__ = cause
    return error


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a record first came from, and its failure history so far."""

    topic: str
    partition: int
    offset: int
    attempts: int
    first_failure_ms: int
    tier: int  # -1: not yet in a retry tier


def origin_of(msg: Any) -> Origin:
    """The original coordinates: from retry headers if the record was retried via a tier."""
    headers = dict(msg.headers() or [])
    if H_RETRY_TIER in headers:
        return Origin(
            headers[H_TOPIC].decode(),
            int(headers[H_PARTITION]),
            int(headers[H_OFFSET]),
            int(headers[H_ATTEMPTS]),
            int(headers[H_FIRST_FAILURE]),
            int(headers[H_RETRY_TIER]),
        )
    return Origin(msg.topic(), msg.partition(), msg.offset(), 0, 0, -1)


def due_ms(msg: Any) -> int:
    """When a record in a retry topic may be tried again (0: now)."""
    for name, value in msg.headers() or []:
        if name == H_RETRY_DUE:
            return int(value)
    return 0


class Recovery:
    """The failure policy of one agent, applied.

    Args:
        agent: The agent.
        group: The consumer group, for provenance headers.
        dead_letter_topic: Where dead letters go (``None``: dead-lettering off).
        retry_topics: Delayed-retry tier topics, shortest delay first.
        send: Produces one record for a ticket: ``send(topic, value, key, headers, ticket)``,
            with :meth:`Ticket.settle_ack` as its delivery callback.
        clock: When a tier's records are due (the harness's manual clock in tests).
    """

    def __init__(
        self,
        agent: Agent,
        group: str,
        dead_letter_topic: str | None,
        retry_topics: tuple[str, ...],
        send: Settle,
        clock: Clock | None = None,
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        self.agent = agent
        self.retry = agent.retry
        self.limits = agent.dead_letter
        self._group = group
        self._dlq = dead_letter_topic
        self._tiers = retry_topics
        self._delays = sorted(agent.retry.retry_topics)
        self._send = send
        # A requests=True agent answers a request that failed for good
        # (streamkit.runtime.requests.answer_failures): msg, ticket, error.
        self.on_dead_letter: Callable[[Any, Ticket, dict[str, Any]], None] | None = None
        self.skipped = 0
        self.dead_lettered = 0
        self.retried = 0
        self.delayed = 0  # moved to a delayed-retry topic
        self._consecutive = 0
        self._window_seen = 0
        self._window_dead = 0
        self._previous_dead = 0

    def succeeded(self, n: int) -> None:
        """``n`` records went through: resets the run of consecutive dead letters."""
        if n:
            self._consecutive = 0
            self._count(n, 0)

    def retry_delay(self, error: AgentError, attempt: int) -> float | None:
        """Seconds to wait before in-place attempt ``attempt + 1``, or ``None`` for no retry."""
        if not self._retryable(error) or attempt >= self.retry.attempts:
            return None
        self.retried += 1
        return self.retry.delay(attempt)

    def _retryable(self, error: AgentError) -> bool:
        cause = error.__cause__
        if isinstance(cause, (SkipRecord, DeadLetter)) or error.stage == "deserialize":
            return False
        if isinstance(cause, DeliveryError):
            # The agent's retry_on is about its own exceptions; whether a
            # refused emit can go through is the broker's error's to say.
            return cause.retriable
        return cause is not None and self.retry.retryable(cause)

    def give_up(
        self, msg: Any, ticket: Ticket, error: AgentError, attempts: int, first_ms: int
    ) -> None:
        """After the last in-place attempt: skip, move to a retry tier, or dead-letter.

        Raises:
            AgentError: Dead-lettering is off; the worker stops on this record.
            DeadLetterLimitError: The dead-letter limit tripped; the worker stops.
        """
        cause = error.__cause__
        if isinstance(cause, SkipRecord):
            self.skipped += 1
            log.debug("record skipped", agent=self.agent.name, offset=ticket.offset)
            ticket.finished = True
            return
        origin = origin_of(msg)
        total_attempts = origin.attempts + attempts
        first = origin.first_failure_ms or first_ms
        next_tier = origin.tier + 1
        if next_tier < len(self._tiers) and self._retryable(error):
            self._to_tier(msg, ticket, origin, next_tier, total_attempts, first)
            return
        self.dead_letter(msg, ticket, error, origin, total_attempts, first)

    def _to_tier(
        self, msg: Any, ticket: Ticket, origin: Origin, tier: int, attempts: int, first_ms: int
    ) -> None:
        due = int(self._clock.time() * 1000) + self._delays[tier] * 1000
        headers = [
            *without_failure_headers(msg.headers()),
            (H_TOPIC, origin.topic.encode()),
            (H_PARTITION, str(origin.partition).encode()),
            (H_OFFSET, str(origin.offset).encode()),
            (H_ATTEMPTS, str(attempts).encode()),
            (H_FIRST_FAILURE, str(first_ms).encode()),
            (H_RETRY_TIER, str(tier).encode()),
        ]
        topic = self._tiers[tier]
        try:
            move_to_tier(self._send, msg, ticket, topic, due, headers)
        except KafkaException as exc:
            raise self._refused_at_once(origin, "retry topic", topic, exc) from exc
        self.delayed += 1

    def dead_letter(
        self,
        msg: Any,
        ticket: Ticket,
        error: AgentError,
        origin: Origin,
        attempts: int,
        first_ms: int,
    ) -> None:
        """Produce the dead letter for ``msg`` and mark its ticket finished.

        Raises:
            AgentError: Dead-lettering is off (``error`` itself).
            DeadLetterLimitError: The dead-letter limit tripped.
            DeliveryError: ``produce()`` refused the dead letter at once.
        """
        if self._dlq is None:
            raise error
        self._consecutive += 1
        self._count(1, 1)
        self._check_limits(error)
        cause = error.__cause__ or error
        message = cause.reason if isinstance(cause, DeadLetter) else str(cause)
        stack = "".join(traceback.format_exception(cause))[-_MAX_STACKTRACE:]
        exception = f"{type(cause).__module__}.{type(cause).__qualname__}"
        headers = [
            *without_failure_headers(msg.headers()),
            (H_EXCEPTION, exception.encode()),
            (H_MESSAGE, message.encode("utf-8", "replace")),
            (H_STACKTRACE, stack.encode("utf-8", "replace")),
            (H_TOPIC, origin.topic.encode()),
            (H_PARTITION, str(origin.partition).encode()),
            (H_OFFSET, str(origin.offset).encode()),
            (H_GROUP, self._group.encode()),
            (H_AGENT, self.agent.name.encode()),
            (H_ATTEMPTS, str(attempts).encode()),
            (H_FIRST_FAILURE, str(first_ms).encode()),
            (H_STAGE, error.stage.encode()),
        ]
        try:
            settle(self._send, self._dlq, msg, headers, ticket)
        except KafkaException as exc:
            raise self._refused_at_once(origin, "dead-letter topic", self._dlq, exc) from exc
        self.dead_lettered += 1
        if self.on_dead_letter is not None:
            self.on_dead_letter(
                msg,
                ticket,
                {
                    "type": exception,
                    "message": message,
                    "attempts": attempts,
                    "stage": error.stage,
                    "dead_letter_topic": self._dlq,
                    "record": f"{origin.topic}[{origin.partition}]@{origin.offset}",
                },
            )

    def _refused_at_once(
        self, origin: Origin, what: str, topic: str, exc: KafkaException
    ) -> DeliveryError:
        """The error that stops the worker when ``produce()`` refused a settling record."""
        return DeliveryError(
            origin.topic,
            origin.partition,
            origin.offset,
            f"agent {self.agent.name}: the {what} {topic} refused the record: {exc}",
        )

    def refused(self, ticket: Ticket) -> DeliveryError:
        """The error that stops the worker when a ticket's dead letter or tier move was refused."""
        origin = origin_of(ticket.msg)
        return DeliveryError(
            origin.topic,
            origin.partition,
            origin.offset,
            f"agent {self.agent.name}: the broker refused the dead letter (or retry-topic "
            f"move) of this record: {ticket.error}; its offset stays uncommitted",
        )

    def _count(self, seen: int, dead: int) -> None:
        window = self.limits.window
        self._window_seen += seen
        self._window_dead += dead
        if self._window_seen >= window:
            self._previous_dead = self._window_dead
            self._window_seen = self._window_dead = 0

    def _check_limits(self, error: AgentError) -> None:
        limits = self.limits
        if self._consecutive > limits.max_consecutive:
            raise DeadLetterLimitError(
                f"agent {self.agent.name}: {self._consecutive} records in a row failed "
                f"(limit {limits.max_consecutive}); stopping instead of dead-lettering the "
                f"stream. Last: {error}"
            )
        # Dead letters among the last `window` records: the current window
        # plus the unexpired share of the previous one.
        window = limits.window
        share_of_previous = 1 - self._window_seen / window
        dead = self._window_dead + self._previous_dead * share_of_previous
        if dead > limits.max_ratio * window:
            raise DeadLetterLimitError(
                f"agent {self.agent.name}: {dead:.0f} of the last {window} records failed "
                f"(limit {limits.max_ratio:.0%}); stopping. Last: {error}"
            )


def without_failure_headers(headers: Headers | None) -> Headers:
    """Original headers without our error and retry headers.

    A retried record carries them already; the new ones replace them. A
    record that moves on to another agent's topic (a re-key) drops them: they
    describe its failures in the topic it leaves, and the next agent would
    read them as its own (:func:`origin_of`).
    """
    return [(k, v) for k, v in headers or [] if k not in ERROR_HEADERS]


def settle(send: Settle, topic: str, msg: Any, headers: Headers, ticket: Ticket) -> None:
    """Produce the record that accounts for ``msg`` instead of its emits, and finish its ticket.

    A dead letter or a move to a retry or delay tier. From here on, late
    failures of the emits made before are moot (the record is accounted for
    by this one), and a failure of this record is final:
    :meth:`Ticket.settle_ack` marks the ticket refused.

    Raises:
        KafkaException: ``produce()`` refused the record at once; the ticket
            is then neither settled nor finished.
    """
    ticket.settled = True
    ticket.error = None
    try:
        send(topic, msg.value(), msg.key(), headers, ticket)
    except KafkaException:
        ticket.settled = False
        raise
    ticket.finished = True


def move_to_tier(
    send: Settle, msg: Any, ticket: Ticket, topic: str, due: int, headers: Headers
) -> None:
    """Move ``msg`` to the tier topic ``topic``, due at ``due`` (epoch ms), carrying ``headers``.

    The one way a record enters a retry tier (:class:`Recovery`) or a delay
    tier (:class:`~streamkit.runtime.delays.Hops`): a settling record of its
    ticket, whose ``streamkit.retry.due_ts`` the tier's reader waits for
    (:func:`due_ms`). A due time already among ``headers`` (a record moving
    from one tier to the next) is replaced, so the reader finds only this one.

    Raises:
        KafkaException: ``produce()`` refused the move at once (see :func:`settle`).
    """
    kept = [(k, v) for k, v in headers if k != H_RETRY_DUE]
    settle(send, topic, msg, [*kept, (H_RETRY_DUE, str(due).encode())], ticket)
