import random
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from streamkit import (
    AgentError,
    App,
    DeadLetter,
    DeadLetterLimitError,
    DeadLetterPolicy,
    DeliveryError,
    RetryPolicy,
    SkipRecord,
)
from streamkit.runtime.failures import (
    H_RETRY_DUE,
    Recovery,
    due_ms,
    move_to_tier,
    origin_of,
    produce_failure,
)
from streamkit.runtime.offsets import Ticket
from tests.unit.runtime.fakes import FakeMessage

Sent = list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]]


def make(
    retry: RetryPolicy | None = None, dead_letter: DeadLetterPolicy | None = None
) -> tuple[Recovery, Sent]:
    app = App("shop", brokers="127.0.0.1:9092")
    app.agent(app.topic("in"), name="price", retry=retry, dead_letter=dead_letter)(lambda v: v)
    agent = app.agents["price"]
    sent: Sent = []

    def send(topic: str, value: Any, key: Any, headers: Any, ticket: Ticket) -> None:
        ticket.pending += 1
        sent.append((topic, value, key, headers))

    dlq = app.dead_letter_topic(agent)
    tiers = tuple(t.name for t in app.retry_topics(agent))
    return Recovery(agent, "shop-group", dlq.name if dlq else None, tiers, send), sent


def failure(cause: BaseException, stage: str = "process", offset: int = 5) -> AgentError:
    error = AgentError("in", 2, offset, f"failed: {cause!r}", stage)
    error.__cause__ = cause
    return error


def test_default_names_and_topics_are_declared() -> None:
    app = App("shop", brokers="127.0.0.1:9092")
    app.agent(
        app.topic("in", partitions=3), name="price", retry=RetryPolicy(retry_topics=(600, 60))
    )(lambda v: v)
    assert sorted(app.topics) == [
        "in",
        "shop.price.dlq",
        "shop.price.retry.600s",
        "shop.price.retry.60s",
    ]
    assert [t.name for t in app.retry_topics(app.agents["price"])] == [
        "shop.price.retry.60s",
        "shop.price.retry.600s",
    ]
    assert app.topics["shop.price.dlq"].partitions == 3


def test_retry_delays_grow_and_cap_with_jitter() -> None:
    policy = RetryPolicy(attempts=6, backoff=0.1, multiplier=2, max_delay=0.5, jitter=0.5)
    rng = random.Random(1)
    for attempt, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (5, 0.5)]:
        delay = policy.delay(attempt, rng)
        assert cap * 0.5 <= delay <= cap


def test_retry_decisions() -> None:
    recovery, _ = make(RetryPolicy(attempts=3, retry_on=(TimeoutError,)))
    assert recovery.retry_delay(failure(TimeoutError()), 1) is not None
    assert recovery.retry_delay(failure(TimeoutError()), 3) is None, "attempts exhausted"
    assert recovery.retry_delay(failure(ValueError()), 1) is None, "not retryable"
    assert recovery.retry_delay(failure(DeadLetter("no")), 1) is None
    assert recovery.retry_delay(failure(ValueError(), "deserialize"), 1) is None


def test_dead_letter_keeps_the_record_and_adds_provenance() -> None:
    recovery, sent = make()
    msg = FakeMessage(
        b"payload", key=b"k1", topic="in", partition=2, offset=5, headers=[("trace", b"t")]
    )
    ticket = Ticket(5, msg)
    recovery.give_up(msg, ticket, failure(RuntimeError("boom")), 3, 1_700_000_000_000)
    [(topic, value, key, headers)] = sent
    assert (topic, value, key) == ("shop.price.dlq", b"payload", b"k1")
    h = dict(headers)
    assert headers[0] == ("trace", b"t"), "original headers come first, untouched"
    assert h["__streams.errors.exception"] == b"builtins.RuntimeError"
    assert h["__streams.errors.message"] == b"boom"
    assert b"RuntimeError: boom" in h["__streams.errors.stacktrace"]
    assert (
        h["__streams.errors.topic"],
        h["__streams.errors.partition"],
        h["__streams.errors.offset"],
    ) == (b"in", b"2", b"5")
    assert (h["streamkit.errors.group"], h["streamkit.errors.agent"]) == (b"shop-group", b"price")
    assert (h["streamkit.errors.attempts"], h["streamkit.errors.stage"]) == (b"3", b"process")
    assert h["streamkit.errors.first_failure_ts"] == b"1700000000000"
    assert ticket.finished and ticket.pending == 1, "committable only once the dead letter is acked"


def test_skip_signal_finishes_without_sending() -> None:
    recovery, sent = make()
    ticket = Ticket(1, FakeMessage(b"x"))
    recovery.give_up(ticket.msg, ticket, failure(SkipRecord()), 1, 0)
    assert sent == [] and ticket.finished and recovery.skipped == 1


def test_dead_letter_reason_becomes_the_message() -> None:
    recovery, sent = make()
    ticket = Ticket(1, FakeMessage(b"x"))
    recovery.give_up(ticket.msg, ticket, failure(DeadLetter("unknown currency XYZ")), 1, 0)
    assert dict(sent[0][3])["__streams.errors.message"] == b"unknown currency XYZ"


def test_retry_tiers_then_dead_letters() -> None:
    recovery, sent = make(RetryPolicy(attempts=2, retry_topics=(60, 600)))
    msg = FakeMessage(b"v", key=b"k", topic="in", partition=1, offset=9)
    recovery.give_up(msg, Ticket(9, msg), failure(TimeoutError("slow")), 2, 1_000)
    topic, _, _, headers = sent[-1]
    assert topic == "shop.price.retry.60s"
    assert due_ms(FakeMessage(b"v", headers=headers)) > 1_000
    tier_msg = FakeMessage(b"v", key=b"k", topic=topic, partition=0, offset=0, headers=headers)
    origin = origin_of(tier_msg)
    assert (origin.topic, origin.partition, origin.offset, origin.attempts, origin.tier) == (
        "in",
        1,
        9,
        2,
        0,
    )
    recovery.give_up(tier_msg, Ticket(0, tier_msg), failure(TimeoutError("slow")), 2, 2_000)
    assert sent[-1][0] == "shop.price.retry.600s"
    last = FakeMessage(b"v", topic=sent[-1][0], headers=sent[-1][3])
    recovery.give_up(last, Ticket(0, last), failure(TimeoutError("slow")), 2, 3_000)
    topic, _, _, headers = sent[-1]
    h = dict(headers)
    assert topic == "shop.price.dlq"
    assert (h["__streams.errors.topic"], h["__streams.errors.offset"]) == (b"in", b"9")
    assert h["streamkit.errors.attempts"] == b"6"
    assert h["streamkit.errors.first_failure_ts"] == b"1000"
    assert "streamkit.retry.tier" not in h


def test_consecutive_limit_trips_and_success_resets_it() -> None:
    recovery, _ = make(dead_letter=DeadLetterPolicy(max_consecutive=3))

    def fail_one() -> None:
        msg = FakeMessage(b"x")
        recovery.give_up(msg, Ticket(0, msg), failure(RuntimeError()), 1, 0)

    for _ in range(3):
        fail_one()
    recovery.succeeded(1)
    for _ in range(3):
        fail_one()
    with pytest.raises(DeadLetterLimitError, match="4 records in a row"):
        fail_one()


def test_ratio_limit_over_the_window() -> None:
    recovery, _ = make(
        dead_letter=DeadLetterPolicy(max_ratio=0.1, window=100, max_consecutive=1000)
    )
    msg = FakeMessage(b"x")
    for _ in range(10):
        recovery.succeeded(9)
        recovery.give_up(msg, Ticket(0, msg), failure(RuntimeError()), 1, 0)
    with pytest.raises(DeadLetterLimitError, match="of the last 100 records failed"):
        for _ in range(5):
            recovery.give_up(msg, Ticket(0, msg), failure(RuntimeError()), 1, 0)


def test_dead_letters_off_raises_the_failure() -> None:
    recovery, sent = make(dead_letter=DeadLetterPolicy(enabled=False))
    msg = FakeMessage(b"x")
    with pytest.raises(AgentError):
        recovery.give_up(msg, Ticket(0, msg), failure(RuntimeError()), 1, 0)
    assert sent == []


def test_a_refused_dead_letter_is_final_and_names_the_record() -> None:
    recovery, sent = make()
    msg = FakeMessage(b"x", offset=7)
    ticket = Ticket(7, msg, failures=[])
    recovery.give_up(msg, ticket, failure(RuntimeError()), 1, 0)
    assert ticket.settled and ticket.finished
    ticket.settle_ack("UNKNOWN_TOPIC_OR_PART", None)
    assert ticket.refused and not ticket.done, "stays uncommitted for good"
    error = recovery.refused(ticket)
    assert isinstance(error, DeliveryError) and error.offset == 7
    assert "refused the dead letter" in str(error)
    assert len(sent) == 1, "sent once, not again in a loop"


def test_delivery_errors_retry_only_when_the_broker_error_is_retriable() -> None:
    recovery, _ = make(RetryPolicy(attempts=3, retry_on=(TimeoutError,)))
    msg = FakeMessage(b"x")
    timed_out = produce_failure(msg, KafkaError(KafkaError._MSG_TIMED_OUT), "refused")
    too_large = produce_failure(msg, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), "refused")
    assert timed_out.stage == "produce"
    assert recovery.retry_delay(timed_out, 1) is not None, "whatever retry_on says"
    assert recovery.retry_delay(too_large, 1) is None


def test_a_tier_move_replaces_the_due_time_keeps_the_rest_and_settles_the_ticket() -> None:
    """Shared by retry tiers and delay tiers: one due header, the new one, last."""
    sent: Sent = []

    def send(topic: str, value: Any, key: Any, headers: Any, ticket: Ticket) -> None:
        sent.append((topic, value, key, headers))

    headers = [("trace", b"t1"), (H_RETRY_DUE, b"1000"), ("streamkit-eta", b"9000")]
    msg = FakeMessage(b"v", key=b"k", topic="shop.remind.delay.60s", headers=headers)
    ticket = Ticket(0, msg)
    move_to_tier(send, msg, ticket, "shop.remind.delay.1s", 5_000, headers)
    assert sent == [
        (
            "shop.remind.delay.1s",
            b"v",
            b"k",
            [("trace", b"t1"), ("streamkit-eta", b"9000"), (H_RETRY_DUE, b"5000")],
        )
    ]
    assert ticket.settled and ticket.finished


def test_a_tier_move_refused_at_once_leaves_the_ticket_unsettled_and_names_the_topic() -> None:
    app = App("shop", brokers="127.0.0.1:9092")
    app.agent(app.topic("in"), name="price", retry=RetryPolicy(attempts=1, retry_topics=(60,)))(
        lambda v: v
    )
    agent = app.agents["price"]

    def refuse(topic: str, value: Any, key: Any, headers: Any, ticket: Ticket) -> None:
        raise KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC))

    tiers = tuple(t.name for t in app.retry_topics(agent))
    recovery = Recovery(agent, "shop-group", None, tiers, refuse)
    msg = FakeMessage(b"x", offset=3)
    ticket = Ticket(3, msg)
    with pytest.raises(DeliveryError, match=r"the retry topic shop\.price\.retry\.60s refused"):
        recovery.give_up(msg, ticket, failure(TimeoutError("slow")), 1, 0)
    assert not ticket.settled and not ticket.finished
    assert recovery.delayed == 0
