from types import SimpleNamespace

from streamkit.runtime.bounds import Bounds
from streamkit.types import TopicPartition

A, B, C = TopicPartition("t", 0), TopicPartition("t", 1), TopicPartition("t", 2)


def worker(position: int | None, fetched: int | None = None, in_flight: int = 0) -> SimpleNamespace:
    return SimpleNamespace(
        offsets=SimpleNamespace(position=position, in_flight=in_flight),
        fetch_position=fetched,
        backlog=0,
    )


def test_progress_is_clamped_to_each_range_and_done_only_when_all_reached_their_end() -> None:
    bounds = Bounds(ranges={A: (10, 20), B: (5, 8), C: (0, 3)})
    # A: not started yet (no position), B: past its end (a batch overshoots), C: unassigned.
    done = bounds.progress({A: worker(None), B: worker(9)})
    assert done == {A: 10, B: 8, C: 0}
    assert not bounds.reached(done)
    done = bounds.progress({A: worker(20), B: worker(8), C: worker(3)})
    assert bounds.reached(done)


def test_a_partition_fetched_past_its_end_with_nothing_in_flight_is_done() -> None:
    # The last offsets of a topic written in transactions are commit markers:
    # no record comes from them, so the commit position stops short of the end.
    tp = TopicPartition("in", 0)
    bounds = Bounds({tp: (0, 10)})
    assert bounds.progress({tp: worker(8, fetched=10)}) == {tp: 10}
    assert bounds.progress({tp: worker(8, fetched=10, in_flight=1)}) == {tp: 8}
    assert bounds.progress({tp: worker(8, fetched=9)}) == {tp: 8}
