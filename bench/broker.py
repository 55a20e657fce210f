"""What the benchmarks share around the runs: the broker, and starting and stopping a contender.

A benchmark uses ``BENCH_BROKERS`` when it is set, else a throwaway
LocalKafka on free ports (never 9092), removed with its data afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def bench_broker(given: str | None) -> Iterator[tuple[str, bool]]:
    """Yield ``(bootstrap, started_here)``; a broker started here is stopped and deleted."""
    if given:
        yield given, False
        return
    from streamkit.localkafka import LocalKafka, free_ports

    port, ctrl = free_ports(2)
    broker = LocalKafka(
        port, controller_port=ctrl, data_dir=Path(f"/tmp/streamkit-bench-{port}"), heap="1g"
    )
    broker.start()
    try:
        yield broker.bootstrap, True
    finally:
        broker.stop()
        shutil.rmtree(broker.data_dir, ignore_errors=True)


def start(argv: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a contender from the repository root, its stdout and stderr into ``log``.

    In a session of its own, so a Ctrl-C at the terminal reaches only the
    bench, which then stops the contender the way it stops any (:func:`stop`).
    """
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(popen: subprocess.Popen[bytes]) -> None:
    """SIGTERM a contender, as an orchestrator would; SIGKILL it after 30 s."""
    if popen.poll() is not None:
        return
    popen.terminate()
    try:
        popen.wait(30)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()
