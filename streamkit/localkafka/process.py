"""Ports, pidfiles and process-group signals for the local broker (POSIX only).

The broker runs in its own session (``start_new_session=True``), so its pid is
also its process-group id: a Ctrl-C in the terminal that ran ``make kafka-up``
does not reach it, and stopping signals the whole group.

A broker started by an earlier command (``python -m streamkit.localkafka up``)
is found again through the pidfile in its data directory. A pid alone is not
proof, since pids are reused, so a pid counts as ours only while its command
line still names that data directory's ``server.properties``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from streamkit.localkafka.config import LOOPBACK

PIDFILE_NAME = "broker.pid"

# Deadline polling step: short enough that stop() returns within 50 ms of the
# JVM exiting, long enough not to spin a core.
_POLL_S = 0.05


def free_ports(count: int = 1) -> list[int]:
    """Return ``count`` distinct TCP ports that are free on 127.0.0.1 right now.

    The sockets are held open together so the kernel cannot hand out the same
    port twice; another process may still grab one before the broker binds it,
    a window of milliseconds.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_is_free(port: int) -> bool:
    """Tell whether the broker could bind ``port`` on 127.0.0.1 now.

    SO_REUSEADDR mirrors what the JVM sets on its server sockets, so sockets in
    TIME_WAIT left by the previous run of a restarted broker do not count.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """Tell whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def write_pidfile(data_dir: Path, pid: int) -> None:
    """Record the broker's pid; written atomically so readers never see half a number."""
    tmp = data_dir / f".{PIDFILE_NAME}.tmp"
    tmp.write_text(f"{pid}\n", encoding="ascii")
    tmp.replace(data_dir / PIDFILE_NAME)


def read_pidfile(data_dir: Path) -> int | None:
    """Return the pid recorded in ``data_dir``, or ``None`` if absent or garbled."""
    try:
        text = (data_dir / PIDFILE_NAME).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def remove_pidfile(data_dir: Path) -> None:
    """Forget the recorded pid (no error if there is none)."""
    with contextlib.suppress(FileNotFoundError):
        (data_dir / PIDFILE_NAME).unlink()


def is_alive(pid: int) -> bool:
    """Tell whether ``pid`` runs; a zombie (exited, not yet reaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # Exists, but belongs to someone else.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True  # No procfs (macOS): trust kill(0).
    # Field 3, after the parenthesised command name that may itself hold spaces.
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def command_line(pid: int) -> str | None:
    """Return the command line of ``pid`` as one string, or ``None`` if unknown."""
    if sys.platform.startswith("linux"):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        # Empty for zombies and kernel threads, and between fork and exec.
        return raw.replace(b"\0", b" ").decode(errors="replace").strip() or None
    try:
        done = subprocess.run(
            ["ps", "-p", str(pid), "-o", "command="],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group led by ``pid``; a vanished group is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def wait_dead(pid: int, timeout: float) -> bool:
    """Poll until ``pid`` is gone (for a process we cannot ``wait()`` on).

    Returns:
        Whether it died before the deadline.

    """
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def tail(path: Path, lines: int) -> str:
    """Return the last ``lines`` lines of a log file, for error messages."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            # 64 KiB holds 40 lines even with Java's long stack-trace lines.
            log.seek(max(log.tell() - 65536, 0))
            text = log.read().decode(errors="replace")
    except OSError:
        return f"({path.name} is missing)"
    return "\n".join(text.splitlines()[-lines:]) or f"({path.name} is empty)"
