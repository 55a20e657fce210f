"""Waiting until a broker answers, judged the way a client would judge it.

A broker counts as ready once a metadata request returns at least one broker:
that is the first request every Kafka client sends, so "ready" here means
"a producer or consumer created now would work", independent of log wording
or of which process (JVM, container) runs the broker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from streamkit.localkafka.process import port_accepts

_log = logging.getLogger(__name__)

# One metadata request may block this long; a broker process that died in
# the meantime is then noticed within 2 s.
_PROBE_S = 2.0
# Between probes: short enough that startup is detected within 50 ms of the
# port opening, long enough not to spin a core.
_POLL_S = 0.05


def wait_until_answers(
    host: str,
    port: int,
    timeout: float,
    failed: Callable[[], str | None] = lambda: None,
    conf: Mapping[str, Any] | None = None,
) -> str | None:
    """Poll ``host:port`` until a metadata request lists a broker.

    Args:
        host: Broker host as clients will use it.
        port: Broker client port.
        timeout: Seconds to wait in total.
        failed: Called between probes; returns why waiting is pointless (for
            example "exited with code 1") or ``None`` to keep waiting.
        conf: Client properties beyond ``bootstrap.servers`` (a secure
            broker's SASL and TLS settings).

    Returns:
        ``None`` once the broker answers, else the reason it is not ready
        (the ``failed()`` reason, or a timeout description).

    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + timeout
    admin: AdminClient | None = None
    while True:
        reason = failed()
        if reason is not None:
            return reason
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return f"no answer from {host}:{port} within {timeout:.0f}s"
        # Until the port accepts connections a client would only log
        # "connection refused" lines; a plain socket probe stays quiet.
        if not port_accepts(port, host):
            time.sleep(_POLL_S)
            continue
        if admin is None:
            # The logger keeps librdkafka's transient errors (the broker
            # closing connections while it finishes starting) off stderr.
            admin = AdminClient(
                {**(conf or {}), "bootstrap.servers": f"{host}:{port}", "logger": _log}
            )
        try:
            if admin.list_topics(timeout=min(remaining, _PROBE_S)).brokers:
                return None
        except KafkaException:
            pass
        time.sleep(_POLL_S)
