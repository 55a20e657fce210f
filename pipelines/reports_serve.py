"""``make reports``: a broker, a reports worker and the web page, until Ctrl-C.

1. Broker: the one answering on 127.0.0.1:$KAFKA_PORT (default 9092), left
   running; otherwise a LocalKafka of this run, stopped at the end
   (:func:`pipelines.demo._broker`, as ``make demo`` does).
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
import signal
import sys
import tempfile
from pathlib import Path

import uvicorn
from confluent_kafka import KafkaException

from pipelines import reports
from pipelines.demo import DemoError, _broker, _interrupt, _port, _start_worker, console
from streamkit import StreamkitError
from streamkit.backends.kafka import create_admin, ensure_topics
from streamkit.localkafka.process import port_accepts
from streamkit.logs import configure_logging

HOST = "127.0.0.1"


def main() -> int:
    """Serve until interrupted; return the process exit code."""
    signal.signal(signal.SIGTERM, _interrupt)  # so cleanup also runs on SIGTERM
    configure_logging("console", "warning")
    with contextlib.ExitStack() as cleanup:  # closed last-in first-out: worker, then broker
        try:
            serve(cleanup)
        except (DemoError, StreamkitError, KafkaException) as exc:
            console.print(f"[bold red]reports failed:[/] {exc}")
            return 1
        except KeyboardInterrupt:  # before uvicorn runs, which handles its own
            console.print("[yellow]interrupted; cleaning up[/]")
    return 0  # Ctrl-C is how this is meant to end


def serve(cleanup: contextlib.ExitStack) -> None:
    """Start everything; returns when uvicorn stops. Resources to release go on ``cleanup``."""
    web_port = _web_port()
    if port_accepts(web_port, HOST):
        raise DemoError(f"{HOST}:{web_port} is taken; set REPORTS_PORT to a free port")
    bootstrap = _broker(_port(), cleanup)
    # The web app's client (imported by uvicorn below) reads it from here.
    os.environ["STREAMKIT_BROKERS"] = bootstrap
    config = reports.app.config()
    ensure_topics(create_admin(config), reports.app.topics.values(), replication=config.replication)

    state_root = Path(tempfile.mkdtemp(prefix="streamkit-reports-state-"))
    cleanup.callback(shutil.rmtree, state_root, ignore_errors=True)
    log_dir = Path(tempfile.gettempdir()) / f"streamkit-reports-{web_port}"
    worker = _start_worker(
        bootstrap,
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


def _web_port() -> int:
    text = os.environ.get("REPORTS_PORT", "8000")
    if not text.isdigit() or not 0 < int(text) < 65535:
        raise DemoError(f"REPORTS_PORT must be a port number; got {text!r}")
    return int(text)


if __name__ == "__main__":
    sys.exit(main())
