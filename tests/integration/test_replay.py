"""``streamkit replay`` on a real broker: one day out of three, redirected to a
shadow topic, without touching the live group; interrupted and resumed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from streamkit.ops.replay import parse_point, replay_key
from streamkit.pytest_plugin import NameFactory
from tests.command_line import run_cli
from tests.integration.helpers import (
    APP,
    ROOT,
    WorkerProcess,
    command_env,
    committed,
    keyed_records,
    produce,
    read_topic,
    topic_size,
    wait_until,
    wait_until_committed,
)

DAY0 = datetime(2026, 11, 1, tzinfo=UTC)
PER_DAY = 1_500


def produce_three_days(bootstrap: str, topic: str) -> dict[int, int]:
    """1,500 records per day over three days; returns record id -> day."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    days = {}
    for i in range(3 * PER_DAY):
        day = i // PER_DAY
        ts = DAY0 + timedelta(days=day, seconds=(i % PER_DAY) * 50)
        days[i] = day
        producer.produce(
            topic,
            json.dumps({"id": i, "n": i}).encode(),
            f"k{i % 97}".encode(),
            timestamp=int(ts.timestamp() * 1000),
        )
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    return days


def test_replay_one_day_into_a_shadow_topic_leaves_the_live_group_alone(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    app_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    env = app_env("replay", partitions=4)
    app = env["TEST_APP"]
    shadow = new_topic(partitions=4)
    days = produce_three_days(kafka_bootstrap, env["TEST_IN"])
    live = start_worker(APP, **env)
    wait_until_committed(kafka_bootstrap, app, env["TEST_IN"], live)
    live.signal(signal.SIGTERM)
    assert live.wait(30) == 0
    live_offsets = committed(kafka_bootstrap, app, env["TEST_IN"], 4)

    cli_env = command_env(kafka_bootstrap, **env)
    day1, day2 = (DAY0 + timedelta(days=d) for d in (1, 2))
    args = [
        "replay", APP, "--agent", "forward", "--from", day1.isoformat(), "--to", day2.isoformat(),
        "--redirect", f"{env['TEST_OUT']}={shadow}",
    ]  # fmt: skip
    dry = run_cli(cli_env, *args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    # Four partitions, 1,500 records of the day spread over them.
    rows = [line.split("│") for line in dry.stderr.splitlines() if line.startswith("│")]
    counts = [int(row[4].strip().replace(",", "")) for row in rows]
    assert sum(counts) == PER_DAY, dry.stderr
    assert topic_size(kafka_bootstrap, shadow) == 0, "a dry run wrote records"

    # Without --yes and without a terminal (as here): the same preview, then nothing.
    looked = run_cli(cli_env, *args)
    assert looked.returncode == 4, looked.stderr
    assert looked.stderr.strip().endswith("streamkit: nothing done: pass --yes to run it")
    assert f"{env['TEST_OUT']} -> {shadow} (redirected)" in looked.stderr
    assert topic_size(kafka_bootstrap, shadow) == 0, "an unconfirmed replay wrote records"
    start, end = (parse_point(day.isoformat(), "") for day in (day1, day2))
    key = replay_key("forward", start, end, None, {env["TEST_OUT"]: shadow})
    group = f"{app}.replay.forward.{key}"  # what the preview printed; stored nothing
    assert set(committed(kafka_bootstrap, f"{group}.range", env["TEST_IN"], 4).values()) == {
        -1001
    }, "an unconfirmed replay stored its range"

    done = run_cli(cli_env, *args, "--yes")
    assert done.returncode == 0, done.stderr
    assert "replay summary" in done.stderr
    out = [json.loads(r.value or b"") for r in read_topic(kafka_bootstrap, shadow, PER_DAY)]
    ids = Counter(v["id"] for v in out)
    assert set(ids) == {i for i, d in days.items() if d == 1}, "exactly the records of day 2"
    assert max(ids.values()) == 1, "processed once each"
    assert committed(kafka_bootstrap, app, env["TEST_IN"], 4) == live_offsets
    assert topic_size(kafka_bootstrap, env["TEST_OUT"]) == 3 * PER_DAY, "live output untouched"


def test_a_sigtermed_replay_exits_3_and_a_rerun_resumes_where_it_stopped(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    unique_name: NameFactory,
) -> None:
    app = unique_name("resume")
    env = {"TEST_APP": app, "TEST_IN": new_topic(partitions=2), "TEST_OUT": new_topic(partitions=2)}
    shadow = new_topic(partitions=2)
    produce_three_days(kafka_bootstrap, env["TEST_IN"])
    cli_env = command_env(kafka_bootstrap, STREAMKIT_COMMIT_INTERVAL="0.2", **env)
    args = [
        "replay", APP, "--agent", "forward", "--redirect", f"{env['TEST_OUT']}={shadow}",
        "--whole-topic", "--yes",
    ]  # fmt: skip
    first = subprocess.Popen(
        [sys.executable, "-m", "streamkit", *args, "--rate", "1500"],
        env=cli_env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: topic_size(kafka_bootstrap, shadow) >= 1_000, 60, "replay progress")
        # What a node drain or a preemption sends: the Job must not count it as done.
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 3, "interrupted: rerun to resume"
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    stopped_at = topic_size(kafka_bootstrap, shadow)
    assert stopped_at < 3 * PER_DAY, "the replay finished before it was interrupted"
    # Producers keep writing: the same command (no --to) must still resume
    # the window fixed by the first run, not start a new one at the new end.
    produce(kafka_bootstrap, env["TEST_IN"], [
        (b"late", json.dumps({"id": 3 * PER_DAY + i, "n": i}).encode()) for i in range(300)
    ])  # fmt: skip

    second = run_cli(cli_env, *args)
    assert second.returncode == 0, second.stderr
    out = [json.loads(r.value or b"") for r in read_topic(kafka_bootstrap, shadow, 3 * PER_DAY)]
    ids = Counter(v["id"] for v in out)
    assert set(ids) == set(range(3 * PER_DAY)), (
        "every record of the first run's window, no later one"
    )
    assert topic_size(kafka_bootstrap, shadow) == 3 * PER_DAY
    duplicates = sum(c - 1 for c in ids.values())
    print(f"interrupted after {stopped_at} records; {duplicates} processed twice")
    assert duplicates == 0, "a graceful interrupt commits what finished"


def test_a_replay_refuses_the_live_group_and_any_group_in_use(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    unique_name: NameFactory,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    app, other = unique_name("live"), unique_name("other")
    env = {"TEST_APP": app, "TEST_IN": new_topic(partitions=2), "TEST_OUT": new_topic(partitions=2)}
    shadow = new_topic(partitions=2)
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(20))
    # Another pipeline reading the same topic in its own group, running now.
    running = start_worker(APP, **{**env, "TEST_APP": other, "STREAMKIT_GROUP_ID": other})
    wait_until_committed(kafka_bootstrap, other, env["TEST_IN"], running)
    cli_env = command_env(kafka_bootstrap, **env)
    args = [
        "replay", APP, "--agent", "forward", "--redirect", f"{env['TEST_OUT']}={shadow}",
        "--whole-topic", "--yes",
    ]  # fmt: skip
    for group, why in ((app, "is the app's live consumer group"), (other, "active member")):
        refused = run_cli(cli_env, *args, "--group", group)
        assert refused.returncode == 2, refused.stderr
        assert why in refused.stderr and "overwrite" in refused.stderr, refused.stderr
    running.signal(signal.SIGTERM)
    assert running.wait(30) == 0
    # Stopped (or scaled to zero): no members, but its commits are not a replay's.
    refused = run_cli(cli_env, *args, "--group", other)
    assert refused.returncode == 2, refused.stderr
    assert "committed offsets" in refused.stderr and "no replay made" in refused.stderr
    assert topic_size(kafka_bootstrap, shadow) == 0, "a refused replay ran"


def test_a_replay_never_writes_to_the_live_retry_tiers_and_its_dead_letters_follow_redirect(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    unique_name: NameFactory,
    admin: AdminClient,
) -> None:
    """The live group reads the tier topics and emits to the live outputs: a
    replay's failures must stay out of them. Record 7 always fails."""
    app = unique_name("tiers")
    env = {
        "TEST_APP": app,
        "TEST_IN": new_topic(partitions=1),
        "TEST_OUT": new_topic(partitions=1),
        "TEST_RETRY_TOPICS": "60",
        "TEST_RETRY_ATTEMPTS": "1",
        "TEST_FAIL_ID": "7",
    }
    shadow, shadow_dlq = new_topic(partitions=1), unique_name("shadow-dlq")
    live_dlq, live_tier = f"{app}.forward.dlq", f"{app}.forward.retry.60s"
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(20))
    cli_env = command_env(kafka_bootstrap, **env)
    done = run_cli(
        cli_env, "replay", APP, "--agent", "forward", "--whole-topic", "--yes",
        "--redirect", f"{env['TEST_OUT']}={shadow}", "--redirect", f"{live_dlq}={shadow_dlq}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [dead] = read_topic(kafka_bootstrap, shadow_dlq, 1)
    assert json.loads(dead.value or b"")["id"] == 7
    assert {json.loads(r.value or b"")["id"] for r in read_topic(kafka_bootstrap, shadow, 19)} == (
        set(range(20)) - {7}
    )
    live = admin.list_topics(timeout=30).topics
    for name in (live_tier, live_dlq):
        assert name not in live or topic_size(kafka_bootstrap, name) == 0, f"{name} was written"
    assert topic_size(kafka_bootstrap, env["TEST_OUT"]) == 0, "live output written"


def test_a_replay_into_live_topics_or_of_the_whole_topic_must_be_asked_for(
    kafka_bootstrap: str, new_topic: Callable[..., str], unique_name: NameFactory
) -> None:
    """One missing option must not replay the whole retained topic into the live output."""
    app = unique_name("explicit")
    env = {"TEST_APP": app, "TEST_IN": new_topic(partitions=2), "TEST_OUT": new_topic(partitions=2)}
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(20))
    cli_env = command_env(kafka_bootstrap, **env)
    args = ["replay", APP, "--agent", "forward", "--yes"]
    refused = run_cli(cli_env, *args)
    assert refused.returncode == 2, refused.stderr
    assert "pass --to-live-topics to mean it" in refused.stderr
    assert "pass --whole-topic to mean it" in refused.stderr
    assert topic_size(kafka_bootstrap, env["TEST_OUT"]) == 0
    done = run_cli(cli_env, *args, "--to-live-topics", "--whole-topic")
    assert done.returncode == 0, done.stderr
    assert f"{env['TEST_OUT']} (LIVE topic)" in done.stderr
    assert topic_size(kafka_bootstrap, env["TEST_OUT"]) == 20
