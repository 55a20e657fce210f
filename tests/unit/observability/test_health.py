"""Liveness and readiness decided from a fake worker and a hand-driven clock."""

from __future__ import annotations

import orjson

from streamkit.observability import Health
from streamkit.types import TopicPartition
from tests.unit.observability.worker_fakes import (
    FakeFetcher,
    FakeTables,
    FakeTicket,
    FakeWorker,
    orders_worker,
)

TIMEOUT = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def running() -> tuple[Health, Clock, FakeWorker]:
    clock = Clock()
    worker = orders_worker()
    worker.heartbeat = clock.now
    worker.handlers.joined = True
    return Health(worker, TIMEOUT, clock=clock), clock, worker


def test_before_the_loop_runs_it_is_live_and_waiting_for_kafka() -> None:
    # run_app starts the endpoint, then waits for the broker: until the event
    # loop runs, `kubectl describe` should say what the pod is waiting on.
    worker = orders_worker()
    health = Health(worker, TIMEOUT)
    assert health.live().ok and health.live().reason == "starting"
    ready = health.ready()
    assert not ready.ok and ready.reason == "waiting for kafka"


def test_once_the_loop_runs_it_waits_for_the_group() -> None:
    clock = Clock()
    worker = orders_worker()
    worker.heartbeat = clock.now  # connected: the consumer subscribed, the loop ticks
    ready = Health(worker, TIMEOUT, clock=clock).ready()
    assert not ready.ok and ready.reason == "not in the group yet"


def test_ready_after_the_first_assignment_even_an_empty_one() -> None:
    clock = Clock()
    worker = orders_worker()
    worker.heartbeat = clock.now
    health = Health(worker, TIMEOUT, clock=clock)
    assert not health.ready().ok
    worker.handlers.joined = True  # on_assign([]) for an idle member
    assert health.ready().ok
    assert health.live().reason == "live"


def test_an_idle_kip848_member_is_ready_once_the_coordinator_is_up() -> None:
    clock = Clock()
    worker = orders_worker()
    worker.heartbeat = clock.now
    health = Health(worker, TIMEOUT, kip848=True, clock=clock)
    worker.stats = orjson.dumps({"cgrp": {"state": "wait-coord", "join_state": "init"}}).decode()
    assert not health.ready().ok
    worker.stats = orjson.dumps({"cgrp": {"state": "up", "join_state": "init"}}).decode()
    assert health.ready().ok
    # The classic protocol always calls on_assign: statistics do not count there.
    assert not Health(worker, TIMEOUT, kip848=False, clock=clock).ready().ok


def test_a_blocked_event_loop_fails_liveness_and_readiness() -> None:
    health, clock, _ = running()
    clock.now += TIMEOUT  # exactly the limit: still live
    assert health.live().ok
    clock.now += 1
    live = health.live()
    assert not live.ok and "event loop has not run for 11s" in live.reason
    ready = health.ready()
    assert not ready.ok and ready.reason == live.reason


def test_stopping_is_live_and_not_ready() -> None:
    health, clock, worker = running()
    clock.now += 3 * TIMEOUT  # the drain does not tick the loop
    worker.stopping = True
    assert health.live().ok and health.live().reason == "stopping"
    assert not health.ready().ok and health.ready().reason == "stopping"


def test_a_stuck_poll_thread_fails_after_timeout_plus_the_revoke_budget() -> None:
    health, clock, worker = running()
    fetcher = FakeFetcher(polls=5)
    worker.fetcher = fetcher
    budget = worker.handlers.budget
    assert health.live().ok  # first sight of the counter
    for _ in range(5):
        clock.now += 5
        worker.heartbeat = clock.now
        fetcher.polls += 1
        assert health.live().ok
    clock.now += TIMEOUT + budget  # a revoke may hold the thread this long
    worker.heartbeat = clock.now
    assert health.live().ok
    clock.now += 1
    worker.heartbeat = clock.now
    live = health.live()
    assert not live.ok and "poll thread has not polled for 41s" in live.reason


def test_an_agent_stuck_on_one_record_fails_liveness() -> None:
    health, clock, worker = running()
    partition = worker.workers[TopicPartition("orders", 1)]
    stuck = FakeTicket(offset=42)
    partition.offsets.tickets = [stuck, FakeTicket(offset=43)]
    assert health.live().ok
    clock.now += TIMEOUT + 1
    worker.heartbeat = clock.now
    assert worker.fetcher is not None
    worker.fetcher.polls += 1
    live = health.live()
    assert not live.ok
    assert live.reason == "agent enrich has been on record orders[1]@42 for 11s"
    # It finished; the next record is new: the clock starts again for it.
    partition.offsets.tickets = [FakeTicket(offset=43)]
    assert health.live().ok


def test_records_waiting_only_for_acks_do_not_count_as_stuck() -> None:
    health, clock, worker = running()
    partition = worker.workers[TopicPartition("orders", 0)]
    partition.offsets.tickets = [FakeTicket(offset=7, finished=True)]  # emits not acked yet
    health.live()
    clock.now += 10 * TIMEOUT
    worker.heartbeat = clock.now
    assert worker.fetcher is not None
    worker.fetcher.polls += 1
    assert health.live().ok


def test_progress_between_probes_resets_the_record_clock() -> None:
    health, clock, worker = running()
    partition = worker.workers[TopicPartition("orders", 0)]
    for offset in range(5):
        partition.offsets.tickets = [FakeTicket(offset=offset)]
        clock.now += TIMEOUT - 1
        worker.heartbeat = clock.now
        assert worker.fetcher is not None
        worker.fetcher.polls += 1
        assert health.live().ok


def test_a_worker_restoring_a_table_is_live_and_not_ready() -> None:
    clock = Clock()
    worker = orders_worker()
    worker.heartbeat = clock.now
    worker.handlers.joined = True
    worker.tables = FakeTables(restoring_now=["counts[1]"])
    health = Health(worker, TIMEOUT, clock=clock)
    assert health.live().ok
    assert (health.ready().ok, health.ready().reason) == (False, "restoring counts[1]")
    worker.tables.restoring_now = []
    assert health.ready().ok
