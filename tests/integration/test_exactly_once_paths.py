"""Exactly once through the failure paths and the CLI, on a real broker.

A refused record after the transaction began, a replay, and an interrupted
redrive: each input's records are read ``read_committed`` and counted, and
must be there exactly once. Topic sizes are never read off the high
watermarks here: every transaction's commit marker takes an offset too.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Callable

from streamkit.config import AppConfig
from streamkit.ops.dlq import RedriveFilter, redrive
from tests.command_line import run_cli
from tests.integration.helpers import (
    APP,
    Record,
    WorkerProcess,
    command_env,
    end_offsets,
    keyed_records,
    produce,
    read_topic,
    wait_until_committed,
)

EXACTLY_ONCE = {
    "STREAMKIT_PROCESSING_GUARANTEE": "exactly_once",
    "STREAMKIT_TRANSACTION_TIMEOUT_MS": "6000",
}


def ids(records: list[Record]) -> Counter[int]:
    return Counter(json.loads(r.value or b"")["id"] for r in records)


def header(record: Record, name: str) -> str:
    return dict(record.headers)[name].decode()


def test_a_record_refused_mid_transaction_aborts_it_and_is_dead_lettered_when_it_comes_again(
    kafka_bootstrap: str,
    pipeline_env: Callable[..., dict[str, str]],
    new_topic: Callable[..., str],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # 600 KB passes the producer's own check and the 512 KiB topic refuses it
    # in the delivery report, after the transaction began: it must abort, and
    # the record be dead-lettered on its second pass, not fail for ever.
    n, big = 300, 150
    env = pipeline_env(
        partitions=1,
        TEST_OUT=new_topic(partitions=1, config={"max.message.bytes": str(512 * 1024)}),
        TEST_BIG_IDS=str(big),
        # The broker refuses a whole batch over the topic's limit: one record
        # per batch, so only the big one is refused (as in test_delivery_reports).
        STREAMKIT_PRODUCER_BATCH_NUM_MESSAGES="1",
        **EXACTLY_ONCE,
    )
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(n))
    worker = start_worker(APP, **env)
    wait_until_committed(kafka_bootstrap, env["STREAMKIT_GROUP_ID"], env["TEST_IN"], worker)
    out = ids(read_topic(kafka_bootstrap, env["TEST_OUT"], n - 1))
    letters = read_topic(kafka_bootstrap, env["DLQ"], 1)
    assert out + ids(letters) == Counter(range(n)), "each record exactly once, output or DLQ"
    [dead] = letters
    assert header(dead, "streamkit.errors.stage") == "produce"
    assert "MSG_SIZE_TOO_LARGE" in header(dead, "__streams.errors.message")
    assert "transaction aborted" in worker.output()
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_a_replay_writes_in_transactions_and_a_replay_of_its_output_ends(
    kafka_bootstrap: str,
    pipeline_env: Callable[..., dict[str, str]],
    new_topic: Callable[..., str],
) -> None:
    n = 3_000
    env = pipeline_env(partitions=2)
    shadow = new_topic(partitions=2)
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(n))
    cli_env = command_env(kafka_bootstrap, **env)
    args = ["replay", APP, "--agent", "forward", "--whole-topic", "--yes"]
    done = run_cli(
        cli_env,
        *args,
        "--redirect",
        f"{env['TEST_OUT']}={shadow}",
        "--processing-guarantee",
        "exactly_once",
    )
    assert done.returncode == 0, done.stderr
    out = ids(read_topic(kafka_bootstrap, shadow, n))
    assert out == Counter(range(n)), "every record replayed exactly once"
    # Commit markers take offsets: more offsets than records means the
    # replay really wrote in transactions.
    assert sum(end_offsets(kafka_bootstrap, shadow).values()) > n

    # A replay of a topic written in transactions ends, though its last
    # offsets are markers that no record comes from.
    again = new_topic(partitions=2)
    downstream = {**cli_env, "TEST_IN": shadow, "STREAMKIT_GROUP_ID": f"{env['TEST_APP']}-2"}
    done = run_cli(downstream, *args, "--redirect", f"{env['TEST_OUT']}={again}")
    assert done.returncode == 0, done.stderr
    assert ids(read_topic(kafka_bootstrap, again, n)) == Counter(range(n))


def test_an_interrupted_exactly_once_redrive_sends_each_dead_letter_once(
    kafka_bootstrap: str,
    app_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    n = 1_000
    env = app_env("redrive-eos", partitions=2, TEST_RETRY_ATTEMPTS="1", **EXACTLY_ONCE)
    app = env["TEST_APP"]
    dlq = f"{app}.forward.dlq"
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(n))
    broken = start_worker(APP, **env, TEST_FAIL_MOD="5")  # 1% fail: 10 dead letters
    wait_until_committed(kafka_bootstrap, app, env["TEST_IN"], broken)
    broken.signal(signal.SIGTERM)
    assert broken.wait(30) == 0
    assert ids(read_topic(kafka_bootstrap, dlq, 10)) == Counter(range(5, n, 100))

    config = AppConfig.load(
        "streamkit",
        {"brokers": kafka_bootstrap, "processing_guarantee": "exactly_once"},
        env={},
    )
    seen = 0

    def count(k: int) -> None:
        nonlocal seen
        seen += k

    first = redrive(config, dlq, RedriveFilter(), progress=count, stop=lambda: seen >= 4)
    rest = redrive(config, dlq, RedriveFilter())
    assert first.sent + rest.sent == 10 and 0 < first.sent < 10
    inputs = read_topic(kafka_bootstrap, env["TEST_IN"], n + 10)
    redriven = [r for r in inputs if ("streamkit.redrive.count", b"1") in r.headers]
    assert ids(redriven) == Counter(range(5, n, 100)), "each dead letter sent back once"
    # The cursor moved inside the transactions: a third run sends nothing.
    assert redrive(config, dlq, RedriveFilter()).sent == 0
