"""Exactly once on a real broker: crashes, scaling, fencing, a broker restart.

Every test checks the same invariant with a ``read_committed`` reader of the
output topic and the dead-letter topic (:func:`verify`): each input id comes
out exactly once across the two, only the always-failing ones as dead
letters, and the outputs of a key keep the order of their inputs. What
aborted (a killed worker's open transaction) is only visible to a
``read_uncommitted`` reader, which the tests use to report how much the
verifier had to skip; kills aimed at a checkpoint (:class:`Tail`) make sure
there is some.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamkit.localkafka import LocalKafka, free_ports
from streamkit.pytest_plugin import NameFactory
from tests.integration.helpers import (
    APP,
    KEYS,
    WorkerProcess,
    keyed_records,
    produce,
    wait_until,
)

EXACTLY_ONCE = {"STREAMKIT_PROCESSING_GUARANTEE": "exactly_once"}
# 1% of the records (id % 100 == 7) always fail and go to the dead-letter topic.
FAIL_MOD = 7


def always_failing(n: int) -> set[int]:
    """The input ids the app dead-letters (``TEST_FAIL_MOD``)."""
    return {i for i in range(n) if i % 100 == FAIL_MOD}


@dataclass
class Verdict:
    """What a reader saw in the output and dead-letter topics, by input id."""

    outputs: Counter[int] = field(default_factory=Counter, repr=False)
    dead: Counter[int] = field(default_factory=Counter, repr=False)
    order_violations: list[str] = field(default_factory=list)

    def check(self, n: int) -> None:
        """Exactly one output or dead letter per input; dead letters for the failing ones only."""
        counts = self.outputs + self.dead
        lost = [i for i in range(n) if i not in counts]
        twice = {i: c for i, c in counts.items() if c > 1}
        assert not lost, f"{len(lost)} inputs lost, e.g. {lost[:5]}"
        assert not twice, (
            f"{len(twice)} inputs came out twice or more, e.g. {list(twice.items())[:5]}"
        )
        assert sum(counts.values()) == n, f"{sum(counts.values())} records for {n} inputs"
        wrongly_dead = sorted(set(self.dead) - always_failing(n))
        assert not wrongly_dead, (
            f"{len(wrongly_dead)} good inputs dead-lettered, e.g. {wrongly_dead[:5]}"
        )
        assert not self.order_violations, self.order_violations[:5]

    def __str__(self) -> str:
        return f"{self.outputs.total()} outputs + {self.dead.total()} dead letters"


def verify(
    bootstrap: str,
    out: str,
    dlq: str | None,
    expected: int,
    isolation: str = "read_committed",
    timeout: float = 60.0,
    idle: float = 1.0,
) -> Verdict:
    """Read ``out`` and ``dlq`` from the start until ``expected`` records and ``idle`` s of quiet.

    Outputs carry ``{"id", "n", "from": [partition, offset]}``; dead letters
    carry their input's value. Per key (``id % KEYS``), the outputs must come
    in input-offset order: a key's outputs are all in one output partition,
    which a consumer reads in offset order.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "exactly-once-verifier",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    topics = [out] + ([dlq] if dlq else [])
    assignment = []
    for topic in topics:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        assert meta.error is None, f"{topic}: {meta.error}"
        assignment += [TopicPartition(topic, p, 0) for p in meta.partitions]
    consumer.assign(assignment)
    verdict = Verdict()
    last_from: dict[int, tuple[int, int]] = {}
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msgs = consumer.consume(1000, timeout=0.2)
            if msgs:
                quiet_since = time.monotonic()
            for m in msgs:
                assert m.error() is None, m.error()
                value = json.loads(m.value() or b"")
                record_id = value["id"]
                if m.topic() != out:
                    verdict.dead[record_id] += 1
                    continue
                verdict.outputs[record_id] += 1
                key = record_id % KEYS
                source = (value["from"][0], value["from"][1])
                before = last_from.get(key)
                if before is not None and (source[0] != before[0] or source[1] <= before[1]):
                    verdict.order_violations.append(
                        f"key {key}: input {source} came out after input {before}"
                    )
                last_from[key] = source
            seen = verdict.outputs.total() + verdict.dead.total()
            if seen >= expected and time.monotonic() - quiet_since >= idle:
                break
    finally:
        consumer.close()
    return verdict


class Progress:
    """The group's committed input position, summed over partitions (its transactions' offsets)."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        # read_uncommitted: a probe must not wait for a pending transactional
        # commit (require_stable) to settle; it sees the last stable one.
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "isolation.level": "read_uncommitted",
            }
        )
        self._tps = [TopicPartition(topic, p) for p in range(partitions)]

    def positions(self) -> dict[int, int]:
        """Committed offset per partition (0 before the first commit).

        Retries while the group coordinator moves or loads (after a broker
        restart): a probe that answered "unknown" would let a waiter
        compare against nothing.
        """
        deadline = time.monotonic() + 30
        while True:
            try:
                found = self._consumer.committed(self._tps, timeout=10)
                return {tp.partition: max(tp.offset, 0) for tp in found}
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def __call__(self) -> int:
        return sum(self.positions().values())

    def close(self) -> None:
        self._consumer.close()


def reach(progress: Progress, count: int, timeout: float = 60.0) -> None:
    """Wait until the group has committed ``count`` inputs in all."""
    wait_until(lambda: progress() >= count, timeout, f"{count} inputs committed")


class Tail:
    """A ``read_uncommitted`` reader of the output's newest records.

    Exactly once, outputs are produced only by a checkpoint, just before it
    commits: a record showing up here means a checkpoint is between its
    produce and its commit, the moment to kill a worker (or a broker) in.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "exactly-once-tail",
                "enable.auto.commit": False,
                "isolation.level": "read_uncommitted",
                "fetch.wait.max.ms": 10,
            }
        )
        self._tps = [TopicPartition(topic, p, OFFSET_END) for p in range(partitions)]

    def wait_for_new(self, timeout: float) -> bool:
        """Wait until a record is appended to the output after this call; ``False`` on timeout."""
        self._consumer.assign(self._tps)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._consumer.consume(1, timeout=0.05):
                return True
        return False

    def close(self) -> None:
        self._consumer.close()


def owned(worker: WorkerProcess) -> set[int]:
    """Partitions a worker owns, replayed from its assign / revoke / lose log lines.

    Not ``helpers.owned_at_end``: exactly once, the worker also logs
    ``partitions start again from their last commit`` with ``[p]@offset``
    entries under the same key, which that parser cannot read.
    """
    owns: set[int] = set()
    for line in worker.output().splitlines():
        try:
            event = json.loads(line) if line.startswith("{") else {}
        except json.JSONDecodeError:  # the line the worker is writing now
            continue
        name = str(event.get("event", ""))
        if not name.startswith(("partitions assigned", "partitions revoked", "partitions lost")):
            continue
        parts = {
            int(p.rsplit("[", 1)[1].rstrip("]"))
            for p in str(event.get("partitions", "")).split(", ")
            if "[" in p
        }
        owns = owns | parts if name == "partitions assigned" else owns - parts
    return owns


def kill(worker: WorkerProcess, tail: Tail | None = None) -> None:
    """SIGKILL, at once, or (with ``tail``) while a checkpoint is producing its outputs."""
    if tail is not None:
        tail.wait_for_new(10)
    worker.signal(signal.SIGKILL)
    worker.wait(10)


def running(
    worker: WorkerProcess, predicate: Callable[[], bool], timeout: float, what: str
) -> None:
    """Wait for ``predicate``, failing at once (with the worker's log) if the worker exits."""

    def check() -> bool:
        assert worker.proc.poll() is None, f"the worker exited:\n{worker.output()[-4000:]}"
        return predicate()

    wait_until(check, timeout, what)


def stop(worker: WorkerProcess) -> None:
    """SIGTERM: the worker commits its last transaction and exits 0."""
    worker.signal(signal.SIGTERM)
    code = worker.wait(60)
    assert code == 0, worker.output()[-3000:]


def aborted_outputs(bootstrap: str, topic: str, committed: Verdict) -> int:
    """Outputs only a ``read_uncommitted`` reader sees: those of aborted transactions."""
    raw = verify(bootstrap, topic, None, committed.outputs.total(), isolation="read_uncommitted")
    return raw.outputs.total() - committed.outputs.total()


def aborts_logged(*workers: WorkerProcess) -> int:
    return sum(w.output().count('"transaction aborted"') for w in workers)


def test_five_sigkills_and_restarts_lose_nothing_and_double_nothing(
    kafka_bootstrap: str,
    pipeline_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """50,000 keyed records, 1% dead-lettered; the worker SIGKILLed five times and restarted.

    Static membership: the restarted worker has the killed one's
    transactional id, so its ``init_transactions`` aborts the open
    transaction at once, and it takes the same partitions back. Kills 2 and
    4 land while a checkpoint is producing (outputs in the open
    transaction), the others at a random moment.
    """
    n, partitions = 50_000, 4
    env = pipeline_env(
        partitions,
        **EXACTLY_ONCE,
        STREAMKIT_GROUP_INSTANCE_ID="pod-0",
        TEST_DELAY_S="0.0002",
        TEST_FAIL_MOD=str(FAIL_MOD),
    )
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(n))
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    marks = sorted(int(rng.uniform(0.05, 0.85) * n) for _ in range(5))
    progress = Progress(kafka_bootstrap, env["STREAMKIT_GROUP_ID"], env["TEST_IN"], partitions)
    tail = Tail(kafka_bootstrap, env["TEST_OUT"], partitions)
    resumes: list[float] = []
    workers = []
    try:
        worker = start_worker(APP, **env)
        for i, mark in enumerate(marks):
            reach(progress, mark)
            if i % 2:
                kill(worker, tail)
            else:
                time.sleep(rng.uniform(0, 0.1))  # a random moment of the checkpoint cycle
                kill(worker)
            workers.append(worker)
            killed_at = progress()
            assert killed_at < n, f"seed {seed}: drained before kill {i + 1}; it proves nothing"
            restarted = time.monotonic()
            worker = start_worker(APP, **env)
            reach(progress, killed_at + 1)  # the restarted worker committing
            resumes.append(time.monotonic() - restarted)
        reach(progress, n, timeout=90)
        stop(worker)
        workers.append(worker)
    finally:
        progress.close()
        tail.close()
    verdict = verify(kafka_bootstrap, env["TEST_OUT"], env["DLQ"], n)
    print(
        f"seed {seed}: kills at {marks} committed inputs; each restart committed again after "
        f"{', '.join(f'{s:.2f}' for s in resumes)} s; {verdict}; "
        f"{aborted_outputs(kafka_bootstrap, env['TEST_OUT'], verdict)} outputs aborted, "
        f"{aborts_logged(*workers)} aborts logged"
    )
    verdict.check(n)


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_scaling_one_three_one_with_a_crash_and_a_graceful_stop(
    kafka_bootstrap: str,
    pipeline_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
    protocol: str,
) -> None:
    """One worker, then three, then one: a SIGKILL (mid-checkpoint) and a SIGTERM on the way.

    No static membership: every process has its own transactional id, so
    the killed worker's open transaction stays open until the broker aborts
    it (``transaction_timeout_ms``, 6 s here), and its partitions wait for
    that and for its session to expire.
    """
    n, partitions = 40_000, 6
    env = pipeline_env(
        partitions,
        **EXACTLY_ONCE,
        STREAMKIT_GROUP_PROTOCOL=protocol,
        STREAMKIT_TRANSACTION_TIMEOUT_MS="6000",
        STREAMKIT_SESSION_TIMEOUT_MS="6000",
        TEST_DELAY_S="0.0002",
        TEST_FAIL_MOD=str(FAIL_MOD),
    )
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(n))
    progress = Progress(kafka_bootstrap, env["STREAMKIT_GROUP_ID"], env["TEST_IN"], partitions)
    tail = Tail(kafka_bootstrap, env["TEST_OUT"], partitions)

    try:
        first = start_worker(APP, **env)
        reach(progress, n // 10)
        second, third = start_worker(APP, **env), start_worker(APP, **env)
        wait_until(lambda: bool(owned(second) and owned(third)), 60, "scale-out")
        reach(progress, n * 3 // 10)
        killed_owned = owned(third)
        kill(third, tail)
        killed_at, killed_time = progress.positions(), time.monotonic()
        assert sum(killed_at.values()) < n, "drained before the kill; the test proves nothing"
        wait_until(
            lambda: all(progress.positions().get(p, 0) > killed_at[p] for p in killed_owned),
            60,
            "the killed worker's partitions moving again",
        )
        takeover = time.monotonic() - killed_time
        assert progress() < n, "drained before the graceful stop; the test proves nothing"
        stop(second)
        reach(progress, n, timeout=90)
        assert len(owned(first)) == partitions, "the last worker does not own everything"
        stop(first)
    finally:
        progress.close()
        tail.close()
    verdict = verify(kafka_bootstrap, env["TEST_OUT"], env["DLQ"], n)
    print(
        f"[{protocol}] the killed worker's partitions {sorted(killed_owned)} committed again "
        f"after {takeover:.1f} s; {verdict}; "
        f"{aborted_outputs(kafka_bootstrap, env['TEST_OUT'], verdict)} outputs aborted, "
        f"{aborts_logged(first, second, third)} aborts logged"
    )
    verdict.check(n)


def error_lines(worker: WorkerProcess) -> list[str]:
    return [line for line in worker.output().splitlines() if '"level": "error"' in line]


def test_a_second_process_with_the_same_identity_fences_the_first(
    kafka_bootstrap: str,
    pipeline_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """Two processes with one ``group_instance_id``: the newer one takes over, the older stops.

    On the classic protocol both sides fence the older process: the newer
    one's ``init_transactions`` bumps the shared transactional id's epoch
    (the older producer's next call fails ``PRODUCER_FENCED``), and its join
    with the same ``group.instance.id`` makes the broker fence the older
    consumer (``FENCED_INSTANCE_ID``, fatal). The older process rebuilds its
    producer once, which fences the newer one's in turn, and the newer one
    rebuilds too; the older one's second fence within a minute, or its
    fenced consumer, must stop it, with an error line naming the fence.
    """
    n, partitions = 30_000, 4
    env = pipeline_env(
        partitions,
        **EXACTLY_ONCE,
        STREAMKIT_GROUP_INSTANCE_ID="pod-0",
        TEST_DELAY_S="0.0002",
        TEST_FAIL_MOD=str(FAIL_MOD),
    )
    produce(kafka_bootstrap, env["TEST_IN"], keyed_records(n))
    progress = Progress(kafka_bootstrap, env["STREAMKIT_GROUP_ID"], env["TEST_IN"], partitions)
    try:
        older = start_worker(APP, **env)
        reach(progress, n // 5)
        newer = start_worker(APP, **env)
        newer_started = time.monotonic()
        reach(progress, n, timeout=90)
        drained = time.monotonic() - newer_started
    finally:
        progress.close()
    verdict = verify(kafka_bootstrap, env["TEST_OUT"], env["DLQ"], n)
    print(f"same identity: drained {drained:.1f} s after the second process started; {verdict}")
    verdict.check(n)

    try:
        code = older.wait(15)
    except subprocess.TimeoutExpired:
        lines = [line[:300] for line in older.output().splitlines() if '"warning"' in line]
        raise AssertionError(
            "the fenced (older) process still runs 15 s after the newer one drained the "
            "input; its last warnings:\n" + "\n".join(lines[-6:])
        ) from None
    said = [line for line in error_lines(older) if "fenced" in line]
    assert code != 0 and said, (
        f"the older process exited {code} without an error line naming the fence; "
        f"its last output:\n{older.output()[-2500:]}"
    )
    assert newer.proc.poll() is None, f"both stopped:\n{newer.output()[-3000:]}"
    assert owned(newer) == set(range(partitions))
    stop(newer)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    """A broker of this test's own, which it may restart without disturbing other tests."""
    port, controller_port = free_ports(2)
    kafka = LocalKafka(port, controller_port=controller_port, data_dir=tmp_path / "kafka")
    kafka.start(timeout=120)
    try:
        yield kafka
    finally:
        kafka.stop()


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    """Create topics and wait until every partition has a leader."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": logging.getLogger(__name__)})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
    )
    for future in futures.values():
        future.result(timeout=30)

    def ready() -> bool:
        topics = admin.list_topics(timeout=10).topics
        return all(
            name in topics
            and len(topics[name].partitions) == partitions
            and all(p.leader >= 0 for p in topics[name].partitions.values())
            for name in names
        )

    wait_until(ready, 30, f"leaders for {names}")


@pytest.mark.parametrize(
    ("timeout_ms", "least_outage_s"),
    [
        pytest.param(60_000, 0.0, id="outage-shorter-than-the-transaction-timeout"),
        # Down at least 7 s with a 6 s timeout: the coordinator, back, rolls
        # the open transaction back itself and bumps the producer's epoch.
        pytest.param(
            6_000, 7.0, id="outage-longer-than-the-transaction-timeout", marks=pytest.mark.chaos
        ),
    ],
)
def test_a_broker_restart_mid_transaction_loses_nothing_and_doubles_nothing(
    own_broker: LocalKafka,
    unique_name: NameFactory,
    start_worker: Callable[..., WorkerProcess],
    timeout_ms: int,
    least_outage_s: float,
) -> None:
    """The broker stops while a checkpoint is producing, and comes back on the same data.

    The open transaction can only abort (the worker's abort, or the
    coordinator's own once the transaction timed out); the worker must ride
    it out, finish the input once the broker is back, and stop cleanly.
    """
    n, partitions = 20_000, 4
    bootstrap = own_broker.bootstrap
    app = unique_name("app")
    env = {
        **EXACTLY_ONCE,
        "STREAMKIT_BROKERS": bootstrap,
        "TEST_APP": app,
        "TEST_IN": unique_name("in"),
        "TEST_OUT": unique_name("out"),
        "STREAMKIT_GROUP_ID": app,
        "STREAMKIT_SESSION_TIMEOUT_MS": "6000",
        "STREAMKIT_TRANSACTION_TIMEOUT_MS": str(timeout_ms),
        "TEST_DELAY_S": "0.0002",
        "TEST_FAIL_MOD": str(FAIL_MOD),
    }
    create_topics(bootstrap, [env["TEST_IN"], env["TEST_OUT"]], partitions)
    produce(bootstrap, env["TEST_IN"], keyed_records(n))
    progress = Progress(bootstrap, app, env["TEST_IN"], partitions)
    tail = Tail(bootstrap, env["TEST_OUT"], partitions)
    try:
        worker = start_worker(APP, **env)
        reach(progress, n // 4)
        assert tail.wait_for_new(10), "no checkpoint producing outputs"
        went_down = time.monotonic()
        own_broker.stop()
        stopped = time.monotonic()
        # A deliberate outage length, not a synchronisation.
        time.sleep(max(went_down + least_outage_s - stopped, 0.0))
        own_broker.start(timeout=60)
        back = time.monotonic()
        at_restart = progress()
        assert at_restart < n, "drained before the restart; the test proves nothing"
        running(worker, lambda: progress() > at_restart, 60, "commits after the restart")
        resumed = time.monotonic() - back
        running(worker, lambda: progress() >= n, 90, "every input committed")
        stop(worker)
    finally:
        progress.close()
        tail.close()
    verdict = verify(bootstrap, env["TEST_OUT"], f"{app}.forward.dlq", n)
    print(
        f"broker restart: stopping took {stopped - went_down:.1f} s, down "
        f"{back - went_down:.1f} s in all; committing again {resumed:.1f} s after "
        f"it was back; {verdict}; {aborted_outputs(bootstrap, env['TEST_OUT'], verdict)} outputs "
        f"aborted, {aborts_logged(worker)} aborts logged"
    )
    verdict.check(n)


def test_a_transaction_timeout_above_the_brokers_maximum_fails_at_start(
    pipeline_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """transaction.max.timeout.ms is 900,000 by default: init_transactions refuses more.

    Nothing else catches it: the broker's maximum is known only to the broker.
    """
    env = pipeline_env(1, **EXACTLY_ONCE, STREAMKIT_TRANSACTION_TIMEOUT_MS="1000000")
    worker = start_worker(APP, **env)
    code = worker.wait(90)
    output = worker.output()
    # Besides JSON log lines (and librdkafka's own, starting with %): one line.
    plain = [line for line in output.splitlines() if not line.startswith(("{", "%"))]
    assert code == 2, output[-3000:]
    assert len(plain) == 1, output[-3000:]
    assert plain[0].startswith("streamkit: "), plain
    assert "transaction_timeout_ms" in plain[0], plain
    assert '"started"' not in output, "the worker joined the group before failing"
