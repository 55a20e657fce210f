"""Exactly once, per record: an input's outputs go into the transaction that commits its offset.

At least once, an agent's emits are produced as it makes them. In a
transaction that breaks in two ways: a record that fails halfway and is
retried would commit its first outputs beside the retry's, and a record that
finishes before an earlier one of its partition (a concurrent agent) would
have its outputs committed in a transaction whose offsets stop before it, so
a crash then runs it again. So exactly once, every record an input produces
(its outputs, its dead letter, its move to a retry tier) is *held* on the
input's ticket, and produced only by the checkpoint, for the finished inputs
at the front of each partition: precisely those whose offsets the same
transaction commits. A failed attempt's held records are dropped before it
is retried or dead-lettered. Holding costs no latency a reader can see:
``read_committed`` readers see nothing before the commit anyway.

What cannot be undone that way is a record refused *after* part of the same
input's records went out (a failed delivery report, or ``produce()``
refusing the second of two). Then the transaction is aborted and the input
is marked *poisoned*: when it comes again from the last committed offset, it
goes straight to the failure path (its dead letter, in the next transaction)
instead of failing the same way for ever.

Everything here is decided once per agent: the holding sender and the
wrapper exist only in exactly-once workers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from streamkit.errors import AgentError, FencedError
from streamkit.runtime.failures import produce_failure
from streamkit.runtime.offsets import Ticket
from streamkit.runtime.processor import Processor, Send
from streamkit.runtime.transaction import FENCING
from streamkit.types import Headers

# (topic, partition, offset) of inputs to dead-letter when they come again.
Poison = dict[tuple[str, int, int], AgentError]


def _holder(settling: bool) -> Send:
    """A sender that keeps each record on its ticket, for :func:`release` to produce.

    One body for both senders: ``settling`` is fixed here, once, and travels
    with each held record to say which delivery callback it gets. The
    returned function is the per-record call itself, with no layer under it.
    """

    def hold(
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None,
        ticket: Ticket,
        timestamp: int = 0,
    ) -> None:
        record = (topic, value, key, headers, settling, timestamp)
        held = ticket.held
        if held is not None:
            held.append(record)
        else:  # the first record of this input
            ticket.held = [record]
            # One pending count for all the held records: the ticket is not
            # done (and its offset not committable) before they are produced.
            ticket.pending += 1

    return hold


# The exactly-once emit sender: keeps an output for the checkpoint.
hold: Send = _holder(False)
# The same for a dead letter or retry-tier move (delivered with ``settle_ack``).
hold_settling: Send = _holder(True)


def drop_held(ticket: Ticket) -> None:
    """Forget the records a failed attempt made."""
    if ticket.held is None:
        return
    ticket.held = None
    ticket.pending -= 1


def poisoning(processor: Processor, poison: Poison) -> Processor:
    """Wrap a compiled agent: poisoned inputs fail at once, failed attempts drop their records."""

    def check(msg: Any) -> None:
        error = poison.pop((msg.topic(), msg.partition(), msg.offset()), None)
        if error is not None:
            raise error

    sync = processor.sync
    if sync is not None:

        def run_sync(msg: Any, ticket: Ticket) -> None:
            if poison:
                check(msg)
            try:
                sync(msg, ticket)
            except BaseException:
                drop_held(ticket)
                raise

        return replace(processor, sync=run_sync)

    run = processor.run_async
    assert run is not None

    async def run_async(msg: Any, ticket: Ticket) -> None:
        if poison:
            check(msg)
        try:
            await run(msg, ticket)
        except BaseException:
            drop_held(ticket)
            raise

    return replace(processor, run_async=run_async)


def release(tickets: list[Ticket], send: Send, settle: Send, poison: Poison) -> list[str]:
    """Produce the held records of finished inputs, in offset order (the checkpoint's step 2).

    Args:
        tickets: A partition's finished run (:meth:`PartitionOffsets.finished_run`).
        send: Produces an output, acknowledged to the ticket.
        settle: Produces a dead letter or tier move (``settle_ack``).
        poison: Where an input whose records were refused goes.

    Returns:
        Inputs refused on the way (poisoned): the transaction must be aborted.

    Raises:
        FencedError: The producer itself can take no record (fenced, fatal).
    """
    refused = []
    for ticket in tickets:
        held = ticket.held
        if held is None:
            continue
        ticket.held = None
        ticket.pending -= 1
        for topic, value, key, headers, settling, timestamp in held:
            try:
                (settle if settling else send)(topic, value, key, headers, ticket, timestamp)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else exc
                if isinstance(err, KafkaError) and (
                    err.fatal() or err.code() in (*FENCING, KafkaError._STATE)
                ):
                    # The producer's state, not the record: nothing to poison.
                    raise FencedError(f"produce() refused by the producer: {err.str()}") from None
                msg = ticket.msg
                if msg is None:  # an idle tick's window results: redone after the abort
                    refused.append(f"window results refused: {err}")
                    break
                error = produce_failure(msg, err, "cannot produce output")
                poison[(msg.topic(), msg.partition(), msg.offset())] = error
                refused.append(str(error))
                break
    return refused


def poison_refused(tickets: list[Ticket], poison: Poison) -> list[str]:
    """Mark inputs whose records the broker refused for good; their names, for the log.

    Retriable refusals (an outage outlasting ``message.timeout.ms``) are not
    marked: after the abort the input simply runs again.
    """
    names = []
    for ticket in tickets:
        msg = ticket.msg
        if msg is None or ticket.error is None:
            continue
        error = produce_failure(msg, ticket.error, "the broker refused a record emitted for it")
        if getattr(error.__cause__, "retriable", True):
            continue
        poison[(msg.topic(), msg.partition(), msg.offset())] = error
        names.append(f"{msg.topic()}[{msg.partition()}]@{msg.offset()}")
    return names
