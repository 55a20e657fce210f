"""streamkit against a secured broker: SASL_SSL, SCRAM and PLAIN users, ACLs.

One secure :class:`~streamkit.localkafka.LocalKafka` for the module, on its
own free ports: ``alice`` may do everything an app needs, ``bob`` too except
where a test adds a DENY, ``carol`` has topics but no consumer group.
Workers and CLI commands get the security settings the way a deployment
passes them, as ``STREAMKIT_KAFKA_*`` environment variables.

Every output of the module (worker logs, CLI stdout and stderr, error
messages) goes through :func:`captured`, which fails the test if a password
of the cluster, or the wrong one a test tried, appears in it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from streamkit.backends.kafka import create_admin, wait_for_broker
from streamkit.config import AppConfig
from streamkit.errors import BrokerError
from streamkit.localkafka import LocalKafka, free_ports
from streamkit.localkafka.security import Acl, Mechanism, SecureCluster, Security, full_access
from streamkit.localkafka.tls import write_ca
from tests.command_line import run_cli
from tests.integration import helpers
from tests.integration.helpers import APP, ROOT, WorkerProcess, keyed_records, wait_until_committed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

WRONG_PASSWORD = "not-" + "the-password-7c1e"  # the wrong one, on purpose
# A refusal must be told within this long: the worker gives up at the
# first refused connection, well before it.
_REFUSAL_S = 30.0
_BROKER_START_S = 120.0
SECURITY = Security(
    users=("alice", "bob", "carol"),
    acls=(
        *full_access("alice"),
        *full_access("bob"),
        # carol: every topic, no consumer group.
        *(acl for acl in full_access("carol") if acl.resource != "group"),
    ),
)


@pytest.fixture(scope="module")
def secure_kafka() -> Iterator[LocalKafka]:
    """The module's secure broker; its data, keys and passwords removed after it.

    Not the plugin's session broker: that one takes no :class:`Security`.
    """
    # Not tmp_path_factory: pytest keeps those, and the users' passwords with them.
    with tempfile.TemporaryDirectory(
        prefix="streamkit-secure-", ignore_cleanup_errors=True
    ) as data:
        port, controller_port = free_ports(2)
        kafka = LocalKafka(port, controller_port=controller_port, data_dir=data, security=SECURITY)
        try:
            kafka.start(timeout=_BROKER_START_S)
            yield kafka
        finally:
            kafka.stop()


@pytest.fixture(scope="module")
def cluster(secure_kafka: LocalKafka) -> SecureCluster:
    return secure_kafka.secure_cluster


_outputs: list[str] = []


def secrets_of(cluster: SecureCluster) -> list[str]:
    return [*(cluster.password(u) for u in cluster.users), WRONG_PASSWORD]


def captured(cluster: SecureCluster, text: str) -> str:
    """Keep ``text`` as one of the module's outputs; fail if a password is in it."""
    _outputs.append(text)
    shown = [s for s in secrets_of(cluster) if s in text]
    assert not shown, f"a password appears in an output:\n{text[-2000:]}"
    return text


def admin_conf(cluster: SecureCluster) -> dict[str, Any]:
    return {**cluster.client_config("admin"), "logger": _quiet}


class _Quiet:
    def log(self, *_args: Any) -> None:
        pass


_quiet = _Quiet()


def make_topics(cluster: SecureCluster, *names: str, partitions: int = 2) -> None:
    admin = AdminClient(admin_conf(cluster))
    specs = [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
    for future in admin.create_topics(specs, operation_timeout=30).values():
        future.result(timeout=30)
    deadline = time.monotonic() + 30
    while True:
        meta = admin.list_topics(timeout=10).topics
        if all(
            n in meta and all(p.leader >= 0 for p in meta[n].partitions.values()) for n in names
        ):
            return
        assert time.monotonic() < deadline, f"topics {names} have no leaders"
        time.sleep(0.05)


# The helpers of the plaintext tests, as the cluster's admin user.


def produce(cluster: SecureCluster, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    helpers.produce(cluster.bootstrap, topic, records, **admin_conf(cluster))


def size(cluster: SecureCluster, topic: str) -> int:
    return helpers.topic_size(cluster.bootstrap, topic, **admin_conf(cluster))


def committed(cluster: SecureCluster, group: str, topic: str, partitions: int) -> dict[int, int]:
    return helpers.committed(cluster.bootstrap, group, topic, partitions, **admin_conf(cluster))


def user_env(
    cluster: SecureCluster,
    user: str,
    extra: dict[str, str],
    mechanism: Mechanism = "SCRAM-SHA-512",
) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKIT_")}
    return {
        **base,
        "PYTHONPATH": str(ROOT),
        "STREAMKIT_LOG_FORMAT": "json",
        **cluster.streamkit_env(user, mechanism),
        **extra,
    }


def cli(
    cluster: SecureCluster, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    done = run_cli(env, *args)
    captured(cluster, done.stdout)
    captured(cluster, done.stderr)
    return done


def run_until_exit(
    cluster: SecureCluster, env: dict[str, str], log: Path, timeout: float
) -> tuple[int, str, float]:
    """Run a worker to its end; return its exit code, its output and how long it took."""
    started = time.monotonic()
    worker = WorkerProcess(APP, env, log)
    try:
        code = worker.wait(timeout)
    except subprocess.TimeoutExpired:
        worker.stop()
        raise AssertionError(
            f"the worker still ran after {timeout}s:\n{worker.output()[-3000:]}"
        ) from None
    return code, captured(cluster, worker.output()), time.monotonic() - started


def app_env(tag: str) -> dict[str, str]:
    app = f"secure-{tag}-{os.urandom(4).hex()}"
    return {
        "TEST_APP": app,
        "TEST_IN": f"{app}.in",
        "TEST_OUT": f"{app}.out",
        "STREAMKIT_GROUP_ID": app,
        "STREAMKIT_SESSION_TIMEOUT_MS": "6000",
    }


def error_lines(output: str) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [e for e in events if e.get("level") in ("error", "warning")]


def test_a_pipeline_and_the_operations_run_over_sasl_ssl(
    cluster: SecureCluster, tmp_path: Path
) -> None:
    names = app_env("pipe")
    app, source, sink = names["TEST_APP"], names["TEST_IN"], names["TEST_OUT"]
    dlq, shadow = f"{app}.forward.dlq", f"{app}.shadow"
    make_topics(cluster, source, sink, shadow)
    produce(cluster, source, keyed_records(300))
    # Records with id % 100 == 7 fail: three dead letters for dlq show and redrive.
    env = user_env(cluster, "alice", {**names, "TEST_FAIL_MOD": "7"})
    worker = WorkerProcess(APP, env, tmp_path / "worker.log")
    try:
        wait_until_committed(cluster.bootstrap, app, source, worker, 90, **admin_conf(cluster))
        worker.signal(signal.SIGTERM)
        assert worker.wait(60) == 0, worker.output()[-3000:]
    finally:
        worker.stop()
    output = captured(cluster, worker.output())
    assert error_lines(output) == []
    assert size(cluster, sink) == 297
    assert size(cluster, dlq) == 3

    lag = cli(cluster, env, "lag", APP, "--json")
    assert lag.returncode == 0, lag.stderr
    assert _total_lag(json.loads(lag.stdout)) == 0
    # PLAIN works as well as SCRAM, for the same user.
    lag_plain = cli(cluster, user_env(cluster, "alice", names, "PLAIN"), "lag", APP, "--json")
    assert lag_plain.returncode == 0, lag_plain.stderr
    assert _total_lag(json.loads(lag_plain.stdout)) == 0

    shown = cli(cluster, env, "dlq", "show", dlq, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["total"] == 3

    replay_env = {k: v for k, v in env.items() if k != "TEST_FAIL_MOD"}
    replayed = cli(
        cluster, replay_env, "replay", APP, "--agent", "forward", "--whole-topic",
        "--redirect", f"{sink}={shadow}", "--yes",
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    assert size(cluster, shadow) == 300

    redriven = cli(cluster, env, "dlq", "redrive", dlq, "--yes")
    assert redriven.returncode == 0, redriven.stderr
    assert size(cluster, source) == 303


def _total_lag(report: Any) -> int:
    found = [int(v) for k, v in _walk(report) if k == "lag" and isinstance(v, int)]
    assert found, report
    return sum(found)


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


@pytest.mark.parametrize("problem", ["wrong password", "unknown CA"])
def test_a_refused_connection_is_one_clear_error_and_a_fast_exit(
    cluster: SecureCluster, tmp_path: Path, problem: str
) -> None:
    names = app_env("refused")
    if problem == "wrong password":
        bad = {"STREAMKIT_KAFKA_SASL_PASSWORD": WRONG_PASSWORD}
        said = "authentication failed"
    else:
        bad = {"STREAMKIT_KAFKA_SSL_CA_LOCATION": str(write_ca(tmp_path / "other-ca.pem"))}
        said = "TLS handshake failed"
    env = user_env(cluster, "alice", {**names, **bad})

    code, output, took = run_until_exit(cluster, env, tmp_path / "worker.log", _REFUSAL_S)
    assert code != 0
    assert took < _REFUSAL_S
    # One line says it, and nothing else is printed: no line per reconnect.
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert said in lines[0], lines[0]

    for command in (["lag", APP], ["dlq", "show", f"{names['TEST_APP']}.forward.dlq"]):
        started = time.monotonic()
        done = cli(cluster, env, *command)
        assert done.returncode == 1
        assert time.monotonic() - started < _REFUSAL_S
        [line] = [line for line in done.stderr.splitlines() if line.strip()]
        assert line.startswith("streamkit: cannot connect to Kafka") and said in line, done.stderr

    # In process too: the error and the config's repr carry no password.
    config = AppConfig.load(
        "secure", env={k: v for k, v in env.items() if k.startswith("STREAMKIT_")}
    )
    with pytest.raises(BrokerError) as caught:
        wait_for_broker(create_admin(config), config.brokers, timeout=_REFUSAL_S)
    captured(cluster, f"{caught.value}\n{caught.value!r}\n{config!r}")
    assert said in str(caught.value)


def test_no_write_on_the_output_topic_stops_the_worker_with_nothing_committed(
    cluster: SecureCluster, tmp_path: Path
) -> None:
    names = app_env("denied")
    app, source, sink = names["TEST_APP"], names["TEST_IN"], names["TEST_OUT"]
    make_topics(cluster, source, sink)
    cluster.create_acls([Acl("bob", "topic", sink, operations=("write",), allow=False)])
    produce(cluster, source, keyed_records(100))
    env = user_env(cluster, "bob", names)

    code, output, _ = run_until_exit(cluster, env, tmp_path / "worker.log", 90)
    assert code == 1
    [error] = [e for e in error_lines(output) if e["level"] == "error"]
    assert "not authorized on the topic" in error["error"], error
    assert "WRITE" in error["error"]
    # Not dead-lettered as if the records were at fault, and not committed past.
    assert size(cluster, sink) == 0
    assert size(cluster, f"{app}.forward.dlq") == 0
    assert all(offset < 0 for offset in committed(cluster, app, source, 2).values())


def test_no_read_on_the_group_is_a_clear_error_at_start(
    cluster: SecureCluster, tmp_path: Path
) -> None:
    names = app_env("nogroup")
    make_topics(cluster, names["TEST_IN"], names["TEST_OUT"])
    env = user_env(cluster, "carol", names)
    code, output, _ = run_until_exit(cluster, env, tmp_path / "worker.log", _REFUSAL_S)
    assert code == 1
    [error] = [e for e in error_lines(output) if e["level"] == "error"]
    assert "consumer group" in error["error"], error


def test_no_password_in_any_output_of_the_module(
    secure_kafka: LocalKafka, cluster: SecureCluster
) -> None:
    """What :func:`captured` checked output by output, once more over all of them,
    and the broker's own log, which saw every refused login."""
    joined = "\n".join([*_outputs, secure_kafka.log_file.read_text(errors="replace")])
    for secret in secrets_of(cluster):
        assert secret not in joined
    # No password property shown unmasked, whatever its value.
    assert not re.search(r'"sasl[._]password"\s*:\s*"[^*]', joined)
