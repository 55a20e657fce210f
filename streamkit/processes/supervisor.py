"""``streamkit run --processes N``: N worker processes as members of the one group.

A Python process runs its agents on one core; the supervisor is how one pod
uses several. It does no Kafka work itself: each child is a whole
``streamkit run`` worker with its own consumer, producer and commits, so
every delivery guarantee is the single worker's, and the group spreads the
partitions over the children as over pods.

What it adds:

- **Restarts.** A child that exits without being asked to is started again
  after a backoff (0.5 s, doubling to 30 s); a run of 5 failures, each
  within a minute of its start, makes the supervisor stop the others and
  exit 1. A child exiting 2 (a setting, a declaration, an import) is not
  restarted: it would fail the same way, so the supervisor stops at once.
- **Shutdown.** SIGTERM or SIGINT is forwarded once to every child, which
  drains and commits within ``shutdown_timeout``; children still running a
  few seconds after that are killed. Exit 0 when every child exited 0.
- **Static membership.** With ``group_instance_id`` (the chart sets the pod
  name), child *i* is ``<id>-<i>``, so a restarted pod's children take back
  their own partitions without a rebalance.
- **One endpoint.** With ``http_port``, the supervisor serves ``/livez``,
  ``/readyz`` and ``/metrics`` for all children (:mod:`.endpoint`).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from types import FrameType

import structlog
from prometheus_client.registry import CollectorRegistry

from streamkit.config import AppConfig
from streamkit.localkafka.process import free_ports
from streamkit.observability.server import ObservabilityServer
from streamkit.processes.children import EXIT_USAGE, Child, RestartPolicy
from streamkit.processes.endpoint import ChildrenCollector, ChildrenHealth, ChildrenView

log = structlog.get_logger("streamkit.processes")

# How often the loop looks at its children when no signal wakes it.
_TURN_S = 0.2
# Past shutdown_timeout: the children's own deadline, then a little for the
# interpreter to exit; after that they are killed.
_EXIT_GRACE_S = 5.0


class Supervisor:
    """Runs ``processes`` children of one command and keeps them running.

    Args:
        argv: The child's command, without ``--http-port`` (added per child).
        processes: How many children.
        config: The app's settings, already validated (``shutdown_timeout``,
            ``http_host``/``http_port``).
        env: The children's environment.
        policy: When to restart a child and when to give up.
    """

    def __init__(
        self,
        argv: Sequence[str],
        processes: int,
        config: AppConfig,
        env: Mapping[str, str],
        policy: RestartPolicy | None = None,
    ) -> None:
        self._argv = list(argv)
        self._config = config
        self._env = dict(env)
        self._policy = policy or RestartPolicy()
        self.children = [Child(index) for index in range(processes)]
        self._wake = threading.Event()
        self._signals = 0
        self._turn = time.monotonic()
        self._outcome: int | None = None  # set when the supervisor gives up

    def run(self) -> int:
        """Start the children and supervise them until a signal or a failure; the exit code."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        server = self._serve()
        try:
            for child in self.children:
                self._start(child)
            while not self._signals and self._outcome is None:
                self._turn = time.monotonic()
                for child in self.children:
                    self._look_at(child)
                self._wake.wait(_TURN_S)
                self._wake.clear()
            return self._shutdown()
        finally:
            for child in self.children:  # only after an error in this loop
                child.signal(signal.SIGKILL)
            if server is not None:
                server.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _serve(self) -> ObservabilityServer | None:
        if self._config.http_port is None:
            return None
        view = ChildrenView(self.children, lambda: self._turn)
        registry = CollectorRegistry()
        registry.register(ChildrenCollector(view))
        server = ObservabilityServer(
            ChildrenHealth(view), registry, self._config.http_host, self._config.http_port
        )
        server.start()
        log.info("http endpoint listening", port=server.port, processes=len(self.children))
        return server

    def _start(self, child: Child) -> None:
        argv = list(self._argv)
        if self._config.http_port is not None:
            # A new port each start: the last one may still be in TIME_WAIT.
            child.http_port = free_ports(1)[0]
            argv += ["--http-port", str(child.http_port)]
        child.start(argv, self._env)
        log.info("process started", process=child.index, pid=child.pid)

    def _look_at(self, child: Child) -> None:
        code = child.reap()
        now = time.monotonic()
        if code is not None:
            self._exited(child, code, now)
        elif not child.running() and child.restart_at is not None and now >= child.restart_at:
            self._start(child)

    def _exited(self, child: Child, code: int, now: float) -> None:
        fields = {"process": child.index, "pid": child.pid, "exit_code": code}
        if code == EXIT_USAGE:
            log.error("process failed on its settings or app; not restarting it", **fields)
            self._outcome = EXIT_USAGE
        elif code == 0:
            # Asked to stop by someone else (a SIGTERM to the child alone):
            # not a failure, but the pod still wants N processes.
            child.restart_at = now + self._policy.first_delay
            child.restarts += 1
            log.warning("process stopped without being asked to; starting it again", **fields)
        elif child.failed(self._policy, now):
            assert child.restart_at is not None
            log.warning(
                "process failed; restarting it",
                in_seconds=round(child.restart_at - now, 1),
                failures_in_a_row=child.failures,
                **fields,
            )
        else:
            log.error(
                "process keeps failing; stopping the others",
                failures_in_a_row=child.failures,
                **fields,
            )
            self._outcome = 1

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            # A second signal means "now": the children exit at once too.
            for child in self.children:
                child.signal(signal.SIGTERM)
        self._wake.set()

    def _shutdown(self) -> int:
        """Forward one SIGTERM to every child, wait for them, and decide the exit code."""
        running = [c for c in self.children if c.running()]
        log.info("stopping processes", processes=len(running))
        for child in running:
            child.stopping = True
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + self._config.shutdown_timeout + _EXIT_GRACE_S
        codes: dict[int, int] = {}
        for child in running:
            assert child.process is not None
            try:
                code = child.process.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                log.error("process did not stop in time; killing it", process=child.index)
                child.signal(signal.SIGKILL)
                code = child.process.wait()
            codes[child.index] = child.last_exit = code
        failed = {i: code for i, code in codes.items() if code != 0}
        if self._outcome is not None:
            return self._outcome
        if failed:
            log.error("processes did not stop cleanly", exit_codes=failed)
            return 1
        log.info("all processes stopped cleanly", processes=len(codes))
        return 0
