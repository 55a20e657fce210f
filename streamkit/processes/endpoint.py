"""The supervisor's ``/livez``, ``/readyz`` and ``/metrics``: its children's, gathered.

Each child serves its own endpoint on a loopback port the supervisor chose;
the supervisor's answers ask every child at request time, in parallel, with
a short timeout, so a scrape or probe costs one round of local requests and
no child state is copied ahead of time. prometheus-client's multiprocess
mode was the other way: it cannot carry the workers' custom collectors
(they read the live worker, not counters in shared files).

- ``/metrics``: every child's samples with a ``process`` label (0 to N-1),
  plus the supervisor's own ``streamkit_processes`` and
  ``streamkit_process_restarts_total``.
- ``/readyz``: ready when every child is.
- ``/livez``: live unless a child says it is not (a stuck loop or record);
  a child that is starting or waiting to restart does not fail it, since
  the supervisor is already dealing with it, and a pod restart would only
  stop the healthy children too.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from streamkit.observability.health import Verdict
from streamkit.processes.children import Child

# A child answers from its own HTTP thread in well under 10 ms; a second
# means it is busy starting (imports) or gone.
_ASK_S = 1.0
# The supervisor's loop wakes every 0.2 s; ten seconds without a turn is stuck.
_LOOP_STALE_S = 10.0


def _ask(port: int, path: str) -> tuple[int, str] | None:
    """``(status, body)`` of ``GET 127.0.0.1:port/path``; ``None`` if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=_ASK_S) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None


class ChildrenView:
    """What the endpoint may see of the supervisor: its children and its loop's pulse.

    Args:
        children: The child slots (read, never changed, by the endpoint).
        last_turn: ``time.monotonic()`` of the supervisor loop's last turn.
    """

    def __init__(self, children: Sequence[Child], last_turn: Callable[[], float]) -> None:
        self.children = children
        self.last_turn = last_turn
        self._pool = ThreadPoolExecutor(max_workers=max(len(children), 1) * 2)

    def ask_all(self, path: str) -> list[tuple[Child, tuple[int, str] | None]]:
        """Every child's answer to ``path``, asked in parallel (``None``: no answer)."""
        served = [c for c in self.children if c.http_port is not None and c.running()]
        answers = self._pool.map(lambda c: _ask(c.http_port or 0, path), served)
        return list(zip(served, answers, strict=True))


class ChildrenHealth:
    """``/livez`` and ``/readyz`` of the supervisor (see the module docstring)."""

    def __init__(self, view: ChildrenView) -> None:
        self._view = view

    def live(self) -> Verdict:
        """Not live when the supervisor's loop is stuck or a child reports it is not live."""
        idle = time.monotonic() - self._view.last_turn()
        if idle > _LOOP_STALE_S:
            return Verdict(False, f"the supervisor's loop has not turned for {idle:.0f}s")
        stuck = [
            f"process {c.index}: {answer[1].strip()}"
            for c, answer in self._view.ask_all("/livez")
            if answer is not None and answer[0] != 200
        ]
        if stuck:
            return Verdict(False, "; ".join(stuck))
        return Verdict(True, f"live: {len(self._view.children)} processes")

    def ready(self) -> Verdict:
        """Ready when every child answers ready."""
        answers = dict((c.index, a) for c, a in self._view.ask_all("/readyz"))
        problems = []
        for child in self._view.children:
            answer = answers.get(child.index)
            if answer is None:
                state = "restarting" if child.restart_at is not None else "not answering yet"
                problems.append(f"process {child.index}: {state}")
            elif answer[0] != 200:
                problems.append(f"process {child.index}: {answer[1].strip()}")
        if problems:
            return Verdict(False, "; ".join(problems))
        return Verdict(True, f"ready: all {len(self._view.children)} processes")


class ChildrenCollector:
    """``/metrics``: the children's families, each sample labelled with its ``process``."""

    def __init__(self, view: ChildrenView) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        """Ask every child; merge same-named families; add the supervisor's own."""
        merged: dict[str, Metric] = {}
        for child, answer in self._view.ask_all("/metrics"):
            if answer is None or answer[0] != 200:
                continue
            label = str(child.index)
            for family in text_string_to_metric_families(answer[1]):
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                into.samples.extend(
                    Sample(s.name, {**s.labels, "process": label}, s.value, s.timestamp)
                    for s in family.samples
                )
        yield from merged.values()
        running = GaugeMetricFamily(
            "streamkit_processes",
            "Worker processes of this supervisor, by state.",
            labels=["state"],
        )
        children = self._view.children
        up = sum(1 for c in children if c.running())
        running.add_metric(["running"], up)
        running.add_metric(["restarting"], len(children) - up)
        yield running
        restarts = CounterMetricFamily(
            "streamkit_process_restarts",
            "Restarts of each worker process after it exited without being asked to.",
            labels=["process"],
        )
        for child in children:
            restarts.add_metric([str(child.index)], child.restarts)
        yield restarts
