from streamkit.runtime.offsets import PartitionOffsets, Ticket


def finish(ticket: Ticket, acks: int = 0) -> Ticket:
    ticket.pending += acks
    ticket.finished = True
    return ticket


def test_position_is_after_last_contiguous_done() -> None:
    offsets = PartitionOffsets()
    a, b, c = (offsets.start(o) for o in (10, 11, 12))
    finish(a)
    finish(c)
    assert offsets.advance() == 11
    assert offsets.blocked_by() is b
    finish(b)
    assert offsets.advance() == 13
    assert offsets.in_flight == 0


def test_unacked_emits_hold_the_position() -> None:
    offsets = PartitionOffsets()
    t = finish(offsets.start(5), acks=2)
    assert offsets.advance() is None
    assert offsets.unacked() == 1
    t.ack(None, None)
    assert offsets.advance() is None
    t.ack(None, None)
    assert offsets.advance() == 6


def test_failed_delivery_blocks_forever() -> None:
    offsets = PartitionOffsets()
    t = finish(offsets.start(0), acks=1)
    t.ack("MSG_SIZE_TOO_LARGE", None)
    assert offsets.advance() is None
    assert offsets.failed() is t
    assert offsets.blocked_by() is t


def test_to_commit_only_when_moved() -> None:
    offsets = PartitionOffsets()
    finish(offsets.start(0))
    assert offsets.to_commit() == 1
    offsets.sent = 1
    assert offsets.to_commit() is None


def test_a_sent_commit_counts_as_done_only_once_confirmed() -> None:
    offsets = PartitionOffsets()
    finish(offsets.start(0))
    offsets.sent = offsets.to_commit()
    assert offsets.to_commit() is None, "steady state: not sent twice"
    assert offsets.to_commit(confirmed=True) == 1, "a final commit sends it again"
    offsets.unsend()
    assert offsets.to_commit() == 1, "a failed commit is sent again"
    offsets.confirm(1)
    assert offsets.to_commit(confirmed=True) is None


def test_a_refused_settling_record_blocks_for_good_and_is_reported() -> None:
    offsets = PartitionOffsets()
    ticket = offsets.start(0)
    ticket.settled = True
    ticket.pending += 1
    ticket.finished = True
    ticket.settle_ack("UNKNOWN_TOPIC_OR_PART", None)
    assert ticket.refused and offsets.failures == [ticket]
    assert offsets.advance() is None


def test_late_emit_failures_of_a_settled_record_are_moot() -> None:
    offsets = PartitionOffsets()
    ticket = offsets.start(0)
    ticket.pending += 2  # an emit, then its dead letter
    ticket.settled = True
    ticket.finished = True
    ticket.ack("MSG_TIMED_OUT", None)
    ticket.settle_ack(None, None)
    assert offsets.failures == []
    assert offsets.advance() == 1
