"""The local state-store backends side by side, on the workload tables put on them.

Every phase of every backend runs in a fresh subprocess, one after the other,
so one's memory, page cache warm-up and background threads do not count
against the next (and the 2 cores are not shared between two backends):

* ``load``: (a) a restore-like bulk load of 1,000,000 keys (16-byte keys,
  30-byte values) in write() batches of 10,000; later (d) the same for
  5,000,000 keys, RSS sampled after every batch;
* ``work``: (b) checkpoint-like batches, up to 1,000 of 2,000 random updates
  over the 1,000,000 keys (p50/p99 per batch); (c) 200,000 random point
  gets, 90% hits; (e) the directory's size on disk;
* ``reopen``: a new process opens the 5,000,000-key store: time to open, RSS
  after opening and after 100,000 gets; for SQLite also what ``PRAGMA
  quick_check`` would add to every open.

Each timed phase stops at ``--cap`` seconds (30 by default), so the whole run
fits in about 8 minutes on 2 cores: uncapped, SQLite's and LMDB's random-order
loads of 5,000,000 keys alone took 399 s and 205 s here. A capped load is
completed by ``fill`` (another process, not measured) in key order, which a
b-tree takes in seconds, so the reopen phase always sees the full store.

Keys are a bijection of the index (multiplication by an odd constant mod
2**128), so they arrive in no useful order, as a changelog's do, and any
index can be turned back into its key for the gets. Values look like small
JSON documents, about as compressible as real ones.

Usage: python -m bench.state_stores [--backends rocksdb,sqlite,lmdb,memory]
       [--scale 0.1] [--cap 30] [--out bench/results/state_stores.md]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from streamkit.state.store import BACKENDS, open_store

_ODD = 0x9E3779B97F4A7C15F39CC0605CEDC835
_MASK = (1 << 128) - 1
MB = 1 << 20


def key(i: int) -> bytes:
    return ((i * _ODD) & _MASK).to_bytes(16, "big")


def value(i: int, version: int) -> bytes:
    return b'{"id":%9d,"v":%9d}' % (i, version)  # 30 bytes


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / MB


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def disk_mb(path: Path) -> float:
    """Allocated blocks, not apparent sizes: LMDB's and SQLite's files may be sparse."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file()) / MB


def load(path: Path, backend: str, n: int, cap: float, store: Any = None) -> dict[str, float]:
    """Write indexes 0..n-1 in batches of 10,000, in the keys' scrambled order, for ``cap`` s.

    The offset after each batch is the count written, so a later fill knows
    where this stopped. RSS is sampled after every batch (the process's
    peak would also count whatever the caller allocated).
    """
    own = store is None
    store = open_store(backend, path) if own else store
    samples, done = [rss_mb()], 0
    started = time.perf_counter()
    while done < n and time.perf_counter() - started < cap:
        stop = min(done + 10_000, n)
        store.write({key(i): value(i, 0) for i in range(done, stop)}, changelog_offset=stop)
        done = stop
        samples.append(rss_mb())
    elapsed = time.perf_counter() - started
    out = {"loaded": float(done), "load_s": elapsed, "keys_per_s": done / elapsed}
    out["rss_max_mb"] = max(samples)
    if own:
        started = time.perf_counter()
        store.close()
        out["close_s"] = time.perf_counter() - started
    return out


def child_load(backend: str, path: Path, n: int, cap: float) -> dict[str, float]:
    return load(path, backend, n, cap)


def child_fill(backend: str, path: Path, n: int, cap: float) -> dict[str, float]:
    """Write the indexes a capped load did not reach, sorted by key: not measured.

    Sorted, a b-tree's inserts touch each page once instead of once a key,
    so the rest of a 5,000,000-key store takes seconds, and the reopen
    measurements see the full store. Its own process, since the sorted list
    (hundreds of MB) would swell the measured processes' RSS.
    """
    store = open_store(backend, path)
    done = store.changelog_offset() or 0
    started = time.perf_counter()
    rest = sorted((key(i), value(i, 0)) for i in range(done, n))
    for start in range(0, len(rest), 10_000):
        store.write(dict(rest[start : start + 10_000]), changelog_offset=done + start + 10_000)
    store.write({}, changelog_offset=n)
    store.close()
    return {"fill_keys": float(n - done), "fill_s": time.perf_counter() - started}


def child_work(backend: str, path: Path, n: int, cap: float) -> dict[str, float]:
    """(b) update batches for ``cap`` s at most, then (c) gets, on the 1,000,000-key store."""
    rng = random.Random(1)
    store = open_store(backend, path)
    out: dict[str, float] = {"rss_start_mb": rss_mb()}
    if backend == "memory":  # nothing persists between processes: load here
        out |= {f"a_{k}": v for k, v in load(path, backend, n, cap, store).items()}
    batches, per_batch = 1_000, 2_000
    offset, times = n, []
    started = time.perf_counter()
    while len(times) < batches and time.perf_counter() - started < cap:
        # A dict, as a checkpoint's: a key updated twice in a batch is written once.
        updates = {key(i): value(i, len(times) + 1) for i in rng.choices(range(n), k=per_batch)}
        offset += per_batch
        t = time.perf_counter()
        store.write(updates, changelog_offset=offset)
        times.append(time.perf_counter() - t)
    out["update_batches"] = len(times)
    out["update_s"] = time.perf_counter() - started
    out["update_batch_p50_ms"] = statistics.median(times) * 1000
    out["update_batch_p99_ms"] = statistics.quantiles(times, n=100)[98] * 1000
    out["updates_per_s"] = len(times) * per_batch / sum(times)

    gets = 200_000
    # 90% hits; the misses are indexes past the loaded ones, so absent keys.
    wanted = [
        key(rng.randrange(n) if rng.random() < 0.9 else n + rng.randrange(n)) for _ in range(gets)
    ]
    started = time.perf_counter()
    hits = sum(store.get(k) is not None for k in wanted)
    out["get_s"] = time.perf_counter() - started
    out["gets_per_s"] = gets / out["get_s"]
    out["get_hit_ratio"] = hits / gets
    out["rss_end_mb"] = rss_mb()
    store.close()
    out["disk_1m_mb"] = disk_mb(path)
    out["peak_rss_work_mb"] = peak_rss_mb()
    return out


def child_reopen(backend: str, path: Path, n: int, cap: float) -> dict[str, float]:
    """Open the 5,000,000-key store in a new process, then 100,000 random gets."""
    out: dict[str, float] = {"disk_5m_mb": disk_mb(path), "rss_start_mb": rss_mb()}
    started = time.perf_counter()
    store = open_store(backend, path)
    out["reopen_s"] = time.perf_counter() - started
    out["reopen_rss_mb"] = rss_mb()
    assert store.changelog_offset() == n, store.changelog_offset()
    rng = random.Random(2)
    wanted = [key(rng.randrange(n)) for _ in range(100_000)]
    started = time.perf_counter()
    assert all(store.get(k) is not None for k in wanted)
    out["reopen_gets_per_s"] = len(wanted) / (time.perf_counter() - started)
    memory = psutil.Process().memory_info()
    out["reopen_rss_after_gets_mb"] = memory.rss / MB
    out["reopen_rss_shared_mb"] = memory.shared / MB  # file-backed pages: LMDB's mapping
    store.close()
    if backend == "sqlite":
        conn = sqlite3.connect(path / "store.sqlite")
        started = time.perf_counter()
        result = conn.execute("PRAGMA quick_check").fetchone()[0]
        out["sqlite_quick_check_s"] = time.perf_counter() - started
        assert result == "ok", result
        conn.close()
    out["peak_rss_reopen_mb"] = peak_rss_mb()
    return out


CHILDREN = {"load": child_load, "fill": child_fill, "work": child_work, "reopen": child_reopen}


def run_child(phase: str, backend: str, path: Path, n: int, cap: float) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.state_stores", "--child", phase, "--backends"]
    command += [backend, "--path", str(path), "--n", str(n), "--cap", str(cap)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{backend} {phase} failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_backend(backend: str, tmp: Path, scale: float, cap: float) -> dict[str, float]:
    """Every phase of one backend, each in its own process; keys are prefixed by phase."""
    small, big = int(1_000_000 * scale), int(5_000_000 * scale)
    out: dict[str, float] = {}
    if backend == "memory":
        out |= run_child("work", backend, tmp / "work", small, cap)
        out |= {f"d_{k}": v for k, v in run_child("load", backend, tmp, big, cap).items()}
        return out
    out |= {f"a_{k}": v for k, v in run_child("load", backend, tmp / "work", small, cap).items()}
    if out["a_loaded"] < small:
        out |= {
            f"a_{k}": v for k, v in run_child("fill", backend, tmp / "work", small, cap).items()
        }
    out |= run_child("work", backend, tmp / "work", small, cap)
    shutil.rmtree(tmp / "work")
    out |= {f"d_{k}": v for k, v in run_child("load", backend, tmp / "big", big, cap).items()}
    if out["d_loaded"] < big:
        out |= {f"d_{k}": v for k, v in run_child("fill", backend, tmp / "big", big, cap).items()}
    out |= run_child("reopen", backend, tmp / "big", big, cap)
    return out


# (label, result key, format, lower is better)
ROWS: list[tuple[str, str, str, bool]] = [
    ("(a) bulk load: keys/s, random order", "a_keys_per_s", "{:,.0f}", False),
    ("(a) keys loaded before the cap", "a_loaded", "{:,.0f}", False),
    ("(b) updates/s, 2,000-key batches", "updates_per_s", "{:,.0f}", False),
    ("(b) batches done before the cap (of 1,000)", "update_batches", "{:,.0f}", False),
    ("(b) batch p50, ms", "update_batch_p50_ms", "{:.1f}", True),
    ("(b) batch p99, ms", "update_batch_p99_ms", "{:.1f}", True),
    ("(c) gets/s, 200k, 90% hits, 1M keys", "gets_per_s", "{:,.0f}", False),
    ("(e) disk, 1M keys after (b), MB", "disk_1m_mb", "{:.1f}", True),
    ("peak RSS, process doing (b) and (c), MB", "peak_rss_work_mb", "{:.0f}", True),
    ("(d) load 5M: keys/s, random order", "d_keys_per_s", "{:,.0f}", False),
    ("(d) keys loaded before the cap", "d_loaded", "{:,.0f}", False),
    ("(d) max RSS while loading 5M, MB", "d_rss_max_mb", "{:.0f}", True),
    ("(d) close after the load, s", "d_close_s", "{:.2f}", True),
    ("(e) disk, 5M keys, MB", "disk_5m_mb", "{:.1f}", True),
    ("(d) reopen 5M, ms", "reopen_ms", "{:.1f}", True),
    ("(d) RSS after reopen, MB", "reopen_rss_mb", "{:.0f}", True),
    ("(d) gets/s after reopen, 100k, all hits", "reopen_gets_per_s", "{:,.0f}", False),
    ("(d) RSS after those gets, MB", "reopen_rss_after_gets_mb", "{:.0f}", True),
    ("(d) of which file-backed (mapped), MB", "reopen_rss_shared_mb", "{:.0f}", True),
    ("sqlite: PRAGMA quick_check on 5M, s", "sqlite_quick_check_s", "{:.2f}", True),
]


def table(results: dict[str, dict[str, float]]) -> str:
    names = list(results)
    disk = [b for b in names if b != "memory"]
    for result in results.values():
        if "reopen_s" in result:
            result["reopen_ms"] = result["reopen_s"] * 1000
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, field, fmt, lower in ROWS:
        values = {b: results[b][field] for b in names if field in results[b]}
        if not values:
            continue
        ranked = [values[b] for b in disk if b in values]
        best = (min(ranked) if lower else max(ranked)) if ranked else 0
        counts = "loaded" in field or "batches" in field  # no ratios for counts
        cells = []
        for b in names:
            if b not in values:
                cells.append("—")
                continue
            cell = fmt.format(values[b])
            if b != "memory" and best and len(ranked) > 1 and not counts:
                ratio = values[b] / best if lower else best / values[b]
                cell += " (best)" if ratio == 1 else f" ({ratio:.2f}x)"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def environment() -> str:
    versions = []
    for dist in ("rocksdict", "lmdb"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} missing")
    versions.append(f"SQLite {sqlite3.sqlite_version}")
    load_avg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Python {sys.version.split()[0]}, {', '.join(versions)}; load average {load_avg}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="rocksdb,sqlite,lmdb,memory")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the key counts")
    parser.add_argument("--cap", type=float, default=30.0, help="seconds per timed phase")
    parser.add_argument("--out", type=Path, help="also write the report (markdown) here")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.backends, args.path, args.n, args.cap)))
        return
    backends = args.backends.split(",")
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}; expected some of {BACKENDS}")
    started = time.perf_counter()
    before = environment()
    results: dict[str, dict[str, float]] = {}
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix=f"bench-{backend}-") as tmp:
            results[backend] = run_backend(backend, Path(tmp), args.scale, args.cap)
        print(f"{backend}: done at {time.perf_counter() - started:.0f} s", file=sys.stderr)
    report = "\n".join(
        [
            f"Local state stores: scale {args.scale:g}, cap {args.cap:g} s per timed phase",
            "",
            f"Before: {before}",
            f"After:  {environment()}",
            f"Wall time: {time.perf_counter() - started:.0f} s; each phase in a fresh subprocess.",
            "Ratios: to the best on-disk backend (memory is a reference, not ranked).",
            "A load that hit the cap was completed in key order, unmeasured (see fill).",
            "",
            table(results),
            "",
            "Raw (a_: the 1M load, d_: the 5M load, fill_: the unmeasured rest):",
            "",
            "```json",
            json.dumps(results, indent=1, sort_keys=True),
            "```",
        ]
    )
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
