"""Per-partition offset tracking: what may be committed, and nothing more.

Every input record gets a :class:`Ticket` when its processing starts. The
ticket is done when the agent returned *and* every record it emitted was
acknowledged by the broker. A partition's commit position is the offset after
the longest run of done tickets from the front, so a slow or failed record is
never skipped by a later commit, however the records complete.

All methods run on the event-loop thread (librdkafka delivery callbacks fire
inside ``producer.poll()``, which the runtime calls there), so there are no locks.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class Ticket:
    """The in-flight state of one input record.

    The ticket itself is handed to librdkafka as the delivery callback of
    each emitted record (``__call__``): it runs once per output record, and a
    plain instance costs less to pass and to call than a bound method made
    per record (about 0.5 µs of the 1.8 µs per record that bench/README.md
    accounts for).

    A failed delivery report sets ``error``, which holds the position back
    until the failure is handled, and puts the ticket on its partition's
    ``failures`` list, where the worker finds it without scanning every ticket.
    """

    __slots__ = (
        "attempts",
        "error",
        "failures",
        "finished",
        "first_failure_ms",
        "held",
        "msg",
        "offset",
        "pending",
        "refused",
        "settled",
        "writes",
    )

    # Set only once a record failed (read with getattr and a default): the
    # attempts so far and when the first one failed, carried over from one
    # delivery failure of the record to the next.
    attempts: int
    first_failure_ms: int

    def __init__(self, offset: int, msg: Any = None, failures: list[Ticket] | None = None) -> None:
        self.offset = offset
        # The input record, kept for retrying or dead-lettering it if an emit fails later.
        self.msg = msg
        self.failures = failures
        self.pending = 0
        self.finished = False
        self.error: Any = None
        # settled: the record's outcome is a dead letter or a move to a retry
        # tier, so late failures of its earlier emits no longer matter.
        # refused: the broker refused that dead letter or move; the record
        # stays uncommitted for good and the worker stops.
        self.settled = False
        self.refused = False
        # Exactly once: the records made for this input, produced by the
        # checkpoint that commits its offset (streamkit.runtime.exactly_once).
        # None, not unset: catching AttributeError for an input's first
        # output cost 0.6 us per record (bench/eos_profile.py).
        self.held: list[tuple[str, bytes | None, bytes | None, Any, bool, int]] | None = None
        # Exactly once, agents with tables: this input's table writes, folded
        # into the changelog by the checkpoint that releases it (streamkit.state.partition).
        self.writes: list[Any] | None = None

    @property
    def done(self) -> bool:
        """Processed and acknowledged: safe to commit past."""
        return self.finished and self.pending == 0 and self.error is None

    def __call__(self, err: Any, _msg: Any) -> None:
        """Delivery callback: one emitted record was acknowledged (or failed)."""
        self.pending -= 1
        if err is not None and self.error is None and not self.settled:
            self.error = err
            if self.failures is not None:
                self.failures.append(self)

    ack = __call__

    def settle_ack(self, err: Any, _msg: Any) -> None:
        """Delivery callback of the dead letter or retry-tier move that settles this record."""
        self.pending -= 1
        if err is not None:
            self.error = err
            self.refused = True
            if self.failures is not None:
                self.failures.append(self)


class PartitionOffsets:
    """Tickets of one partition, in offset order, and the committable position.

    Two commit marks, because an asynchronous commit is only a request until
    the broker answers: ``sent`` is the position last handed to a commit,
    ``committed`` the last one the broker confirmed. Steady-state commits skip
    a position already sent; the final commits of a revoke or a shutdown skip
    only what was confirmed, so a request still in flight (or one that failed
    while the worker was stopping) is made again, synchronously.
    """

    __slots__ = ("_tickets", "committed", "failures", "position", "sent")

    def __init__(self) -> None:
        self._tickets: deque[Ticket] = deque()
        # position: the next offset to commit (Kafka's convention: last done + 1).
        self.position: int | None = None
        self.sent: int | None = None
        self.committed: int | None = None
        # Tickets whose delivery report failed, in the order they failed.
        self.failures: list[Ticket] = []

    def start(self, offset: int, msg: Any = None) -> Ticket:
        """Open a ticket for a record whose processing begins now."""
        ticket = Ticket(offset, msg, self.failures)
        self._tickets.append(ticket)
        return ticket

    def start_tick(self, origin: int | None) -> Ticket | None:
        """A ticket for work no record brought (windows closed by idle advance).

        It takes the offset of the last record started (or of the one
        before the position, or before ``origin``, the committed offset),
        so passing it never moves the position; ``None`` when none is known.
        """
        tickets = self._tickets
        if tickets:
            offset = tickets[-1].offset
        elif self.position is not None:
            offset = self.position - 1
        elif origin is not None:
            offset = origin - 1
        else:
            return None
        ticket = Ticket(offset, None, self.failures)
        tickets.append(ticket)
        return ticket

    def advance(self) -> int | None:
        """Drop done tickets from the front; return the new position, if it moved."""
        tickets = self._tickets
        last = None
        # Ticket.done spelled out: this loop runs once per record, and the
        # property call was half its cost.
        while tickets:
            head = tickets[0]
            if not head.finished or head.pending or head.error is not None:
                break
            last = tickets.popleft()
        if last is None:
            return None
        self.position = last.offset + 1
        return self.position

    def blocked_by(self) -> Ticket | None:
        """The first unfinished or failed ticket, the one holding the position back."""
        return self._tickets[0] if self._tickets else None

    def failed(self) -> Ticket | None:
        """The first ticket whose emitted records the broker rejected, if any."""
        for ticket in self._tickets:
            if ticket.error is not None:
                return ticket
        return None

    def running(self) -> list[int]:
        """Offsets of the records started and not finished (an agent running or retrying)."""
        return [t.offset for t in self._tickets if not t.finished]

    def frontier(self) -> int | None:
        """The first offset whose record is not finished now, if it is known.

        That is the first record started and not finished, else the one
        after the last record started, else the position; ``None`` when
        nothing was ever started (the next record's offset is not known).
        """
        tickets = self._tickets
        for ticket in tickets:
            if not ticket.finished:
                return ticket.offset
        if tickets:
            return tickets[-1].offset + 1
        return self.position

    def finished_run(self) -> list[Ticket]:
        """The tickets from the front up to the first unfinished one, in offset order."""
        run = []
        for ticket in self._tickets:
            if not ticket.finished:
                break
            run.append(ticket)
        return run

    def unacked(self) -> int:
        """Finished records still waiting for the broker to acknowledge their emits."""
        return sum(1 for t in self._tickets if t.finished and t.pending > 0 and t.error is None)

    @property
    def in_flight(self) -> int:
        """Records started but not yet committable."""
        return len(self._tickets)

    def to_commit(self, confirmed: bool = False) -> int | None:
        """The position if it is ahead of what was last sent (``confirmed``: last confirmed)."""
        self.advance()
        mark = self.committed if confirmed else self.sent
        if self.position is not None and self.position != mark:
            return self.position
        return None

    def confirm(self, offset: int) -> None:
        """The broker confirmed a commit of ``offset``."""
        if self.committed is None or offset > self.committed:
            self.committed = offset

    def unsend(self) -> None:
        """A commit failed: what was sent counts as not sent, so it is sent again."""
        self.sent = self.committed
