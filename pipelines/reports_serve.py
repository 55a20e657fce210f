"""``make reports``: a broker, a reports worker and the web page, until Ctrl-C.

1. Broker: the one answering on 127.0.0.1:$KAFKA_PORT (default 9092), left
   running; otherwise a LocalKafka of this run, stopped at the end
   (:func:`pipelines.launch.local_broker`, as ``make demo`` does).
2. Topics: the reports app's topics are created if missing, so a report
   submitted before the worker has joined waits in its topic.
3. Worker: ``streamkit run pipelines.reports:app`` in the background, in a
   session of its own, its log in a file.
4. Web: ``uvicorn pipelines.reports_web:web`` on 127.0.0.1:$REPORTS_PORT
   (default 8000) in the foreground.

Ctrl-C (or SIGTERM) stops uvicorn, then the worker with one SIGTERM (a
clean drain), then the broker if this run started it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import uvicorn

from pipelines import launch, reports
from pipelines.launch import HOST, DemoError, console
from streamkit.backends.kafka import create_admin, ensure_topics
from streamkit.localkafka.process import port_accepts


def main() -> int:
    """Serve until interrupted; return the process exit code."""
    # Ctrl-C is how this is meant to end: before uvicorn runs (it handles
    # its own) as well as after.
    return launch.main("reports", serve, interrupted=0)


def serve(cleanup: contextlib.ExitStack) -> None:
    """Start everything; returns when uvicorn stops. Resources to release go on ``cleanup``."""
    web_port = launch.port_from_env("REPORTS_PORT", 8000)
    if port_accepts(web_port, HOST):
        raise DemoError(f"{HOST}:{web_port} is taken; set REPORTS_PORT to a free port")
    connection = launch.local_broker(launch.port_from_env("KAFKA_PORT", 9092), cleanup)
    # The web app's client (imported by uvicorn below) reads it from here.
    os.environ.update(connection.env)
    config = reports.app.config()
    ensure_topics(create_admin(config), reports.app.topics.values(), replication=config.replication)

    state_root = Path(tempfile.mkdtemp(prefix="streamkit-reports-state-"))
    cleanup.callback(shutil.rmtree, state_root, ignore_errors=True)
    log_dir = Path(tempfile.gettempdir()) / f"streamkit-reports-{web_port}"
    worker = launch.start_worker(
        connection,
        reports.app,
        "pipelines.reports:app",
        config.group_id,
        (),
        log_dir,
        state_root,
        cleanup,
    )
    console.print(
        f"Started worker {worker.name} (pid {worker.process.pid}, group {worker.group}); "
        f"its log is {worker.log_path}."
    )
    console.print(f"Open [bold]http://{HOST}:{web_port}/[/] (Ctrl-C stops everything).")
    # Access lines would print one per poll, three a second per open page.
    # A page's poll takes at most LOOKUP_S, so 5 s of graceful shutdown
    # lets every one finish instead of waiting on a browser left open.
    uvicorn.run(
        "pipelines.reports_web:web",
        host=HOST,
        port=web_port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    # uvicorn returns on Ctrl-C or SIGTERM, having handled the signal itself.
    console.print("[yellow]Web app stopped; stopping the worker and a broker it started.[/]")


if __name__ == "__main__":
    sys.exit(main())
