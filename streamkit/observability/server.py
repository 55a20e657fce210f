"""The worker's HTTP endpoint: ``/livez``, ``/readyz``, ``/metrics``, ``/tables/<t>/<key>``.

A standard-library :class:`~http.server.ThreadingHTTPServer` on a daemon
thread, one short-lived thread per request, so a slow scrape never delays a
probe. Only a table lookup reaches the event loop (the slices live there),
as a call scheduled between two records and waited for with a timeout. It
listens on ``http_host`` (``127.0.0.1`` unless set: the Helm chart sets
``STREAMKIT_HTTP_HOST=0.0.0.0``) and ``http_port``, and serves until the
process exits.

Example::

    STREAMKIT_HTTP_PORT=8080 streamkit run pipelines.example:app
    curl -i localhost:8080/readyz
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

import structlog
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from streamkit.errors import ConfigError
from streamkit.observability.health import Health, Verdict
from streamkit.observability.kafka_stats import StatsReader
from streamkit.observability.metrics import WorkerCollector
from streamkit.observability.state import TablesView

if TYPE_CHECKING:
    from streamkit.config import AppConfig
    from streamkit.runtime.worker import Worker

log = structlog.get_logger("streamkit.http")

_TEXT = "text/plain; charset=utf-8"


class Probes(Protocol):
    """What answers ``/livez`` and ``/readyz``: a worker's :class:`Health`, or a supervisor's."""

    def live(self) -> Verdict:
        """The liveness verdict, now."""
        ...

    def ready(self) -> Verdict:
        """The readiness verdict, now."""
        ...


class _Handler(BaseHTTPRequestHandler):
    """Routes one request; ``health`` and ``registry`` are set on a subclass per server."""

    health: Probes
    registry: CollectorRegistry
    tables: TablesView | None
    server_version = "streamkit"
    timeout = 10  # a client that stops sending holds its thread this long at most

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/livez":
            self._verdict(self.health.live())
        elif path == "/readyz":
            self._verdict(self.health.ready())
        elif path == "/metrics":
            self._metrics()
        elif path.startswith("/tables/") and path.count("/") >= 3:
            self._table(path)
        else:
            self._send(404, b"not found; try /livez, /readyz, /metrics or /tables/T/K\n", _TEXT)

    def _table(self, path: str) -> None:
        _, _, table, key = path.split("/", 3)
        tables = self.tables
        if tables is None:
            status, body = 404, {"error": "this worker's agents have no tables"}
        else:
            status, body = tables.lookup(unquote(table), unquote(key), timeout=5.0)
        self._send(status, json.dumps(body).encode() + b"\n", "application/json")

    def _verdict(self, verdict: Verdict) -> None:
        self._send(200 if verdict.ok else 503, f"{verdict.reason}\n".encode(), _TEXT)

    def _metrics(self) -> None:
        encode, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            body = encode(self.registry)
        except Exception:
            log.exception("collecting metrics failed")
            self._send(500, b"collecting metrics failed; see the worker's log\n", _TEXT)
            return
        self._send(200, body, content_type)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: probes and scrapes come every few seconds."""


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6  # for http_host "::" on IPv6-only clusters


class ObservabilityServer:
    """Serves a worker's probes and metrics from a daemon thread.

    Args:
        health: Decides ``/livez`` and ``/readyz``.
        registry: What ``/metrics`` exposes.
        host: Address to listen on.
        port: Port to listen on (0: any free port, for tests).

    Raises:
        ConfigError: The address cannot be bound (in use, or not local).
    """

    def __init__(
        self,
        health: Probes,
        registry: CollectorRegistry,
        host: str,
        port: int,
        tables: TablesView | None = None,
    ) -> None:
        handler = type(
            "Handler", (_Handler,), {"health": health, "registry": registry, "tables": tables}
        )
        server = _Server6 if ":" in host else ThreadingHTTPServer
        try:
            self._server = server((host, port), handler)
        except OSError as exc:
            setting = "http_host" if isinstance(exc, socket.gaierror) else "http_port"
            raise ConfigError(
                setting, f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="streamkit-http", daemon=True
        )

    @property
    def port(self) -> int:
        """The port listened on (the chosen one when started with 0)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Start serving (returns at once)."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def serve(worker: Worker, config: AppConfig) -> ObservabilityServer:
    """Start ``worker``'s endpoint on ``config.http_host:config.http_port``.

    Call it after building the worker and before running it: the partition
    workers it creates then report their slices to the metrics.

    Raises:
        ConfigError: The port is off in ``config`` or cannot be bound.
    """
    if config.http_port is None:
        raise ConfigError("http_port", "not set; the HTTP endpoint is off")
    stats = StatsReader()
    health = Health(
        worker,
        config.liveness_timeout,
        kip848=config.group_protocol == "consumer",
        stats=stats,
    )
    collector = WorkerCollector(worker, health, stats)
    for topic, timings in collector.timings.items():
        worker.on_slice[topic] = timings.observe
    registry = CollectorRegistry()
    registry.register(collector)
    ProcessCollector(registry=registry)  # process_* (memory, CPU, file descriptors)
    server = ObservabilityServer(
        health, registry, config.http_host, config.http_port, tables=worker.tables
    )
    server.start()
    log.info(
        "http endpoint listening",
        host=config.http_host,
        port=server.port,
        paths="/livez /readyz /metrics" + (" /tables/<table>/<key>" if worker.tables else ""),
    )
    return server
