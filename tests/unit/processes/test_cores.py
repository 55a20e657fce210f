"""``usable_cores``: the affinity mask and the cgroup quota, whichever is smaller."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streamkit.processes.cores import cgroup_cpu_limit, usable_cores


def _pinned() -> int:
    return len(os.sched_getaffinity(0))


def test_no_cgroup_means_the_cpus_this_process_is_pinned_to(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path) is None
    assert usable_cores(tmp_path) == _pinned()


def test_an_unlimited_v2_quota_is_no_limit(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None


@pytest.mark.parametrize(("quota", "cores"), [("50000 100000", 1), ("150000 100000", 2)])
def test_a_v2_quota_rounds_up_and_never_exceeds_the_pinned_cpus(
    tmp_path: Path, quota: str, cores: int
) -> None:
    (tmp_path / "cpu.max").write_text(quota + "\n")
    assert usable_cores(tmp_path) == min(cores, _pinned())


def test_a_v1_quota_counts_and_minus_one_means_none(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.0
    assert usable_cores(tmp_path) == 1
