"""``streamkit dlq show`` and ``dlq redrive`` on a real broker: after a fix, the
dead-lettered records flow into the output; redrives resume and never loop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable

from confluent_kafka import Producer

from streamkit.config import AppConfig
from streamkit.ops.dlq import RedriveFilter, redrive, summarize
from streamkit.pytest_plugin import NameFactory
from tests.integration.helpers import (
    APP,
    ROOT,
    WorkerProcess,
    keyed_records,
    produce,
    read_topic,
    topic_size,
    wait_until_committed,
)


def run_cli(bootstrap: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m streamkit ...`` as an operator runs it: its logging stays out of this process."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKIT_")}
    return subprocess.run(
        [sys.executable, "-m", "streamkit", *args],
        env={**base, "STREAMKIT_BROKERS": bootstrap, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command's own error line; librdkafka's log lines may come after it."""
    [line] = [line for line in result.stderr.splitlines() if line.startswith("streamkit:")]
    return line


def connect(bootstrap: str) -> AppConfig:
    return AppConfig.load("streamkit", {"brokers": bootstrap}, env={})


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

    config = connect(kafka_bootstrap)
    summary = summarize(config, dlq, samples=2)
    assert summary.total == 20
    assert summary.by_exception == {"RuntimeError": 20}
    assert summary.by_agent == {"forward": 20}
    assert summary.by_source == {env["TEST_IN"]: 20}
    assert len(summary.samples) == 2
    shown = run_cli(kafka_bootstrap, "dlq", "show", dlq, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["by_exception"] == {"RuntimeError": 20}

    dry = redrive(config, dlq, RedriveFilter(), dry_run=True)
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

    first = redrive(config, dlq, RedriveFilter(), progress=count, stop=interrupt_after_eight)
    rest = redrive(config, dlq, RedriveFilter())
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
    result = redrive(connect(kafka_bootstrap), dlq, RedriveFilter(max_redrives=3))
    assert (result.matched, result.sent, result.skipped_loop) == (2, 1, 1)
    assert [r.value for r in read_topic(kafka_bootstrap, source, 1)] == [b"fresh"]


def test_dlq_commands_connect_with_the_pass_through_properties(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    dlq, source = new_topic(partitions=2), new_topic()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(3):
        producer.produce(dlq, b"v%d" % i, b"k", headers=[("__streams.errors.topic", source)])
    assert producer.flush(10) == 0

    show, send = ["dlq", "show", dlq, "--json"], ["dlq", "redrive", dlq, "--yes"]
    # TLS for the consumer only: the reader speaks TLS to the plaintext
    # listener and gets no answer. Before, the setting was ignored and this worked.
    tls_reader = {"STREAMKIT_CONSUMER_SECURITY_PROTOCOL": "SSL"}
    shown = run_cli(kafka_bootstrap, *show, "--timeout", "2", **tls_reader)
    assert shown.returncode == 1, shown.stdout + shown.stderr[-2000:]
    assert "Traceback" not in shown.stderr
    assert error_line(shown).startswith(f"streamkit: cannot read {dlq}: ")

    # TLS for the producer only: no record reaches the source topic, and
    # nothing is committed, so the next redrive still sends all three.
    tls_sender = {
        "STREAMKIT_PRODUCER_SECURITY_PROTOCOL": "SSL",
        "STREAMKIT_PRODUCER_MESSAGE_TIMEOUT_MS": "2000",
    }
    refused = run_cli(kafka_bootstrap, *send, **tls_sender)
    assert refused.returncode == 1, refused.stdout + refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr
    assert error_line(refused).startswith("streamkit: redrive: the broker rejected records")
    assert topic_size(kafka_bootstrap, source) == 0

    # Pass-through properties that fit the listener: both commands work.
    fitting = {
        "STREAMKIT_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        "STREAMKIT_KAFKA_CLIENT_ID": "oncall",
    }
    shown = run_cli(kafka_bootstrap, *show, **fitting)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert json.loads(shown.stdout)["total"] == 3
    sent = run_cli(kafka_bootstrap, *send, **fitting)
    assert sent.returncode == 0, sent.stderr[-2000:]
    assert sent.stdout.startswith(f"{dlq}: 3 matched, sent 3;")
    values = sorted(r.value or b"" for r in read_topic(kafka_bootstrap, source, 3))
    assert values == [b"v0", b"v1", b"v2"]


def test_a_filtered_redrive_leaves_the_other_dead_letters_to_the_next(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    dlq, source = new_topic(partitions=2), new_topic()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(40):  # the two kinds interleaved on both partitions
        kind = b"builtins.TimeoutError" if i % 2 else b"builtins.KeyError"
        headers: list[tuple[str, str | bytes]] = [
            ("__streams.errors.topic", source.encode()),
            ("__streams.errors.exception", kind),
        ]
        producer.produce(
            dlq, b"%s-%d" % (kind[9:], i), b"k%d" % i, partition=i % 2, headers=headers
        )
    assert producer.flush(10) == 0
    config = connect(kafka_bootstrap)

    def would_send(selection: RedriveFilter) -> int:
        return sum(redrive(config, dlq, selection, dry_run=True).by_target.values())

    narrow = RedriveFilter(exception="KeyError")
    assert would_send(narrow) == 20
    first = redrive(config, dlq, narrow)
    assert (first.sent, first.skipped_filter) == (20, 20)
    assert would_send(narrow) == 0
    assert would_send(RedriveFilter()) == 20
    rest = redrive(config, dlq, RedriveFilter())
    assert rest.sent == 20
    values = [r.value or b"" for r in read_topic(kafka_bootstrap, source, 40)]
    assert sorted(values) == sorted(
        b"%s-%d" % (b"TimeoutError" if i % 2 else b"KeyError", i) for i in range(40)
    ), "each dead letter sent once: the KeyErrors by the first run, the rest by the second"
    assert would_send(RedriveFilter()) == 0
    assert redrive(config, dlq, RedriveFilter()).sent == 0


def test_redrive_without_yes_counts_then_sends_nothing_and_a_confirmed_run_sends_what_it_counted(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    dlq, source = new_topic(partitions=2), new_topic()
    headers: list[tuple[str, str | bytes]] = [("__streams.errors.topic", source.encode())]
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(6):
        producer.produce(dlq, b"v%d" % i, b"k", partition=i % 2, headers=headers)
    assert producer.flush(10) == 0

    # No terminal (a script, a Job, kubectl exec without -t): the preview, then nothing.
    looked = run_cli(kafka_bootstrap, "dlq", "redrive", dlq)
    assert looked.returncode == 4, looked.stderr[-2000:]
    assert looked.stdout.startswith(f"{dlq}: 6 matched, would send 6;")
    assert f"  -> {source}: 6" in looked.stdout
    assert "streamkit: nothing done: pass --yes to run it" in looked.stderr
    assert topic_size(kafka_bootstrap, source) == 0
    assert redrive(connect(kafka_bootstrap), dlq, RedriveFilter(), dry_run=True).matched == 6, (
        "the preview moved the redrive's cursor"
    )

    # What was confirmed is what is sent: dead letters that arrive after the
    # preview wait for the next redrive.
    config = connect(kafka_bootstrap)
    preview = redrive(config, dlq, RedriveFilter(), dry_run=True)
    for i in range(6, 10):
        producer.produce(dlq, b"v%d" % i, b"k", partition=i % 2, headers=headers)
    assert producer.flush(10) == 0
    sent = redrive(config, dlq, RedriveFilter(), stop_at=preview.ends)
    assert sent.sent == sum(preview.by_target.values()) == 6
    later = run_cli(kafka_bootstrap, "dlq", "redrive", dlq, "--yes")
    assert later.returncode == 0, later.stderr[-2000:]
    assert later.stdout.startswith(f"{dlq}: 4 matched, sent 4;")
    values = sorted(r.value or b"" for r in read_topic(kafka_bootstrap, source, 10))
    assert values == sorted(b"v%d" % i for i in range(10)), "each dead letter sent once"
