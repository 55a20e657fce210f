"""Requests in the harness: replies, task statuses and failures, as the worker writes them."""

from __future__ import annotations

from typing import Any

import pytest

from streamkit import App, Context, DeclarationError, RetryPolicy
from streamkit.client.tasks import _settled_before
from streamkit.delays import DEFAULT_DELAYS, delay_tiers, tier_for
from streamkit.requests import H_CORRELATION, H_REPLY_KEY, H_TASK, request_of
from streamkit.testing import TestApp


def serving() -> tuple[App, Any]:
    app = App("svc")
    jobs = app.topic("jobs", partitions=2)

    @app.agent(jobs, requests=True, retry=RetryPolicy(attempts=1))
    def work(job: dict[str, Any], ctx: Context) -> dict[str, Any]:
        if job.get("fail"):
            raise ValueError("no")
        ctx.progress(0.5, "half")
        return {"double": job["n"] * 2}

    return app, jobs


def test_a_request_gets_its_reply_keyed_for_its_caller_and_plain_records_none() -> None:
    app, jobs = serving()
    with TestApp(app) as t:
        ask = {H_CORRELATION: "c1", H_REPLY_KEY: "caller-9"}
        t.send(jobs, {"n": 4}, key="a", headers=ask)
        t.send(jobs, {"n": 5}, key="b")
        t.run_until_idle()
        (reply,) = t.records("svc.replies")
        assert (reply.key, reply.value) == ("caller-9", {"ok": True, "value": {"double": 8}})
        assert dict(reply.headers)[H_CORRELATION] == b"c1"
        assert t.records("svc.tasks") == []  # an ask is no task: no status


def test_a_task_goes_running_with_progress_then_done_with_its_result() -> None:
    app, jobs = serving()
    with TestApp(app) as t:
        t.send(jobs, {"n": 3}, key="a", headers={H_TASK: "t1"})
        t.run_until_idle()
        states = [
            (r.value["state"], r.value["progress"], r.value["message"])
            for r in t.records("svc.tasks")
        ]
        assert states == [("running", None, None), ("running", 0.5, "half"), ("done", 1.0, None)]
        assert t.records("svc.tasks")[-1].value["result"] == {"double": 6}


def test_a_request_that_fails_for_good_is_answered_with_its_error_and_dead_lettered() -> None:
    app, jobs = serving()
    with TestApp(app) as t:
        t.send(
            jobs,
            {"fail": True},
            key="a",
            headers={H_CORRELATION: "c2", H_REPLY_KEY: "k", H_TASK: "t2"},
        )
        t.run_until_idle()
        (reply,) = t.records("svc.replies")
        assert reply.value["ok"] is False
        error = reply.value["error"]
        assert error["type"] == "builtins.ValueError" and error["message"] == "no"
        assert error["dead_letter_topic"] == "svc.work.dlq" and error["stage"] == "process"
        failed = t.records("svc.tasks")[-1].value
        assert failed["state"] == "failed" and failed["error"] == error
        assert len(t.dead_letters("work")) == 1


def test_requests_need_a_function_that_returns_its_answer() -> None:
    app = App("svc")
    with pytest.raises(DeclarationError, match="not a generator"):

        @app.agent(app.topic("jobs"), requests=True)
        def work(job: Any) -> Any:
            yield job


def test_request_headers_are_read_and_plain_ones_ignored() -> None:
    assert request_of([("trace", b"x")]) is None
    found = request_of([(H_TASK, b"t"), ("streamkit-submitted-at", b"17")])
    assert found is not None and (found.task_id, found.submitted_at) == ("t", 17)


def test_statuses_only_go_forward_and_the_first_final_one_stays() -> None:
    def st(state: str) -> dict[str, Any]:
        return {"state": state}

    assert _settled_before(st("running"), st("queued"))
    assert not _settled_before(st("queued"), st("running"))
    assert not _settled_before(st("running"), st("running"))  # progress
    assert _settled_before(st("done"), st("done"))  # a second run's done
    assert _settled_before(st("failed"), st("done"))


def test_delay_tiers_and_the_tier_a_delay_starts_in() -> None:
    assert delay_tiers(True, "a") == DEFAULT_DELAYS and delay_tiers(False, "a") == ()
    with pytest.raises(DeclarationError, match="delays must be True or distinct whole seconds"):
        delay_tiers([0, 5], "a")
    tiers = (1, 10, 60)
    assert [tier_for(tiers, ms) for ms in (300, 1000, 9999, 10_000, 59_000, 10**9)] == [
        0,
        0,
        0,
        1,
        1,
        2,
    ]
