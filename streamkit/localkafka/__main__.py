"""``python -m streamkit.localkafka fetch|up|down|status``: the local broker from a shell.

The Makefile's ``kafka-fetch``, ``kafka-up`` and ``kafka-down`` targets call
this. ``up`` and ``down`` are idempotent so scripts can call them blindly:
``up`` on a running broker and ``down`` on a stopped one both exit 0.

``up --secure`` starts the secure layout (SASL_SSL, SCRAM and PLAIN users,
ACLs: :mod:`streamkit.localkafka.security`) and prints where each user's
``STREAMKIT_*`` settings are, never a password. Pass ``--secure`` to
``down`` and ``status`` as well only to have them say so; they find the
broker either way.

Exit codes: 0 success, 1 failure (message on stderr), 3 ``status`` found no
broker (the LSB "not running" code, so shell scripts can branch on it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from streamkit.errors import LocalKafkaError
from streamkit.localkafka.fetch import KAFKA_VERSION, fetch_jars, is_fetched, libs_dir
from streamkit.localkafka.process import port_accepts
from streamkit.localkafka.runner import DEFAULT_PORT, LocalKafka
from streamkit.localkafka.security import Security

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_RUNNING = 3


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (separate so tests can check parsing alone)."""
    parser = argparse.ArgumentParser(
        prog="python -m streamkit.localkafka",
        description=f"Run a local Apache Kafka {KAFKA_VERSION} broker from cached jars.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("fetch", help="download the Kafka jars into the cache (once)")
    for name, summary in (
        ("up", "start a broker in the background; returns once it answers"),
        ("down", "stop the broker (no error if none runs)"),
        ("status", "tell whether the broker runs (exit 3 if not)"),
    ):
        sub = commands.add_parser(name, help=summary)
        sub.add_argument(
            "--port",
            type=int,
            default=os.environ.get("KAFKA_PORT", str(DEFAULT_PORT)),  # argparse applies type=
            help="client port on 127.0.0.1 (default: $KAFKA_PORT or 9092)",
        )
        sub.add_argument(
            "--controller-port", type=int, default=None, help="KRaft port (default: port + 1)"
        )
        sub.add_argument(
            "--data-dir", default=None, help="default: <cache>/kafka/run-<port>, kept across runs"
        )
        if name != "status":
            sub.add_argument(
                "--timeout", type=float, default=60.0, help="seconds to wait (default: 60)"
            )
        if name == "up":
            sub.add_argument(
                "--secure",
                action="store_true",
                help="SASL_SSL only, SCRAM-SHA-512 and PLAIN users, ACLs (see --user)",
            )
            sub.add_argument(
                "--user",
                dest="users",
                action="append",
                default=None,
                metavar="NAME",
                help="with --secure: a user with full access to topics and groups "
                "(repeatable; default: alice)",
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "fetch":
            return _fetch()
        security = None
        if getattr(args, "secure", False):
            security = Security(users=tuple(args.users or ("alice",)))
        elif getattr(args, "users", None):
            print("error: --user needs --secure", file=sys.stderr)
            return EXIT_FAILED
        kafka = LocalKafka(
            args.port,
            controller_port=args.controller_port,
            data_dir=args.data_dir,
            security=security,
        )
        if args.command == "up":
            return _up(kafka, args.timeout)
        if args.command == "down":
            return _down(kafka, args.timeout)
        return _status(kafka)
    except LocalKafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _fetch() -> int:
    if is_fetched(KAFKA_VERSION):
        print(f"kafka {KAFKA_VERSION} already in {libs_dir(KAFKA_VERSION)}")
        return EXIT_OK
    print(f"fetching kafka {KAFKA_VERSION} with mvn (about 43 MB, once) ...", flush=True)
    started = time.monotonic()
    libs = fetch_jars(KAFKA_VERSION)
    print(f"kafka {KAFKA_VERSION} fetched into {libs} in {time.monotonic() - started:.0f}s")
    return EXIT_OK


def _up(kafka: LocalKafka, timeout: float) -> int:
    pid = kafka.running_pid()
    if pid is not None:
        if not port_accepts(kafka.port):
            raise LocalKafkaError(
                f"a broker from {kafka.data_dir} runs (pid {pid}) but not on port {kafka.port}; "
                "run `down` with its port first"
            )
        print(f"kafka {kafka.version} already up on {kafka.bootstrap} ({_where(kafka, pid)})")
        if kafka.security is not None and (kafka.secure_dir / "admin.env").is_file():
            _say_secure(kafka)
        return EXIT_OK
    if not kafka.log_dir.exists():
        print(f"formatting a new broker in {kafka.data_dir}", flush=True)
    kafka.start(timeout)
    pid = kafka.running_pid()
    kafka.detach()  # Keep it running after this command exits.
    print(f"kafka {kafka.version} up on {kafka.bootstrap} ({_where(kafka, pid)})")
    if kafka.security is not None:
        _say_secure(kafka)
    return EXIT_OK


def _say_secure(kafka: LocalKafka) -> None:
    cluster = kafka.secure_cluster
    print(f"SASL_SSL (SCRAM-SHA-512 or PLAIN), CA {cluster.ca_location}")
    for user in cluster.users:
        role = "super user" if user == "admin" else "full access to topics and groups"
        # The file, not its content: a printed password ends up in scrollback and CI logs.
        print(f"  {user} ({role}): set -a; . {kafka.secure_dir / (user + '.env')}; set +a")


def _down(kafka: LocalKafka, timeout: float) -> int:
    pid = kafka.running_pid()
    if pid is None:
        print(f"kafka not running on {kafka.bootstrap} (data {kafka.data_dir})")
        return EXIT_OK
    kafka.stop(timeout)
    print(f"kafka on {kafka.bootstrap} stopped (was pid {pid})")
    return EXIT_OK


def _status(kafka: LocalKafka) -> int:
    pid = kafka.running_pid()
    if pid is None:
        print(f"kafka not running on {kafka.bootstrap} (data {kafka.data_dir})")
        return EXIT_NOT_RUNNING
    state = "up" if port_accepts(kafka.port) else "starting"
    print(f"kafka {kafka.version} {state} on {kafka.bootstrap} ({_where(kafka, pid)})")
    return EXIT_OK


def _where(kafka: LocalKafka, pid: int | None) -> str:
    return f"pid {pid}, data {kafka.data_dir}"


if __name__ == "__main__":
    sys.exit(main())
