"""How many cores this process may use: what ``processes="auto"`` means.

``os.cpu_count()`` is the machine's count, which in a container is the
node's (64 on a node where the pod's limit is 2). What the process may use
is the smaller of the CPUs it is pinned to (``sched_getaffinity``: cpusets,
``taskset``) and its cgroup's CPU quota (``cpu.max`` in cgroup v2, the CFS
quota in v1: a Kubernetes CPU limit), rounded up, since a quota of 1.5 cores
still lets two processes each use most of a core.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP = Path("/sys/fs/cgroup")


def usable_cores(cgroup: Path = _CGROUP) -> int:
    """The cores this process may use; at least 1."""
    try:
        pinned = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        pinned = os.cpu_count() or 1
    quota = cgroup_cpu_limit(cgroup)
    if quota is not None:
        pinned = min(pinned, math.ceil(quota))
    return max(pinned, 1)


def cgroup_cpu_limit(cgroup: Path = _CGROUP) -> float | None:
    """The CPU quota in cores, or ``None`` when there is none (or no cgroup to read)."""
    v2 = cgroup / "cpu.max"  # "max 100000" or "150000 100000"
    try:
        quota, period = v2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
