"""``python -m streamkit ...`` run the way an operator runs it, for tests of the command line.

Unit and integration tests alike start the real command in a subprocess, so
its exit code, output and logging set-up are its own and not this process's.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    env: Mapping[str, str], *args: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m streamkit ARGS`` from the repository root with exactly ``env``.

    Args:
        env: The command's whole environment: nothing of this process's is
            added, so a test decides which ``STREAMKIT_*`` settings it sees.
        args: The command's arguments.
        timeout: Seconds before a hung command fails its test, instead of
            the whole run hanging.

    Returns:
        The finished command, its stdout and stderr as text.
    """
    return subprocess.run(
        [sys.executable, "-m", "streamkit", *args],
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
