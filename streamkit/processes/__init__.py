"""Several worker processes in one pod: ``streamkit run --processes N``.

:func:`run_command` is the body of ``streamkit run``: with one process it
is the worker itself (:func:`streamkit.runtime.run.run_app`); with more, a
:class:`~streamkit.processes.supervisor.Supervisor` starts that many
``streamkit run --processes 1`` children. Everything a child would refuse
(a setting, the app's declarations) is refused here first, once, instead
of by N children in a restart loop.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from streamkit.app import App
from streamkit.config import AppConfig
from streamkit.logs import bind_process_fields, configure_logging
from streamkit.processes.children import INDEX_ENV, SUPERVISOR_ENV
from streamkit.processes.cores import usable_cores
from streamkit.processes.supervisor import Supervisor

__all__ = ["Supervisor", "run_command", "usable_cores"]

log = structlog.get_logger("streamkit.processes")

# How often a child checks that its supervisor is still there.
_PARENT_CHECK_S = 1.0


def run_command(app: App, target: str, agents: Sequence[str], overrides: Mapping[str, Any]) -> int:
    """Run ``app`` as ``streamkit run target`` would; the process exit code.

    Args:
        app: The loaded app.
        target: ``MODULE:APP``, for the children's command line.
        agents: ``--agent`` names (all when empty).
        overrides: The command line's settings (``None``: not given).
    """
    from streamkit.runtime.run import run_app

    config = app.config(**overrides)
    index = os.environ.get(INDEX_ENV)
    if index is not None and config.processes == 1:
        return run_app(app, agents, **_as_child(config, int(index), overrides))
    count = usable_cores() if config.processes == "auto" else int(config.processes)
    if count == 1:
        return run_app(app, agents, **{**overrides, "processes": 1})
    configure_logging(config.log_format, config.log_level)
    structlog.contextvars.bind_contextvars(app=app.name, group=config.group_id)
    app.select(agents)  # an unknown --agent stops here, not in N children
    argv = [sys.executable, "-m", "streamkit", "run", target, "--processes", "1"]
    for agent in agents:
        argv += ["--agent", agent]
    if overrides.get("brokers") is not None:
        argv += ["--brokers", str(overrides["brokers"])]
    if overrides.get("processing_guarantee") is not None:
        argv += ["--processing-guarantee", str(overrides["processing_guarantee"])]
    log.info("starting processes", processes=count, auto=config.processes == "auto")
    # The children's endpoints are the supervisor's to ask, not the pod's
    # to expose: loopback, whatever STREAMKIT_HTTP_HOST the pod has.
    env = {**os.environ, "STREAMKIT_HTTP_HOST": "127.0.0.1"}
    return Supervisor(argv, count, config, env).run()


def _as_child(config: AppConfig, index: int, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A child's settings: its own static member id; and it stops when orphaned."""
    bind_process_fields(process=index)
    supervisor = int(os.environ.get(SUPERVISOR_ENV, "0"))
    if supervisor:
        threading.Thread(
            target=_stop_when_orphaned, args=(supervisor,), name="streamkit-orphan", daemon=True
        ).start()
    base = config.group_instance_id
    if base is None:
        return dict(overrides)
    return {**overrides, "group_instance_id": f"{base}-{index}"}


def _stop_when_orphaned(supervisor: int) -> None:
    """SIGTERM this process once its parent is no longer ``supervisor`` (killed, OOM)."""
    while os.getppid() == supervisor:
        time.sleep(_PARENT_CHECK_S)
    os.kill(os.getpid(), signal.SIGTERM)
