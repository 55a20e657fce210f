"""The supervisor's loop with stand-in children (tiny Python scripts), no broker.

What a child is does not matter to the supervisor: it starts a command N
times, restarts what exits unasked, forwards SIGTERM once and decides its
own exit code. The real worker as a child is in tests/integration/test_processes.py.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from streamkit.config import AppConfig
from streamkit.processes.children import RestartPolicy
from streamkit.processes.supervisor import Supervisor

FAST = RestartPolicy(first_delay=0.01, max_delay=0.05, stable_after=60.0, max_failures=3)
CONFIG = AppConfig.load("sup", {"brokers": "127.0.0.1:9", "shutdown_timeout": 5}, env={})


def sigterm_when(done: Callable[[], bool]) -> None:
    """SIGTERM this process (the supervisor's loop) from a thread once ``done()`` holds."""

    def watch() -> None:
        while not done():
            threading.Event().wait(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def lines(path: Path) -> int:
    return len(path.read_text()) if path.exists() else 0


def script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "child.py"
    path.write_text(body)
    return [sys.executable, str(path)]


def test_a_child_that_keeps_failing_makes_the_supervisor_give_up_with_1(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    argv = script(
        tmp_path,
        f"import os, sys\nopen({str(runs)!r}, 'a').write(os.environ['STREAMKIT_PROCESS_INDEX'])\n"
        "sys.exit(1)\n",
    )
    supervisor = Supervisor(argv, 2, CONFIG, os.environ, policy=FAST)

    assert supervisor.run() == 1
    # The first child to fail max_failures times ends it; the other may be
    # one run behind. No child runs more than max_failures times.
    counts = {i: runs.read_text().count(str(i)) for i in (0, 1)}
    assert max(counts.values()) == FAST.max_failures, counts
    assert all(c.restarts <= FAST.max_failures - 1 for c in supervisor.children)


def test_a_child_exiting_2_is_not_restarted_and_the_supervisor_exits_2(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    argv = script(
        tmp_path,
        "import os, signal, sys, time\n"
        f"open({str(runs)!r}, 'a').write(os.environ['STREAMKIT_PROCESS_INDEX'])\n"
        "if os.environ['STREAMKIT_PROCESS_INDEX'] == '1':\n"
        "    sys.exit(2)\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "time.sleep(60)\n",
    )
    supervisor = Supervisor(argv, 2, CONFIG, os.environ, policy=FAST)

    assert supervisor.run() == 2
    assert sorted(runs.read_text()) == ["0", "1"]  # each started once
    assert [c.last_exit for c in supervisor.children] == [0, 2]  # the healthy one was stopped


def test_sigterm_is_forwarded_once_and_clean_exits_give_0(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    got = tmp_path / "got"
    argv = script(
        tmp_path,
        "import os, signal, sys, time\n"
        "i = os.environ['STREAMKIT_PROCESS_INDEX']\n"
        f"def stop(*_):\n    open({str(got)!r}, 'a').write(i)\n    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        f"open({str(ready)!r}, 'a').write(i)\n"
        "time.sleep(60)\n",
    )
    supervisor = Supervisor(argv, 2, CONFIG, os.environ, policy=FAST)

    sigterm_when(lambda: lines(ready) == 2)
    assert supervisor.run() == 0
    assert sorted(got.read_text()) == ["0", "1"]  # one SIGTERM each
    assert all(c.restarts == 0 for c in supervisor.children)


def test_a_child_that_does_not_stop_in_time_is_killed_and_the_exit_is_1(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    argv = script(
        tmp_path,
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(ready)!r}, 'a').write('x')\n"
        "time.sleep(60)\n",
    )
    config = AppConfig.load("sup", {"brokers": "127.0.0.1:9", "shutdown_timeout": 0.1}, env={})
    supervisor = Supervisor(argv, 1, config, os.environ, policy=FAST)

    sigterm_when(lambda: lines(ready) == 1)
    assert supervisor.run() == 1
    assert supervisor.children[0].last_exit == -signal.SIGKILL


@pytest.mark.parametrize("exit_code", [0, -9])
def test_a_child_gone_unasked_is_started_again(tmp_path: Path, exit_code: int) -> None:
    runs = tmp_path / "runs"
    # The first run exits (or is killed); the second tells the test by
    # existing, and then waits for the SIGTERM.
    argv = script(
        tmp_path,
        "import os, signal, sys, time\n"
        f"first = not os.path.exists({str(runs)!r})\n"
        f"open({str(runs)!r}, 'a').write('x')\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "if first:\n"
        f"    os.kill(os.getpid(), signal.SIGKILL) if {exit_code} else sys.exit(0)\n"
        "time.sleep(60)\n",
    )
    supervisor = Supervisor(argv, 1, CONFIG, os.environ, policy=FAST)

    sigterm_when(lambda: lines(runs) == 2)
    assert supervisor.run() == 0
    assert supervisor.children[0].restarts == 1
