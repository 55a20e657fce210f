"""``make demo`` and ``make demo-secure`` end to end: each starts a broker of its own.

The demo checks its own outputs against what the generator meant (every
order in exactly one of enriched/invalid, the windows recounted) and exits
1 with the reason if anything is off, so exit code 0 is the assertion.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streamkit.localkafka import free_ports
from tests.integration.helpers import ROOT

# The demo takes 12-25 s here; its own step timeouts stop it long before this.
_DEMO_S = 240


@pytest.mark.parametrize(
    ("secure", "connected"),
    [(False, "Started Kafka"), (True, "connects over SASL_SSL (SCRAM-SHA-512) as alice")],
    ids=["plaintext", "sasl_ssl"],
)
def test_the_demo_runs_end_to_end_and_checks_itself(secure: bool, connected: str) -> None:
    env = {
        **os.environ,
        # A port nothing listens on, so the plaintext demo starts its own
        # broker instead of recreating topics on the suite's.
        "KAFKA_PORT": str(free_ports(1)[0]),
        "STREAMKIT_DEMO_SECURE": "1" if secure else "",
        "COLUMNS": "200",
    }
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=_DEMO_S,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert " ".join(out.split()).count(connected) == 1, out
    assert "stopped cleanly after SIGTERM (exit code 0)" in out
    assert "Every order is in exactly one of enriched/invalid" in " ".join(out.split())
