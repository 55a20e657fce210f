"""``streamkit dlq show`` and ``dlq redrive`` on a real broker: after a fix, the
dead-lettered records flow into the output; redrives resume and never loop."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable

from click.testing import CliRunner
from confluent_kafka import Producer

from streamkit.cli import main
from streamkit.ops.dlq import RedriveFilter, redrive, summarize
from streamkit.pytest_plugin import NameFactory
from tests.integration.helpers import (
    APP,
    WorkerProcess,
    keyed_records,
    produce,
    read_topic,
    topic_size,
    wait_until_committed,
)


def test_show_then_redrive_after_a_fix(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    unique_name: NameFactory,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    n = 2_000
    app = unique_name("redrive")
    env = {
        "TEST_APP": app,
        "TEST_IN": new_topic(partitions=2),
        "TEST_OUT": new_topic(partitions=2),
        "STREAMKIT_GROUP_ID": app,
        "TEST_RETRY_ATTEMPTS": "1",
    }
    dlq = f"{app}.forward.dlq"
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(n))
    broken = start_worker(APP, **env, TEST_FAIL_MOD="5")  # 1% fail: the bug
    wait_until_committed(kafka_bootstrap, app, env["TEST_IN"], broken)
    broken.signal(signal.SIGTERM)
    assert broken.wait(30) == 0

    summary = summarize(kafka_bootstrap, dlq, samples=2)
    assert summary.total == 20
    assert summary.by_exception == {"RuntimeError": 20}
    assert summary.by_agent == {"forward": 20}
    assert summary.by_source == {env["TEST_IN"]: 20}
    assert len(summary.samples) == 2
    shown = CliRunner().invoke(main, ["dlq", "show", dlq, "--json", "--brokers", kafka_bootstrap])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["by_exception"] == {"RuntimeError": 20}

    dry = redrive(kafka_bootstrap, dlq, RedriveFilter(), dry_run=True)
    assert (dry.matched, dry.sent, dict(dry.by_target)) == (20, 0, {env["TEST_IN"]: 20})
    assert topic_size(kafka_bootstrap, env["TEST_IN"]) == n

    fixed = start_worker(APP, **env)  # the fix is deployed
    # Interrupted after 8 records, then resumed: 20 sent in all, none twice.
    seen = 0

    def interrupt_after_eight() -> bool:
        return seen >= 8

    def count(k: int) -> None:
        nonlocal seen
        seen += k

    first = redrive(
        kafka_bootstrap, dlq, RedriveFilter(), progress=count, stop=interrupt_after_eight
    )
    rest = redrive(kafka_bootstrap, dlq, RedriveFilter())
    assert first.sent + rest.sent == 20 and 0 < first.sent < 20
    assert topic_size(kafka_bootstrap, env["TEST_IN"]) == n + 20

    out = read_topic(kafka_bootstrap, env["TEST_OUT"], n)
    ids = [json.loads(r.value or b"")["id"] for r in out]
    assert sorted(ids) == list(range(n)), "every dead letter flowed into the output once"
    inputs = read_topic(kafka_bootstrap, env["TEST_IN"], n + 20)
    assert sum(1 for r in inputs if ("streamkit.redrive.count", b"1") in r.headers) == 20
    fixed.signal(signal.SIGTERM)
    assert fixed.wait(30) == 0


def test_redrive_skips_records_that_keep_coming_back(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    dlq, source = new_topic(), new_topic()
    headers: list[tuple[str, str | bytes]] = [
        ("__streams.errors.topic", source.encode()),
        ("streamkit.redrive.count", b"3"),
    ]
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(dlq, b"looping", b"k", headers=headers)
    producer.produce(dlq, b"fresh", b"k", headers=headers[:1])
    assert producer.flush(10) == 0
    result = redrive(kafka_bootstrap, dlq, RedriveFilter(max_redrives=3))
    assert (result.matched, result.sent, result.skipped_loop) == (2, 1, 1)
    assert [r.value for r in read_topic(kafka_bootstrap, source, 1)] == [b"fresh"]
