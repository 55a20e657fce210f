"""One worker process of a supervisor, and when to start it again.

A child is ``streamkit run MODULE:APP --processes 1`` in a new session, so
Ctrl-C in a terminal reaches only the supervisor, which then sends each
child exactly one SIGTERM (a second signal makes a worker exit at once,
without committing). The child learns its index and its supervisor from
``STREAMKIT_PROCESS_INDEX`` and ``STREAMKIT_SUPERVISOR_PID``: the first
derives its static member id, the second lets it stop by itself if the
supervisor dies without forwarding anything (SIGKILL, OOM).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

INDEX_ENV = "STREAMKIT_PROCESS_INDEX"
SUPERVISOR_ENV = "STREAMKIT_SUPERVISOR_PID"

# Exit status 2 is a user's error (a setting, a declaration, an import):
# starting the same child again would fail the same way.
EXIT_USAGE = 2


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Backoff between restarts of one child, and when to give up.

    Attributes:
        first_delay: Seconds before the first restart after a crash.
        max_delay: The longest wait; each failure in a row doubles it up to this.
        stable_after: A child that ran this long before it failed starts a
            new run of failures (a crash a day is not a crash loop).
        max_failures: Failures in a row, each sooner than ``stable_after``
            after its start, that make the supervisor give up.
    """

    first_delay: float = 0.5
    max_delay: float = 30.0
    stable_after: float = 60.0
    max_failures: int = 5

    def delay(self, failures: int) -> float:
        """Seconds to wait before restarting after the ``failures``-th failure in a row."""
        return min(self.first_delay * 2.0 ** max(failures - 1, 0), self.max_delay)


@dataclass
class Child:
    """One worker process slot: the current process, its port and its failures.

    Attributes:
        index: 0 to N-1, stable across restarts.
        http_port: Where its probes and metrics listen (loopback), if served.
        process: The running process, or ``None`` between runs.
        started: ``time.monotonic()`` of the current run's start.
        failures: Failures in a row (see :class:`RestartPolicy`).
        restarts: Restarts since the supervisor started, for the metric.
        restart_at: When to start it again after a failure.
        last_exit: The exit status of the last run (negative: the signal).
    """

    index: int
    http_port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restarts: int = 0
    restart_at: float | None = None
    last_exit: int | None = None
    stopping: bool = field(default=False)

    def start(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        """Start the child's process (any earlier one has exited)."""
        self.process = subprocess.Popen(
            list(argv),
            env={**env, INDEX_ENV: str(self.index), SUPERVISOR_ENV: str(os.getpid())},
            start_new_session=True,
        )
        self.started = time.monotonic()
        self.restart_at = None
        self.stopping = False

    @property
    def pid(self) -> int | None:
        """The running process's id."""
        return None if self.process is None else self.process.pid

    def running(self) -> bool:
        """Whether a process is started and has not been reaped."""
        return self.process is not None and self.process.returncode is None

    def reap(self) -> int | None:
        """The exit status if the process has exited since the last call, else ``None``."""
        if self.process is None or self.process.returncode is not None:
            return None
        code = self.process.poll()
        if code is not None:
            self.last_exit = code
        return code

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """Send ``signum`` to the running process, if any."""
        if self.running():
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):  # exited since the poll
                self.process.send_signal(signum)

    def failed(self, policy: RestartPolicy, now: float) -> bool:
        """Count a failed run; ``True`` while the policy still restarts it."""
        self.failures = 1 if now - self.started >= policy.stable_after else self.failures + 1
        if self.failures >= policy.max_failures:
            return False
        self.restart_at = now + policy.delay(self.failures)
        self.restarts += 1
        return True
