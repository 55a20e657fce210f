"""A child's restart backoff and when the supervisor gives up on it."""

from __future__ import annotations

from streamkit.processes.children import Child, RestartPolicy

POLICY = RestartPolicy(first_delay=0.5, max_delay=4.0, stable_after=60.0, max_failures=5)


def test_the_delay_doubles_from_the_first_up_to_the_most() -> None:
    assert [POLICY.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_failures_in_a_row_soon_after_start_end_in_giving_up() -> None:
    child = Child(0)
    verdicts = []
    for _ in range(5):
        child.started = 100.0
        verdicts.append(child.failed(POLICY, now=101.0))
    assert verdicts == [True, True, True, True, False]
    assert child.restarts == 4


def test_a_failure_after_a_stable_run_starts_the_count_again() -> None:
    child = Child(0)
    for _ in range(4):
        child.started = 100.0
        assert child.failed(POLICY, now=101.0)
    child.started = 200.0
    assert child.failed(POLICY, now=200.0 + POLICY.stable_after)
    assert child.failures == 1
    assert child.restart_at == 200.0 + POLICY.stable_after + POLICY.first_delay
