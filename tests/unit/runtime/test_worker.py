"""The worker's delivery invariants on the in-memory broker.

Each test drives the real worker through :class:`streamkit.testing.TestApp`
and asserts on what the group committed: an offset is committed past a
record only once its emits, its dead letter or its move to a retry tier were
acknowledged. The ways an emit's delivery report fails are each covered:
dead letters off, a refused dead letter, a tripped dead-letter limit, and a
``produce()`` that raises.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import structlog
from confluent_kafka import KafkaError, KafkaException

from streamkit import App, DeadLetterPolicy, RetryPolicy, StreamkitError
from streamkit.backends.memory import MemoryBackend, MemoryProducer
from streamkit.config import AppConfig
from streamkit.runtime.bounds import Bounds
from streamkit.runtime.failures import H_ATTEMPTS, H_STAGE
from streamkit.runtime.worker import Worker
from streamkit.testing import TestApp
from streamkit.types import TopicPartition

T = TypeVar("T")


def make_app(
    dead_letter: DeadLetterPolicy | None = None,
    retry: RetryPolicy | None = None,
    fail_ids: frozenset[int] = frozenset(),
) -> App:
    app = App("holes", brokers="127.0.0.1:9092")
    source, sink = app.topic("in", value_serde="json"), app.topic("out", value_serde="json")

    @app.agent(source, emits=[sink], name="fwd", dead_letter=dead_letter, retry=retry)
    def fwd(value: Any) -> Any:
        if value["id"] in fail_ids:
            raise RuntimeError(f"record {value['id']} fails")
        return value

    return app


def refuse_topic(t: TestApp, topic: str) -> None:
    """Make the broker refuse every record produced to ``topic`` (a delivery-report error)."""
    del t.broker._logs[topic]


def assert_not_committed_past(t: TestApp, offset: int) -> None:
    committed = t.committed("in")
    assert committed.get(0, 0) <= offset, f"committed {committed} past offset {offset}"


def run_failing(t: TestApp, *refused: str) -> BaseException:
    """Send records 0 and 1, refuse ``refused`` topics, run until the worker stops."""
    with pytest.raises(StreamkitError) as caught, t:
        t.send("in", {"id": 0}, partition=0)
        t.send("in", {"id": 1}, partition=0)
        for topic in refused:
            refuse_topic(t, topic)
        t.run_until_idle()
    return caught.value


def test_a_refused_emit_with_dead_letters_off_stays_uncommitted() -> None:
    app = make_app(dead_letter=DeadLetterPolicy(enabled=False))
    t = TestApp(app, commit_every=1)
    run_failing(t, "out")
    assert_not_committed_past(t, 0)


def test_a_refused_emit_whose_dead_letter_is_refused_too_stays_uncommitted() -> None:
    t = TestApp(make_app(), commit_every=1)
    error = run_failing(t, "out", "holes.fwd.dlq")
    assert "refused" in str(error)
    assert_not_committed_past(t, 0)


def test_a_failed_record_whose_dead_letter_is_refused_stays_uncommitted() -> None:
    t = TestApp(make_app(fail_ids=frozenset({0})), commit_every=1)
    run_failing(t, "holes.fwd.dlq")
    assert_not_committed_past(t, 0)


def test_a_refused_emit_that_trips_the_dead_letter_limit_stays_uncommitted() -> None:
    app = make_app(dead_letter=DeadLetterPolicy(max_ratio=0.01, window=10))
    t = TestApp(app, commit_every=1)
    run_failing(t, "out")
    assert_not_committed_past(t, 0)


@pytest.fixture
def dead_letters_raise(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``produce()`` of a dead letter raises, as librdkafka does for a record over
    ``message.max.bytes`` or from a producer in a fatal state."""
    produce = MemoryProducer.produce

    def raising(self: MemoryProducer, topic: str, *args: Any, **kwargs: Any) -> None:
        if topic.endswith(".dlq"):
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large"))
        produce(self, topic, *args, **kwargs)

    monkeypatch.setattr(MemoryProducer, "produce", raising)
    yield


@pytest.mark.usefixtures("dead_letters_raise")
def test_a_dead_letter_whose_produce_raises_stays_uncommitted() -> None:
    t = TestApp(make_app(), commit_every=1)
    run_failing(t, "out")
    assert_not_committed_past(t, 0)


def fail_deliveries(monkeypatch: pytest.MonkeyPatch, topic: str, code: int, times: int) -> None:
    """The next ``times`` records produced to ``topic`` fail in their delivery report."""
    produce = MemoryProducer.produce
    left = [times]

    def failing(self: MemoryProducer, name: str, *args: Any, **kwargs: Any) -> None:
        if name != topic or not left[0]:
            produce(self, name, *args, **kwargs)
            return
        left[0] -= 1
        report = kwargs.get("on_delivery") or kwargs.get("callback") or args[3]
        self._reports.append((report, KafkaError(code, "refused by the test"), None))  # type: ignore[arg-type]

    monkeypatch.setattr(MemoryProducer, "produce", failing)


def test_a_timed_out_emit_is_retried_in_place_and_goes_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fail_deliveries(monkeypatch, "out", KafkaError._MSG_TIMED_OUT, times=2)
    t = TestApp(make_app(retry=RetryPolicy(attempts=3, backoff=0.001)), commit_every=1)
    with t:
        t.send("in", {"id": 0}, partition=0)
        t.send("in", {"id": 1}, partition=0)
        t.run_until_idle()
        assert sorted(v["id"] for v in t.output("out")) == [0, 1]
        assert t.dead_letters("fwd") == []
    assert t.committed("in") == {0: 2}


def test_a_timed_out_emit_past_its_attempts_is_dead_lettered_with_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fail_deliveries(monkeypatch, "out", KafkaError._MSG_TIMED_OUT, times=3)
    t = TestApp(make_app(retry=RetryPolicy(attempts=3, backoff=0.001)), commit_every=1)
    with t:
        t.send("in", {"id": 0}, partition=0)
        t.run_until_idle()
        letters = t.dead_letters("fwd")
    assert [r.value for r in letters] == [b'{"id":0}']
    headers = dict(letters[0].headers)
    assert headers[H_STAGE] == b"produce"
    assert headers[H_ATTEMPTS] == b"3", "delivery failures get the in-place retries"
    assert t.committed("in") == {0: 1}


def test_a_record_too_large_for_the_broker_goes_straight_to_the_dead_letter_topic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fail_deliveries(monkeypatch, "out", KafkaError.MSG_SIZE_TOO_LARGE, times=1)
    t = TestApp(make_app(retry=RetryPolicy(attempts=5, backoff=0.001)), commit_every=1)
    with t:
        t.send("in", {"id": 0}, partition=0)
        t.send("in", {"id": 1}, partition=0)
        t.run_until_idle()
        letters = t.dead_letters("fwd")
        assert [v["id"] for v in t.output("out")] == [1]
    assert [r.value for r in letters] == [b'{"id":0}']
    assert dict(letters[0].headers)[H_ATTEMPTS] == b"1", "a permanent error is not retried"
    assert t.committed("in") == {0: 2}


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def the_worker(t: TestApp) -> Worker:
    return t._running[0].worker


def on_loop(t: TestApp, fn: Callable[[], T]) -> T:
    assert t._thread is not None
    return t._thread.call(fn, 5)


def test_records_waiting_in_a_retry_tier_do_not_starve_the_source_partitions() -> None:
    # 300 failures move to a tier due in 60 s; 300 healthy records come after
    # them. With a 100-record budget the tier's waiting records must not
    # count, or the healthy ones wait for the tier's delay.
    failing = frozenset(range(300))
    app = make_app(retry=RetryPolicy(attempts=1, retry_topics=(60,)), fail_ids=failing)
    with TestApp(app, max_buffered_records=100, fetch_batch=50) as t:
        for i in range(600):
            t.send("in", {"id": i}, partition=0)
        wait_for(lambda: len(t.output("out")) == 300, "the healthy records", timeout=20)
        assert sorted(v["id"] for v in t.output("out")) == list(range(300, 600))
        tier = the_worker(t).workers.get(("holes.fwd.retry.60s", 0))
        assert tier is not None and tier.paused, "a tier whose head is not due is paused"


@pytest.fixture
def full_queue(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """While set, the producer reports a full queue (a broker outage's symptom)."""
    full = threading.Event()
    length = MemoryProducer.__len__
    monkeypatch.setattr(
        MemoryProducer, "__len__", lambda self: 10**9 if full.is_set() else length(self)
    )
    return full


def test_a_full_producer_queue_holds_records_back_without_blocking_the_loop(
    full_queue: threading.Event,
) -> None:
    t = TestApp(make_app(), commit_every=1)
    with t:
        full_queue.set()
        t.send("in", {"id": 0}, partition=0)
        worker = the_worker(t)
        wait_for(lambda: worker.records == 1, "the record fetched")
        beat = worker.heartbeat
        wait_for(lambda: worker.heartbeat != beat, "the loop ticking while the queue is full")
        assert t.output("out") == [], "no record starts while the queue is full"
        full_queue.clear()
        t.run_until_idle()
        assert [v["id"] for v in t.output("out")] == [0]


def test_stopping_while_the_producer_queue_is_full_leaves_the_records_uncommitted(
    full_queue: threading.Event,
) -> None:
    t = TestApp(make_app(), commit_every=1, shutdown_timeout=1)
    with t:
        full_queue.set()
        t.send("in", {"id": 0}, partition=0)
        wait_for(lambda: the_worker(t).records == 1, "the record fetched")
    assert t.committed("in") == {}
    assert t.output("out") == []


def test_one_hung_record_keeps_a_bounded_number_of_records_behind_it() -> None:
    app = App("hung", brokers="127.0.0.1:9092")
    release = threading.Event()

    sink = app.topic("out", value_serde="json")

    @app.agent(app.topic("in", value_serde="json"), emits=[sink], concurrency=8)
    async def slow(value: Any) -> Any:
        while value["id"] == 0 and not release.is_set():
            await asyncio.sleep(0.01)
        return value

    with TestApp(app, max_buffered_records=100) as t:
        for i in range(2_000):
            t.send("in", {"id": i}, partition=0)
        worker = the_worker(t)

        def held() -> int:
            partition = worker.workers.get(("in", 0))
            return 0 if partition is None else partition.offsets.in_flight

        wait_for(lambda: held() >= 25, "records piling up behind the hung one")
        wait_for(lambda: len(t.output("out")) >= 24, "the records that fit")
        outputs = len(t.output("out"))
        assert on_loop(t, held) <= 100 // 4, "a partition holds a quarter of the budget"
        assert outputs < 100, f"{outputs} records finished behind a hung head"
        release.set()
        t.run_until_idle()
        assert len(t.output("out")) == 2_000
    assert t.committed("in") == {0: 2_000}


def test_a_lost_partition_leaves_no_parked_task_behind() -> None:
    with TestApp(make_app()) as t:
        t.send("in", {"id": 0}, partition=0)
        t.run_until_idle()
        old = the_worker(t).workers[TopicPartition("in", 0)]
        t.expire_session()
        wait_for(lambda: old._task is not None and old._task.done(), "the old task ending")


def test_a_timers_topic_with_more_partitions_than_declared_does_not_stop_the_worker() -> None:
    app = make_app()

    @app.timer(every=3600)
    def hourly() -> None:
        return None

    t = TestApp(app)
    del t.broker._logs[app.timers_topic.name]
    t.broker.create_topic(app.timers_topic.name, 2)
    with t:
        t.send("in", {"id": 0}, partition=0)
        t.run_until_idle()
        assert [v["id"] for v in t.output("out")] == [0]


def test_a_replay_never_writes_to_the_live_retry_tiers_and_redirects_dead_letters() -> None:
    app = make_app(retry=RetryPolicy(retry_topics=(60,)))
    config = AppConfig.load("holes", {"brokers": "127.0.0.1:9092"}, env={})
    bounds = Bounds(
        ranges={TopicPartition("in", 0): (0, 10)},
        redirect={"out": "out.shadow", "holes.fwd.dlq": "holes.fwd.dlq.shadow"},
    )
    worker = Worker(
        app, app.select(()), config, backend=MemoryBackend(), handle_signals=False, bounds=bounds
    )
    recovery = worker.recoveries["in"]
    assert recovery._tiers == ()
    assert recovery._dlq == "holes.fwd.dlq.shadow"


def test_a_retry_tier_is_one_try_and_attempts_count_in_place_tries_plus_one_per_tier() -> None:
    # RetryPolicy(attempts=3, retry_topics=(1,)): 3 in place, then 1 when
    # due in the tier, then the dead-letter topic: attempts=4.
    app = make_app(
        retry=RetryPolicy(attempts=3, backoff=0.001, retry_topics=(1,)), fail_ids=frozenset({0})
    )
    with TestApp(app, commit_every=1) as t:
        t.send("in", {"id": 0}, partition=0)
        t.run_until_idle()  # the tier's 1 s passes on the harness clock
        [letter] = t.dead_letters("fwd")
    assert dict(letter.headers)[H_ATTEMPTS] == b"4"


def test_a_tripped_dead_letter_limit_is_one_line_with_the_traceback_at_debug() -> None:
    app = make_app(dead_letter=DeadLetterPolicy(max_consecutive=1), fail_ids=frozenset({0, 1}))
    with structlog.testing.capture_logs() as logs:
        run_failing(TestApp(app, commit_every=1))
    [stopped] = [e for e in logs if e["event"] == "stopped after an error"]
    assert stopped["kind"] == "DeadLetterLimitError" and "exc_info" not in stopped
    assert "in a row failed" in stopped["error"]
    assert any(e["log_level"] == "debug" and "exc_info" in e for e in logs)
