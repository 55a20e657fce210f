"""Health probes and Prometheus metrics for a running worker.

``streamkit run --http-port 8080`` (or ``STREAMKIT_HTTP_PORT``) serves
``/livez``, ``/readyz`` and ``/metrics``; see ``docs/deploy.md`` for what each
answers and the metric list. The runtime never imports this package: the
runtime keeps plain counters, and this package reads them when asked.
"""

from streamkit.observability.health import Health, Verdict
from streamkit.observability.metrics import HELP, MetricName, SliceTimings, WorkerCollector
from streamkit.observability.server import ObservabilityServer, serve

__all__ = [
    "HELP",
    "Health",
    "MetricName",
    "ObservabilityServer",
    "SliceTimings",
    "Verdict",
    "WorkerCollector",
    "serve",
]
