"""``python -m bench.tables_timing run MODULE:APP``: the streamkit CLI, restore steps timed.

A diagnostic for ``bench.tables`` (``BENCH_TABLES_TIMING=1`` runs an extra,
unmeasured cold and warm restore through it). Streamkit is not changed: the
changelog reader's calls, the store's open and writes, and the restore's
bookkeeping are wrapped here before the CLI starts, and each call is logged
as a ``restore step`` line (JSON, like the worker's own log) with its
duration in ms. With ``BENCH_CPROFILE=<path>``, the restore thread also runs
under cProfile, dumped to ``<path>`` when the worker stops; with
``BENCH_CPROFILE_MAIN=<path>``, the main thread (the event loop: agents,
table reads and writes, checkpoints) does. ``BENCH_READER_BUFFER_KB=<n>``
cuts the restore reader's ``queued.max.messages.kbytes``, ``fetch.max.bytes``
and ``max.partition.fetch.bytes`` to n KiB (streamkit's: 64 MiB, 64 MiB,
16 MiB), to see what they cost in RSS.
"""

from __future__ import annotations

import atexit
import cProfile
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import structlog

from streamkit.backends import kafka_reader
from streamkit.state import restore, store

log = structlog.get_logger("bench.timing")


def timed(
    owner: Any, name: str, label: str, detail: Callable[..., dict[str, Any]] | None = None
) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            extra = detail(*args, **kwargs) if detail else {}
            log.info(
                "restore step", step=label, ms=round((time.perf_counter() - t0) * 1000, 2), **extra
            )

    setattr(owner, name, wrapper)


def timed_read(owner: Any) -> None:
    """The reader's batches: the time each one took to arrive, and its size."""
    original = owner.read

    @functools.wraps(original)
    def read(self: Any, topic: str, partition: int, start: int, end: int) -> Any:
        t0 = time.perf_counter()
        last = t0
        for batch in original(self, topic, partition, start, end):
            now = time.perf_counter()
            log.info(
                "restore step",
                step="read batch",
                partition=partition,
                records=len(batch),
                ms=round((now - last) * 1000, 2),
            )
            yield batch
            last = time.perf_counter()
        log.info(
            "restore step",
            step="read until end (after last batch)",
            partition=partition,
            ms=round((time.perf_counter() - last) * 1000, 2),
            total_ms=round((time.perf_counter() - t0) * 1000, 2),
        )

    owner.read = read


def smaller_reader_buffers(kib: int) -> None:
    """The restore reader's fetch and queue buffers cut to ``kib`` KiB (a what-if)."""
    original = kafka_reader.Consumer

    def consumer(conf: dict[str, Any]) -> Any:
        conf = {
            **conf,
            "queued.max.messages.kbytes": kib,
            "fetch.max.bytes": kib * 1024,
            "max.partition.fetch.bytes": kib * 1024,
        }
        return original(conf)

    kafka_reader.Consumer = consumer  # type: ignore[misc]


def install() -> None:
    kib = os.environ.get("BENCH_READER_BUFFER_KB")
    if kib:
        smaller_reader_buffers(int(kib))
    reader = kafka_reader.KafkaChangelogReader
    timed(reader, "__init__", "reader: new consumer")
    timed(reader, "bounds", "reader.bounds (watermarks)", lambda s, t, p: {"partition": p})
    timed(reader, "committed", "reader.committed (group offset)", lambda s, t, p: {"partition": p})
    timed(reader, "partitions", "reader.partitions (metadata)", lambda s, t: {"topic": t})
    timed_read(reader)
    original_open = store.open_store

    def open_store(backend: str, path: Any) -> Any:
        t0 = time.perf_counter()
        opened = original_open(backend, path)
        log.info(
            "restore step",
            step=f"open_store {backend}",
            ms=round((time.perf_counter() - t0) * 1000, 2),
        )
        original_write = opened.write

        def write(batch: Any, changelog_offset: int) -> None:
            t1 = time.perf_counter()
            original_write(batch, changelog_offset)
            log.info(
                "restore step",
                step="store.write",
                records=len(batch),
                ms=round((time.perf_counter() - t1) * 1000, 2),
            )

        opened.write = write
        return opened

    restore.open_store = open_store  # the name restore.py imported
    timed(restore.Restorer, "_restore", "Restorer._restore (one slice, all of it)")
    timed(restore.Restorer, "_open", "Restorer._open (lock + open)")
    profile_path = os.environ.get("BENCH_CPROFILE")
    if profile_path:
        original_run = restore.Restorer._run
        profiler = cProfile.Profile()

        def run(self: Any) -> None:
            profiler.enable()
            try:
                original_run(self)
            finally:
                profiler.disable()

        restore.Restorer._run = run  # type: ignore[method-assign]
        atexit.register(lambda: profiler.dump_stats(profile_path))


if __name__ == "__main__":
    install()
    from streamkit.cli import main

    main_profile = os.environ.get("BENCH_CPROFILE_MAIN")
    if not main_profile:
        main()
    else:
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            main()
        finally:
            profiler.disable()
            profiler.dump_stats(main_profile)
