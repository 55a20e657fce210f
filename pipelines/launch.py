"""What ``make demo``, ``make demo-secure`` and ``make reports`` share.

Each of them is a short-lived program that finds or starts a broker, runs
``streamkit run`` workers as subprocesses and must leave nothing behind,
also after an error, Ctrl-C or SIGTERM. This module holds those pieces:

- :func:`main`: the signal handling, logging and cleanup around a program's body;
- :class:`Connection` and :func:`local_broker`: the broker and how every
  client of the run reaches it, over PLAINTEXT or SASL_SSL;
- :class:`Worker`, :func:`start_worker`, :func:`stop_workers` and
  :func:`wait_until_drained`: the worker subprocesses.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from pipelines.sample_data import SCHEMAS_DIR
from streamkit import App, StreamkitError
from streamkit.localkafka import LocalKafka, free_ports, is_fetched
from streamkit.localkafka.probe import wait_until_answers
from streamkit.localkafka.process import port_accepts
from streamkit.logs import configure_logging

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
# The secure broker's SASL user the demo's clients and workers run as; the
# local broker gives it the ACLs a streamkit app needs (full_access).
SECURE_USER = "alice"

# Timeouts are generous ceilings, not expectations: on a laptop the broker
# starts in 3-5 s (the secure one in 6-10 s: certificates, SCRAM users and
# ACLs), a worker joins in about 1 s, and a clean stop takes about 1 s.
_BROKER_START_S = 60.0
KAFKA_S = 30.0  # any one admin or metadata request, topic creation or deletion
_DRAIN_S = 90.0
_STOP_S = 40.0  # above the worker's own shutdown_timeout (30 s)
POLL_S = 0.1

console = Console(highlight=False)


class DemoError(Exception):
    """A step failed; the message says which one and why."""


def main(what: str, body: Callable[[contextlib.ExitStack], None], interrupted: int) -> int:
    """Run ``body`` with cleanup on every way out; return the process exit code.

    Args:
        what: The program's name, for the failure line (``demo failed: ...``).
        body: Every step; resources to release go on the stack it is given,
            closed last-in first-out (workers before the broker they use).
        interrupted: The exit code after Ctrl-C or SIGTERM: 130 for a run
            that should have finished by itself, 0 for a server Ctrl-C ends.
    """
    signal.signal(signal.SIGTERM, interrupt)  # so cleanup also runs on SIGTERM
    # streamkit's info lines (topics created...) would interleave with the
    # summary; the workers' own logs go to their files.
    configure_logging("console", "warning")
    with contextlib.ExitStack() as cleanup:
        try:
            body(cleanup)
        except (DemoError, StreamkitError, KafkaException) as exc:
            console.print(f"[bold red]{what} failed:[/] {exc}")
            return 1
        except KeyboardInterrupt:
            console.print("[yellow]interrupted; cleaning up[/]")
            return interrupted
    return 0


def interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler: unwind like Ctrl-C, so every cleanup callback runs."""
    raise KeyboardInterrupt


def port_from_env(variable: str, default: int) -> int:
    """The port number in ``$variable``, or ``default``; a bad value is a :class:`DemoError`."""
    text = os.environ.get(variable, str(default))
    if not text.isdigit() or not 0 < int(text) < 65535:
        raise DemoError(f"{variable} must be a port number; got {text!r}")
    return int(text)


@dataclass(frozen=True)
class Connection:
    """How every client of one run reaches its broker.

    The same facts in the three shapes the run's clients take them, made
    once where the broker is known, so a secure run changes nothing else.

    Attributes:
        bootstrap: ``host:port``.
        described: One line for the console: the protocol, and the user.
        settings: streamkit settings for ``app.config(**settings)``
            (``security_protocol=`` and the rest; empty for PLAINTEXT).
        client: librdkafka properties for the run's own consumers and producers.
        env: ``STREAMKIT_*`` variables for ``streamkit run`` subprocesses;
            a password goes by ``STREAMKIT_SASL_PASSWORD_FILE``, not by value,
            as a Kubernetes Secret would.
    """

    bootstrap: str
    described: str = "PLAINTEXT"
    settings: Mapping[str, str] = field(default_factory=dict, repr=False)
    client: Mapping[str, str] = field(default_factory=dict, repr=False)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def plaintext(cls, bootstrap: str) -> Connection:
        """A broker without security."""
        return cls(
            bootstrap,
            client={"bootstrap.servers": bootstrap},
            env={"STREAMKIT_BROKERS": bootstrap},
        )

    @classmethod
    def secure(cls, kafka: LocalKafka, user: str) -> Connection:
        """The secure local broker as ``user``: SASL_SSL, SCRAM-SHA-512, its generated CA."""
        cluster = kafka.secure_cluster
        client = cluster.client_config(user)
        password_file = kafka.secure_dir / f"{user}.password"
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(client["sasl.password"])
        settings = {
            "security_protocol": client["security.protocol"],
            "sasl_mechanism": client["sasl.mechanism"],
            "sasl_username": user,
            "sasl_password": client["sasl.password"],
            "ssl_ca": client["ssl.ca.location"],
        }
        env = {f"STREAMKIT_{k.upper()}": v for k, v in settings.items() if k != "sasl_password"}
        return cls(
            cluster.bootstrap,
            described=f"{client['security.protocol']} ({client['sasl.mechanism']}) as {user}",
            settings=settings,
            client=client,
            env={
                "STREAMKIT_BROKERS": cluster.bootstrap,
                **env,
                "STREAMKIT_SASL_PASSWORD_FILE": str(password_file),
            },
        )

    def consumer(self, **extra: Any) -> Consumer:
        """A consumer of this broker with ``extra`` properties (``group.id`` and the like)."""
        return Consumer({**self.client, **extra})


def local_broker(port: int, cleanup: contextlib.ExitStack, *, secure: bool = False) -> Connection:
    """Use the broker on ``port`` if one answers, else start one for this run.

    A secure run always starts a broker of its own, on a free port: only the
    broker that made the certificates and passwords can hand them out.
    """
    if secure:
        port = free_ports(1)[0]
    elif port_accepts(port, HOST):
        reason = wait_until_answers(HOST, port, timeout=10.0)
        if reason is not None:
            raise DemoError(
                f"{HOST}:{port} accepts connections but does not answer as a Kafka broker "
                f"({reason}); set KAFKA_PORT to a free port"
            )
        console.print(f"Using the broker already running on {HOST}:{port}; it is left running.")
        return Connection.plaintext(f"{HOST}:{port}")
    data_dir = Path(tempfile.mkdtemp(prefix=f"streamkit-demo-kafka-{port}-"))
    cleanup.callback(shutil.rmtree, data_dir, ignore_errors=True)
    # The controller's port is any free one: the default (the next port up)
    # may be taken even when the broker's is free.
    kafka = LocalKafka(port, controller_port=free_ports(1)[0], data_dir=data_dir, security=secure)
    if not is_fetched(kafka.version):
        console.print(f"Fetching the Kafka {kafka.version} jars with Maven (first run only)...")
        kafka.fetch()
    cleanup.callback(kafka.stop)  # idempotent, so safe even if start() fails halfway
    kind = "a secure Kafka (SASL_SSL, ACLs)" if secure else "Kafka"
    with console.status(f"Starting {kind} on {kafka.bootstrap}..."):
        kafka.start(timeout=_BROKER_START_S)
    console.print(
        f"Started {kind} {kafka.version} on {kafka.bootstrap}; stopped when the demo ends."
    )
    if not secure:
        return Connection.plaintext(kafka.bootstrap)
    connection = Connection.secure(kafka, SECURE_USER)
    console.print(
        f"Every client and worker connects over {connection.described}: TLS checked "
        f"against the CA made at start ({kafka.secure_cluster.ca_location.name}), the "
        f"password read from a 0600 file (STREAMKIT_SASL_PASSWORD_FILE), and the "
        f"broker's ACLs allow {SECURE_USER} its topics and groups."
    )
    return connection


@dataclass(frozen=True, slots=True)
class Worker:
    """One ``streamkit run`` subprocess.

    Attributes:
        name: The app's name, for messages.
        group: Its consumer group.
        reads: The topics to wait for it to drain, in order: each one's end
            is taken once the ones before it are drained, since processing
            an earlier topic may write to a later one.
        log_path: Where its output goes.
        process: The subprocess.
    """

    name: str
    group: str
    reads: tuple[str, ...]
    log_path: Path
    process: subprocess.Popen[bytes]


def start_worker(
    connection: Connection,
    app: App,
    target: str,
    group: str,
    reads: tuple[str, ...],
    log_dir: Path,
    state_root: Path,
    cleanup: contextlib.ExitStack,
) -> Worker:
    """Run ``streamkit run target`` in ``group``; it is stopped on cleanup if still running."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{app.name}.log"
    log = cleanup.enter_context(log_path.open("wb"))
    env = {
        **os.environ,
        **connection.env,
        "STREAMKIT_GROUP_ID": group,
        "STREAMKIT_SCHEMAS_DIR": str(SCHEMAS_DIR),
        "STREAMKIT_STATE_DIR": str(state_root / app.name),
        "STREAMKIT_LOG_FORMAT": "console",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "streamkit", "run", target],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        # Its own session: Ctrl-C in the terminal reaches only this program,
        # which then sends the worker one SIGTERM (a second signal would make
        # it exit at once without committing).
        start_new_session=True,
    )
    cleanup.callback(_stop_worker, process)
    return Worker(app.name, group, reads, log_path, process)


def _stop_worker(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(_STOP_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stop_workers(workers: Sequence[Worker]) -> None:
    """SIGTERM every worker at once, then expect each to exit 0 in time."""
    for worker in workers:
        worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_S
    for worker in workers:
        try:
            code = worker.process.wait(max(deadline - time.monotonic(), POLL_S))
        except subprocess.TimeoutExpired:
            raise DemoError(
                f"worker {worker.name} did not stop within {_STOP_S:.0f}s of SIGTERM; "
                f"see {worker.log_path}"
            ) from None
        if code != 0:
            raise DemoError(
                f"worker {worker.name} exited with code {code} after SIGTERM; "
                f"see {worker.log_path}:\n{_tail(worker.log_path)}"
            )
    names = " and ".join(w.name for w in workers)
    console.print(f"Workers {names} stopped cleanly after SIGTERM (exit code 0).")


def wait_until_drained(connection: Connection, workers: Sequence[Worker]) -> None:
    """Poll each worker's committed offsets until they reach the end of every topic it reads.

    Workers in order: one may read what an earlier one writes (the sessions
    worker reads the orders worker's ``orders.enriched``).
    """
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        for worker in workers:
            # The same group id only reads the group's offsets: this consumer
            # never subscribes, so it does not join the group or take partitions.
            consumer = connection.consumer(**{"group.id": worker.group})
            drained = []
            try:
                for topic in worker.reads:
                    total = _wait_for_topic(consumer, worker, topic, workers, progress)
                    drained.append(f"{topic} ({total:,} records)")
            finally:
                consumer.close()
            progress.console.print(
                f"Worker {worker.name} processed and committed all of {' and '.join(drained)}."
            )


def _wait_for_topic(
    consumer: Consumer,
    worker: Worker,
    topic: str,
    workers: Sequence[Worker],
    progress: Progress,
) -> int:
    """Wait until ``consumer``'s group committed the end of ``topic``; return its record count.

    ``workers`` are all the run's workers: if any exits meanwhile, waiting is pointless.
    """
    ends = end_offsets(consumer, topic)
    total = sum(ends.values())
    deadline = time.monotonic() + _DRAIN_S
    task = progress.add_task(f"{worker.name}: {topic}", total=total)
    try:
        while True:
            for other in workers:
                code = other.process.poll()
                if code is not None:
                    raise DemoError(
                        f"worker {other.name} exited with code {code} before {worker.name} "
                        f"drained {topic}; see {other.log_path}:\n{_tail(other.log_path)}"
                    )
            try:
                positions = consumer.committed(
                    [TopicPartition(topic, p) for p in ends], timeout=KAFKA_S
                )
            except KafkaException as exc:
                # On a broker that just started, the group's coordinator
                # may still be moving or loading (NOT_COORDINATOR): ask again.
                problem = f"last offset fetch failed: {exc.args[0]}"
            else:
                # -1001 means nothing committed yet for that partition.
                done = sum(max(tp.offset, 0) for tp in positions)
                problem = f"committed {done:,} of {total:,}"
                progress.update(task, completed=done)
                if all(tp.offset >= ends[tp.partition] for tp in positions):
                    return total
            if time.monotonic() > deadline:
                raise DemoError(
                    f"worker {worker.name} has not drained {topic} after {_DRAIN_S:.0f}s "
                    f"({problem}); see {worker.log_path}"
                )
            time.sleep(POLL_S)
    finally:
        progress.remove_task(task)


def end_offsets(consumer: Consumer, topic: str) -> dict[int, int]:
    """Each partition of ``topic`` and its end offset now."""
    partitions = consumer.list_topics(topic, timeout=KAFKA_S).topics[topic].partitions
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=KAFKA_S)[1]
        for p in partitions
    }


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
