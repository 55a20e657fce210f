"""``LocalKafka``: a real single-node Apache Kafka broker run from cached jars.

Lifecycle, all on 127.0.0.1::

    fetch()  jars into the cache once (Maven), no-op afterwards
    start()  write config -> format the data dir (first start only) -> launch the
             JVM in its own session -> return once a metadata request is answered
    stop()   SIGTERM to the process group -> wait -> SIGKILL if it hangs
    restart() stop() then start() on the same data dir: records survive

The data directory holds everything one broker owns::

    <data dir>/server.properties    rewritten on every start
    <data dir>/log4j2.properties    rewritten on every start
    <data dir>/server.log           broker log, plus the JVM's own stdout/stderr
    <data dir>/broker.pid           while running
    <data dir>/kafka-logs/          partitions and the KRaft metadata log
    <data dir>/secure/              secure broker only: certificates, passwords (0600),
                                    and one <user>.env of STREAMKIT_* settings per user

Readiness is judged by the broker answering a metadata request, not by a log
line: that is the first thing every client does, and it does not depend on the
wording of Kafka's logs.

A broker this process started and did not :meth:`~LocalKafka.detach` is
stopped when the interpreter exits, even if the caller forgot ``stop()``: an
orphaned JVM would hold its ports and half a gigabyte until someone noticed.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from streamkit.errors import LocalKafkaError
from streamkit.localkafka import process
from streamkit.localkafka.config import (
    LOOPBACK,
    PropertyValue,
    broker_properties,
    new_cluster_id,
    render_log4j2,
    render_properties,
)
from streamkit.localkafka.fetch import KAFKA_VERSION, cache_root, fetch_jars, java_executable
from streamkit.localkafka.probe import wait_until_answers
from streamkit.localkafka.security import (
    ADMIN_USER,
    PLAIN,
    SCRAM,
    SecureCluster,
    Security,
    listener_properties,
    load_credentials,
    scram_arguments,
)
from streamkit.localkafka.tls import TlsFiles, ensure_certificates

_log = logging.getLogger(__name__)

DEFAULT_PORT = 9092

# After SIGKILL the kernel tears the JVM down in well under a second; 10 s
# only guards against a process stuck in uninterruptible I/O.
_KILL_WAIT_S = 10.0
_LOG_TAIL_LINES = 40


def default_data_dir(port: int) -> Path:
    """Return the data directory ``python -m streamkit.localkafka up`` uses for ``port``."""
    return cache_root() / "kafka" / f"run-{port}"


class LocalKafka:
    """A Kafka broker (KRaft, broker and controller in one JVM) on 127.0.0.1.

    Meant for development and tests: one node, replication factor 1, topics
    created explicitly (auto-creation is off), short group timeouts. Needs Java
    17+, and Maven once to fetch the jars.

    Example::

        with LocalKafka(port=19092, data_dir=tmp_path / "kafka") as kafka:
            producer = Producer({"bootstrap.servers": kafka.bootstrap})

    Args:
        port: Client port. The default matches ``make kafka-up``.
        controller_port: KRaft controller port; defaults to ``port + 1``.
            Deterministic rather than random so a restarted data directory
            finds its controller where it was.
        data_dir: Where the broker keeps config, logs and data. Defaults to
            ``<cache>/kafka/run-<port>``, shared with the command line, so
            ``LocalKafka(9092).stop()`` stops a broker ``make kafka-up`` started.
        version: Kafka version to fetch and run.
        heap: JVM heap (``-Xms`` and ``-Xmx``), as Java spells sizes.
        extra_properties: Broker settings overriding the test-friendly defaults
            in :mod:`streamkit.localkafka.config`; ``None`` values drop a default.
        security: Start with a SASL_SSL listener, SCRAM and PLAIN users, the
            standard authorizer and ACLs instead of PLAINTEXT (``True``: the
            defaults of :class:`~streamkit.localkafka.security.Security`);
            :attr:`secure_cluster` tells clients how to connect.

    """

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        *,
        controller_port: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        version: str = KAFKA_VERSION,
        heap: str = "512m",
        extra_properties: Mapping[str, PropertyValue] | None = None,
        security: Security | bool | None = None,
    ) -> None:
        self.port = port
        self.controller_port = port + 1 if controller_port is None else controller_port
        if self.controller_port == port:
            raise LocalKafkaError(f"controller_port must differ from port ({port})")
        chosen = default_data_dir(port) if data_dir is None else Path(data_dir)
        self.data_dir = chosen.expanduser().absolute()
        self.version = version
        self.heap = heap
        self.extra_properties = dict(extra_properties or {})
        self.security: Security | None = Security() if security is True else security or None
        self._process: subprocess.Popen[bytes] | None = None
        # Fail on a bad property now rather than at the first start(); the
        # secure layout's keys are the same whatever the files and passwords.
        placeholder = TlsFiles(ca=self.secure_dir / "ca.pem", broker=self.secure_dir / "broker.pem")
        self._properties(self._secure_properties(placeholder, {ADMIN_USER: "-"}))

    def __repr__(self) -> str:
        return (
            f"LocalKafka(bootstrap={self.bootstrap!r}, controller_port={self.controller_port}, "
            f"data_dir='{self.data_dir}', version={self.version!r})"
        )

    @property
    def bootstrap(self) -> str:
        """The ``bootstrap.servers`` value for clients: ``"127.0.0.1:<port>"``."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def secure_dir(self) -> Path:
        """The secure broker's certificates, passwords and client settings."""
        return self.data_dir / "secure"

    @property
    def secure_cluster(self) -> SecureCluster:
        """Bootstrap, CA file and users of the secure broker, for clients.

        Available before :meth:`start` (the passwords and certificates are
        made on first use and kept in :attr:`secure_dir`).

        Raises:
            LocalKafkaError: The broker is not a secure one.

        """
        if self.security is None:
            raise LocalKafkaError(f"{self!r} has no security= (it listens on PLAINTEXT)")
        tls = ensure_certificates(self.secure_dir)
        passwords, _ = load_credentials(self.secure_dir, self.security.users)
        return SecureCluster(
            bootstrap=self.bootstrap,
            ca_location=tls.ca,
            users=(ADMIN_USER, *self.security.users),
            passwords=passwords,
        )

    @property
    def log_file(self) -> Path:
        """The broker's log; the first place to look when something misbehaves."""
        return self.data_dir / "server.log"

    @property
    def server_properties(self) -> Path:
        """The broker configuration file, rewritten on every start."""
        return self.data_dir / "server.properties"

    @property
    def log_dir(self) -> Path:
        """Where partitions and the KRaft metadata log are stored."""
        return self.data_dir / "kafka-logs"

    def fetch(self) -> Path:
        """Fetch this version's jars into the cache if needed; return the jar directory.

        Raises:
            LocalKafkaError: Maven or Java is missing, or the download failed.

        """
        return fetch_jars(self.version)

    def running_pid(self) -> int | None:
        """Return the pid of a live broker run from this data directory, else ``None``.

        Finds brokers started by this object and by earlier processes (the
        command line's ``up``), through the pidfile.
        """
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        pid = process.read_pidfile(self.data_dir)
        if pid is None or not process.is_alive(pid):
            return None
        command = process.command_line(pid)
        if command is None or str(self.server_properties) not in command:
            return None  # The pid was reused by an unrelated process.
        return pid

    def is_running(self) -> bool:
        """Tell whether a broker from this data directory is running."""
        return self.running_pid() is not None

    def start(self, timeout: float = 60.0) -> None:
        """Start the broker and return once it answers a metadata request.

        The jars are fetched first if the cache lacks them (not counted in
        ``timeout``). The data directory is formatted on the first start only,
        so a restart keeps every topic, record and committed offset.

        Args:
            timeout: Seconds for formatting plus startup. A cold start takes
                3-5 s; the margin absorbs a loaded CI machine.

        Raises:
            LocalKafkaError: A port is taken, a broker already runs from this
                data directory, Java is missing, or the broker exited or did not
                answer in time (the message ends with the tail of ``server.log``;
                the process is stopped before raising).

        """
        existing = self.running_pid()
        if existing is not None:
            raise LocalKafkaError(
                f"a broker already runs from {self.data_dir} (pid {existing}); "
                "stop it first or use another data_dir"
            )
        for what, port in (("port", self.port), ("controller port", self.controller_port)):
            if not process.port_is_free(port):
                raise LocalKafkaError(
                    f"{what} {port} on {LOOPBACK} is already in use by another process; "
                    "stop it or choose another port"
                )
        libs = self.fetch()
        java = java_executable()
        deadline = time.monotonic() + timeout
        self.data_dir.mkdir(parents=True, exist_ok=True)
        secure: dict[str, str] | None = None
        passwords: dict[str, str] = {}
        new_users: list[str] = []
        if self.security is not None:
            tls = ensure_certificates(self.secure_dir)
            passwords, new_users = load_credentials(self.secure_dir, self.security.users)
            secure = self._secure_properties(tls, passwords)
        self._write_config(secure)
        if not (self.log_dir / "meta.properties").is_file():
            # Every user's SCRAM credential goes into the metadata log at format time.
            self._format(java, libs, deadline, scram_arguments(passwords))
            new_users = []
        self._launch(java, libs)
        try:
            self._wait_ready(max(deadline - time.monotonic(), 1.0))
            if self.security is not None:
                self._secure_setup(new_users)
        except BaseException:
            self.stop()
            raise
        _log.info("local kafka %s up on %s (pid %s)", self.version, self.bootstrap, self.pid)

    @property
    def pid(self) -> int | None:
        """The broker's pid while it runs (also its process-group id)."""
        return self.running_pid()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL if it has not exited in ``timeout``.

        SIGTERM lets Kafka shut down cleanly (flush, close the metadata log),
        which keeps the next start free of log recovery. Idempotent: stopping a
        stopped broker does nothing.

        Raises:
            LocalKafkaError: The process survived SIGKILL.

        """
        child, self._process = self._process, None
        _started.discard(self)
        if child is not None:
            if child.poll() is None:
                process.signal_group(child.pid, signal.SIGTERM)
                try:
                    child.wait(timeout)
                except subprocess.TimeoutExpired:
                    _log.warning(
                        "broker pid %s ignored SIGTERM for %ss; killing", child.pid, timeout
                    )
                    process.signal_group(child.pid, signal.SIGKILL)
                    child.wait(_KILL_WAIT_S)
            process.remove_pidfile(self.data_dir)
            return
        pid = self.running_pid()
        if pid is not None:
            process.signal_group(pid, signal.SIGTERM)
            if not process.wait_dead(pid, timeout):
                _log.warning("broker pid %s ignored SIGTERM for %ss; killing", pid, timeout)
                process.signal_group(pid, signal.SIGKILL)
                if not process.wait_dead(pid, _KILL_WAIT_S):
                    raise LocalKafkaError(f"broker pid {pid} survived SIGKILL")
        process.remove_pidfile(self.data_dir)

    def restart(self, timeout: float = 60.0) -> None:
        """Stop and start again on the same ports and data; see :meth:`start`."""
        self.stop()
        self.start(timeout)

    def detach(self) -> None:
        """Let the broker outlive this Python process (what the command line's ``up`` does).

        The broker already runs in its own session, so nothing kills it when
        this process exits; this only drops the handle. :meth:`stop` on any
        ``LocalKafka`` with the same data directory still finds it.
        """
        self._process = None
        _started.discard(self)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _properties(self, secure: Mapping[str, str] | None = None) -> dict[str, str]:
        return broker_properties(
            port=self.port,
            controller_port=self.controller_port,
            log_dir=self.log_dir,
            extra=self.extra_properties,
            security=secure,
        )

    def _secure_properties(
        self, tls: TlsFiles, passwords: Mapping[str, str]
    ) -> dict[str, str] | None:
        if self.security is None:
            return None
        return listener_properties(
            port=self.port, controller_port=self.controller_port, tls=tls, passwords=passwords
        )

    def _secure_setup(self, new_users: Sequence[str]) -> None:
        """Users added since the format get their SCRAM credential; the ACLs; the env files."""
        assert self.security is not None
        cluster = self.secure_cluster
        if new_users:
            self._add_scram_users(cluster, new_users)
        cluster.create_acls(self.security.initial_acls())
        for user in cluster.users:
            lines = "".join(f"{k}={v}\n" for k, v in cluster.streamkit_env(user).items())
            path = self.secure_dir / f"{user}.env"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(lines)

    def _add_scram_users(self, cluster: SecureCluster, users: Sequence[str]) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import (
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
        changes = [
            UserScramCredentialUpsertion(u, info, cluster.password(u).encode()) for u in users
        ]
        for user, future in cluster._admin().alter_user_scram_credentials(changes).items():
            try:
                future.result(timeout=30)
            except KafkaException as exc:
                raise LocalKafkaError(f"creating the {SCRAM} user {user!r} failed: {exc}") from None

    def _write_config(self, secure: Mapping[str, str] | None = None) -> None:
        header = "Written by streamkit.localkafka on every start; pass extra_properties instead."
        path = self.server_properties
        # The secure layout's JAAS text holds the users' passwords.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # a file from before this rule kept its mode
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(render_properties(self._properties(secure), header=header))
        (self.data_dir / "log4j2.properties").write_text(
            render_log4j2(self.log_file), encoding="utf-8"
        )

    def _java_command(
        self, java: str, libs: Path, *args: str, jvm_flags: Sequence[str] = ()
    ) -> list[str]:
        return [
            java,
            *jvm_flags,
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-Djava.awt.headless=true",
            # Java expands a classpath entry ending in '*' to every jar in it.
            "-cp",
            str(libs / "*"),
            *args,
        ]

    def _format(self, java: str, libs: Path, deadline: float, scram: Sequence[str] = ()) -> None:
        tool = ["kafka.tools.StorageTool", "format", "--cluster-id", new_cluster_id(), *scram]
        command = self._java_command(java, libs, *tool, "--config", str(self.server_properties))
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=max(deadline - time.monotonic(), 1.0),
                check=False,
                cwd=self.data_dir,
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalKafkaError(f"formatting {self.log_dir} timed out") from exc
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip() or self._log_tail()
            raise LocalKafkaError(
                f"formatting {self.log_dir} failed (exit {done.returncode}):\n{output}"
            )

    def _launch(self, java: str, libs: Path) -> None:
        # Kafka's own start script's flags, bar the heap size: G1 with a short
        # pause target keeps request latency flat in tests.
        jvm_flags = [
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            # An OOM-crippled broker that stays up would hang tests; dying
            # turns it into a clear startup or connection error.
            "-XX:+ExitOnOutOfMemoryError",
        ]
        command = self._java_command(
            java, libs, "kafka.Kafka", str(self.server_properties), jvm_flags=jvm_flags
        )
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                # Own session and process group: terminal signals meant for the
                # caller do not reach the broker, and stop() can signal the group.
                start_new_session=True,
            )
        process.write_pidfile(self.data_dir, self._process.pid)
        _started.add(self)

    def _wait_ready(self, timeout: float) -> None:
        child = self._process
        assert child is not None

        def exited() -> str | None:
            code = child.poll()
            return None if code is None else f"the broker exited with code {code} while starting"

        conf = None
        if self.security is not None:
            conf = self.secure_cluster.client_config(ADMIN_USER, PLAIN)
            del conf["bootstrap.servers"]
        problem = wait_until_answers(LOOPBACK, self.port, timeout, failed=exited, conf=conf)
        if problem is not None:
            raise LocalKafkaError(f"{problem}; last lines of {self.log_file}:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        return process.tail(self.log_file, _LOG_TAIL_LINES)


# Brokers started here and not yet stopped or detached; see the module docstring.
_started: weakref.WeakSet[LocalKafka] = weakref.WeakSet()


@atexit.register
def _stop_forgotten_brokers() -> None:
    for kafka in list(_started):
        if kafka._process is not None:
            _log.warning("stopping local kafka on %s at exit", kafka.bootstrap)
            kafka.stop(timeout=10)
