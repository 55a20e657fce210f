"""The operator commands against the real broker, run as users run them.

Each test writes a tiny pipeline module with unique topic and group names
into ``tmp_path`` and runs ``python -m streamkit ...`` in a subprocess: the
commands configure process-wide logging, which must not leak into the test
process.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamkit import App
from streamkit.pytest_plugin import NameFactory
from tests.integration.helpers import ROOT, delete_topics

PIPELINE = """\
from streamkit import App

app = App({group!r})
source = app.topic({source!r}, partitions=3, config={{"retention.ms": "3600000"}})
sink = app.topic({sink!r}, partitions=1)


@app.agent(source, emits=[sink])
def forward(value):
    return value
"""

# Records produced per partition of the source topic, and the offsets the
# group commits: p0 is 2 behind, p1 3 behind, p2 has no commit (lag = all 2).
RECORDS = {0: 7, 1: 4, 2: 2}
COMMITS = {0: 5, 1: 1}
CLI_TIMEOUT_S = 120.0
OWNER_TIMEOUT_S = 60.0


@dataclass
class OpsApp:
    target: str
    app: App
    group: str
    source: str
    sink: str
    env: dict[str, str]
    cwd: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streamkit", *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )

    def cli_json(self, *args: str, status: int = 0) -> Any:
        result = self.cli(*args, "--json")
        assert result.returncode == status, result.stdout + result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def ops_app(
    kafka_bootstrap: str,
    unique_name: NameFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    admin: AdminClient,
) -> Iterator[OpsApp]:
    """A pipeline module with unique names; every topic it declares is deleted afterwards."""
    group = unique_name("ops")
    module = re.sub(r"\W", "_", unique_name("ops_app"))
    (tmp_path / f"{module}.py").write_text(
        PIPELINE.format(group=group, source=f"{group}.in", sink=f"{group}.out")
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    app = importlib.import_module(module).app
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKIT_")}
    env = {
        **base,
        "STREAMKIT_BROKERS": kafka_bootstrap,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]),
    }
    yield OpsApp(f"{module}:app", app, group, f"{group}.in", f"{group}.out", env, tmp_path)
    delete_topics(admin, sorted(app.topics))


def create_lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """``topic: created|exists`` lines of ``topics create``, ignoring log lines."""
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.findall(r"^(\S+): (created|exists)$", result.stdout, flags=re.M)
    return dict(found)


def produce_per_partition(bootstrap: str, topic: str, counts: dict[int, int]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    failures: list[Any] = []
    for partition, count in counts.items():
        for i in range(count):
            producer.produce(
                topic,
                value=f"p{partition}-{i}".encode(),
                partition=partition,
                on_delivery=lambda err, _msg: failures.append(err) if err else None,
            )
    assert producer.flush(60) == 0
    assert not failures, failures


def commit_offsets(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit as a consumer that never joins the group (assign, not subscribe)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, p) for p in offsets])
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()


@pytest.fixture
def group_member(kafka_bootstrap: str) -> Iterator[Callable[[str, str, str], None]]:
    """Factory: a consumer that joins ``group`` and polls in a thread until teardown."""
    stop = threading.Event()
    threads: list[threading.Thread] = []
    errors: list[BaseException] = []

    def join(group: str, topic: str, client_id: str) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": kafka_bootstrap,
                "group.id": group,
                "client.id": client_id,
                # It must not move the offsets the test set up.
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topic])

        def poll() -> None:
            try:
                while not stop.is_set():
                    consumer.poll(0.1)
            except BaseException as exc:
                errors.append(exc)
            finally:
                consumer.close()

        thread = threading.Thread(target=poll, name=f"member-{client_id}", daemon=True)
        thread.start()
        threads.append(thread)

    yield join
    stop.set()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive(), "group member did not close"
    assert not errors, errors


def wait_for_partitions(admin: AdminClient, topic: str, count: int, timeout: float = 30.0) -> None:
    """CreateTopics returns before every broker's metadata shows the topic."""
    deadline = time.monotonic() + timeout
    while True:
        found = admin.list_topics(topic, timeout=timeout).topics.get(topic)
        if found is not None and found.error is None and len(found.partitions) == count:
            return
        assert time.monotonic() < deadline, f"{topic} has no {count} partitions after {timeout}s"
        time.sleep(0.05)


def expected_rows(topic: str) -> list[dict[str, Any]]:
    rows = []
    for partition, end in RECORDS.items():
        committed = COMMITS.get(partition)
        rows.append(
            {
                "topic": topic,
                "partition": partition,
                "committed": committed,
                "start": 0,
                "end": end,
                "lag": end - (committed or 0),
                "owner": None,
            }
        )
    return rows


def test_lag_reports_the_committed_offsets_exactly(
    ops_app: OpsApp, kafka_bootstrap: str, group_member: Callable[[str, str, str], None]
) -> None:
    assert create_lines(ops_app.cli("topics", "create", ops_app.target))[ops_app.source] == (
        "created"
    )
    produce_per_partition(kafka_bootstrap, ops_app.source, RECORDS)
    commit_offsets(kafka_bootstrap, ops_app.group, ops_app.source, COMMITS)

    report = ops_app.cli_json("lag", ops_app.target)
    assert report["group"] == ops_app.group
    assert report["members"] == 0
    assert report["reset"] == "earliest"
    assert report["partitions"] == expected_rows(ops_app.source)
    total = sum(row["lag"] for row in expected_rows(ops_app.source))
    assert total == 7
    assert report["totals"] == {"lag": total, "topics": {ops_app.source: total}}
    assert report["missing_topics"] == []

    # Without the module: the group's committed topics, every partition of each.
    by_group = ops_app.cli_json("lag", "--group", ops_app.group)
    assert by_group["partitions"] == expected_rows(ops_app.source)

    # While a member of the group is alive, it owns every partition.
    client_id = f"owner-{ops_app.group}"
    group_member(ops_app.group, ops_app.source, client_id)
    deadline = time.monotonic() + OWNER_TIMEOUT_S
    while True:
        report = ops_app.cli_json("lag", ops_app.target)
        owners = [row["owner"] for row in report["partitions"]]
        if all(owner is not None for owner in owners):
            break
        assert time.monotonic() < deadline, f"no owner after {OWNER_TIMEOUT_S}s: {report}"
    assert {owner["client_id"] for owner in owners} == {client_id}
    assert all(owner["host"] and owner["member_id"] for owner in owners)
    assert report["state"] == "stable" and report["members"] == 1
    # Joining did not move anything.
    assert [{**row, "owner": None} for row in report["partitions"]] == expected_rows(ops_app.source)

    table = ops_app.cli("lag", ops_app.target)
    assert table.returncode == 0, table.stderr
    assert f"group {ops_app.group} (stable, 1 member)" in table.stdout
    assert client_id in table.stdout
    assert re.search(r"│ total\s+│.*│\s+7 │", table.stdout), table.stdout


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
def test_lag_watch_refreshes_until_ctrl_c(ops_app: OpsApp, as_json: bool) -> None:
    assert ops_app.cli("topics", "create", ops_app.target).returncode == 0
    out = ops_app.cwd / "watch.out"
    args = ["lag", ops_app.target, "--watch", "0.2", *(["--json"] if as_json else [])]
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamkit", *args],
            env=ops_app.env,
            cwd=ops_app.cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            # Ctrl-C in a terminal: SIGINT at its default. A child inherits an
            # ignored SIGINT, and in the full suite the test process had one
            # (the command then never saw the signal; alone it passed).
            preexec_fn=_sigint_default,
        )
    try:
        marker = f'"group":"{ops_app.group}"' if as_json else f"group {ops_app.group} ("
        deadline = time.monotonic() + CLI_TIMEOUT_S
        while out.read_text().count(marker) < 3:
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = out.read_text()
    assert "Traceback" not in text and "Aborted" not in text
    if as_json:
        documents = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert len(documents) >= 3
        assert all(doc["partitions"][0]["topic"] == ops_app.source for doc in documents)


def test_describe_flags_drift_and_create_is_idempotent(ops_app: OpsApp, admin: AdminClient) -> None:
    # Made by hand with 2 partitions and default retention; the app declares 3 and 1 h.
    admin.create_topics([NewTopic(ops_app.source, num_partitions=2, replication_factor=-1)])[
        ops_app.source
    ].result(30)
    wait_for_partitions(admin, ops_app.source, 2)

    report = ops_app.cli_json("topics", "describe", ops_app.target, status=1)
    checks = {t["topic"]: t for t in report["topics"]}
    assert report["ok"] is False
    assert sorted(checks) == sorted(ops_app.app.topics)
    source = checks[ops_app.source]
    assert source["exists"] is True and source["ok"] is False
    assert source["partitions"] == 2
    assert [(m["setting"], m["declared"]) for m in source["mismatches"]] == [
        ("partitions", 3),
        ("retention.ms", "3600000"),
    ]
    assert source["mismatches"][0]["actual"] == 2
    assert source["configs"]["retention.ms"] != "3600000"
    assert "cleanup.policy" in source["configs"]
    assert checks[ops_app.sink]["exists"] is False

    table = ops_app.cli("topics", "describe", ops_app.target)
    assert table.returncode == 1
    assert f"{ops_app.source}: partitions is 2, declared 3" in table.stdout
    assert f"{ops_app.sink}: does not exist" in table.stdout

    # create makes what is missing and leaves the drifted topic alone.
    first = create_lines(ops_app.cli("topics", "create", ops_app.target))
    assert first[ops_app.source] == "exists"
    assert first[ops_app.sink] == "created"
    assert ops_app.cli("topics", "describe", ops_app.target).returncode == 1

    delete_topics(admin, [ops_app.source])
    assert create_lines(ops_app.cli("topics", "create", ops_app.target))[ops_app.source] == (
        "created"
    )
    again = create_lines(ops_app.cli("topics", "create", ops_app.target))
    assert again == dict.fromkeys(sorted(ops_app.app.topics), "exists")

    report = ops_app.cli_json("topics", "describe", ops_app.target)
    assert report["ok"] is True
    assert all(t["ok"] and not t["mismatches"] for t in report["topics"])
    source = next(t for t in report["topics"] if t["topic"] == ops_app.source)
    assert source["partitions"] == 3
    assert source["configs"]["retention.ms"] == "3600000"


# --- replication (issue 20) ---------------------------------------------------

# The source and the sink declare their replication; the dead-letter topic
# cannot, so it is the one topic the app-wide setting decides.
REPLICATED = """\
from streamkit import App

app = App({group!r})
source = app.topic({source!r}, partitions=2, replication=1)
sink = app.topic({sink!r}, replication={sink_replication})


@app.agent(source, emits=[sink])
def forward(value):
    return value
"""


@pytest.fixture
def replicated_app(ops_app: OpsApp) -> Callable[[int], OpsApp]:
    """Factory: ``ops_app`` with its pipeline rewritten to :data:`REPLICATED`."""

    def make(sink_replication: int) -> OpsApp:
        module = f"{ops_app.target.split(':')[0]}_rf{sink_replication}"
        (ops_app.cwd / f"{module}.py").write_text(
            REPLICATED.format(
                group=ops_app.group,
                source=ops_app.source,
                sink=ops_app.sink,
                sink_replication=sink_replication,
            )
        )
        app = importlib.import_module(module).app
        # The same names as ops_app's topics, which its teardown deletes; add the DLQ.
        ops_app.app.topics.update(app.topics)
        return OpsApp(
            f"{module}:app",
            app,
            ops_app.group,
            ops_app.source,
            ops_app.sink,
            ops_app.env,
            ops_app.cwd,
        )

    return make


def replication_of(admin: AdminClient, topic: str) -> int:
    partitions = admin.list_topics(topic, timeout=30).topics[topic].partitions.values()
    return min(len(p.replicas) for p in partitions)


def test_the_dead_letter_topic_gets_the_app_replication_and_too_many_is_named(
    replicated_app: Callable[[int], OpsApp], admin: AdminClient
) -> None:
    app = replicated_app(1)
    dlq = f"{app.group}.forward.dlq"
    assert dlq in app.app.topics and app.app.topics[dlq].replication is None

    # One broker cannot hold two replicas: the broker's INVALID_REPLICATION_FACTOR
    # comes back as a usage error naming the setting, and only the DLQ asked for 2.
    app.env["STREAMKIT_REPLICATION"] = "2"
    refused = app.cli("topics", "create", app.target)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    assert (
        f"invalid setting replication (STREAMKIT_REPLICATION): topic {dlq} cannot get "
        "2 replicas: the cluster has 1 broker" in refused.stderr
    )
    assert "Unable to replicate the partition 2 time(s)" in refused.stderr
    assert dlq not in admin.list_topics(timeout=30).topics

    # A worker creating its topics at start stops the same way, before consuming.
    run = app.cli("run", app.target)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "invalid setting replication (STREAMKIT_REPLICATION)" in run.stderr

    app.env["STREAMKIT_REPLICATION"] = "1"
    assert create_lines(app.cli("topics", "create", app.target))[dlq] == "created"
    assert replication_of(admin, dlq) == 1
    report = app.cli_json("topics", "describe", app.target)
    assert report["ok"] is True and report["replication"] == 1
    assert not report["under_replicated"]
    checks = {t["topic"]: t for t in report["topics"]}
    assert checks[dlq]["expected_replication"] == 1
    assert checks[dlq]["in_sync"] == 1 and checks[dlq]["under_replicated_partitions"] == []


def test_describe_flags_topics_with_fewer_replicas_than_declared_or_set(
    replicated_app: Callable[[int], OpsApp], admin: AdminClient
) -> None:
    app = replicated_app(2)
    dlq = f"{app.group}.forward.dlq"
    # Made with replication 1 (the only factor a 1-broker cluster has); the
    # sink declares 2, the DLQ gets STREAMKIT_REPLICATION=2 below.
    for topic, partitions in ((app.source, 2), (app.sink, 1), (dlq, 2)):
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[
            topic
        ].result(30)
        wait_for_partitions(admin, topic, partitions)

    report = app.cli_json("topics", "describe", app.target, status=1)
    checks = {t["topic"]: t for t in report["topics"]}
    assert report["under_replicated"] is True and report["replication"] is None
    sink = checks[app.sink]
    assert (sink["ok"], sink["under_replicated"], sink["replication"]) == (False, True, 1)
    assert sink["expected_replication"] == 2
    assert sink["mismatches"] == [{"setting": "replication", "declared": 2, "actual": 1}]
    # Without the setting, any replication of an undeclared topic is accepted.
    assert checks[dlq]["ok"] is True and checks[dlq]["under_replicated"] is False
    assert checks[app.source]["ok"] is True

    app.env["STREAMKIT_REPLICATION"] = "2"
    report = app.cli_json("topics", "describe", app.target, status=1)
    checks = {t["topic"]: t for t in report["topics"]}
    assert report["replication"] == 2
    assert (checks[dlq]["ok"], checks[dlq]["under_replicated"]) == (False, True)
    assert checks[dlq]["mismatches"] == []
    assert checks[app.source]["ok"] is True  # declared 1: its declaration wins

    table = app.cli("topics", "describe", app.target)
    assert table.returncode == 1
    assert f"topics of app {app.group} (replication setting: 2)" in table.stdout
    assert "under-replicated" in table.stdout
    assert f"{app.sink}: replication is 1, declared 2" in table.stdout
    assert f"{dlq}: replication is 1, below the app's replication setting 2" in table.stdout
