"""Restoring table partitions from their changelogs, on a thread of their own.

When a worker is assigned a partition of an agent with tables, the partition
does not process anything until each of its table slices is restored: the
local store is opened (a corrupted one is deleted and rebuilt, with a
warning), and the changelog is read from the store's own changelog offset to
the changelog's end. A warm restart, with the same state directory, reads
only the tail written since the store was last persisted; a store whose
offset is outside the changelog (the topic was recreated, or compaction and
retention moved its start) is rebuilt from the changelog's start.

Restores run one at a time on the restore thread, so the worker's event loop
and its other partitions keep going, and the fetcher keeps polling (a
restoring partition's records wait in its buffer, which pauses the partition
when full). Progress (records read, rate, estimated time left) is logged
every few seconds, and kept in :attr:`Restorer.progress` for ``/metrics`` and
``/readyz``.

At least once, records whose ``streamkit-src`` header is at or past the
group's committed offset of the source partition are skipped
(:mod:`streamkit.state.changelog`): their inputs are processed again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog
from confluent_kafka import KafkaError, KafkaException

from streamkit.errors import DeclarationError, StoreCorrupted
from streamkit.state.changelog import EXPIRES_HEADER, SOURCE_HEADER, unpack_offset
from streamkit.state.partition import stored
from streamkit.state.store import Store, open_store

log = structlog.get_logger("streamkit.state")

# Records per store write while restoring: big enough that the write cost
# per record is small, small enough to keep the batch's memory in check.
_RESTORE_BATCH = 20_000
_PROGRESS_EVERY_S = 2.0
# How long a partition waits for another process to let go of its store
# directory (a revoke closes it within a rebalance) before it restores into
# a private copy instead of fighting for the lock.
_LOCK_WAIT_S = 10.0
# Between two tries of a restore the broker could not serve (a leader moving,
# a broker restarting).
_RETRY_S = 1.0
# How long a source's checked partition count is trusted (see Restorer._checked).
_METADATA_TTL_S = 10.0

Record = tuple[int, bytes | None, bytes | None, Any]  # offset, key, value, headers


class ChangelogReader(Protocol):
    """How a restore reads a changelog (one per restore thread)."""

    def bounds(self, topic: str, partition: int) -> tuple[int, int]:
        """``(low, high)``: the first offset and the end (``read_committed``: the stable end)."""

    def committed(self, topic: str, partition: int) -> int | None:
        """The group's committed offset of a *source* partition, if any."""

    def partitions(self, topic: str) -> int | None:
        """The topic's partition count (``None``: no such topic)."""

    def read(self, topic: str, partition: int, start: int, end: int) -> Iterator[list[Record]]:
        """Batches of records from ``start`` until the position reaches ``end``."""

    def close(self) -> None:
        """Release the client."""


@dataclass
class Progress:
    """One restore, as ``/metrics`` and ``/readyz`` see it."""

    table: str
    partition: int
    total: int
    done: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    source: str = "changelog"  # or "local store + tail", "rebuild"

    @property
    def remaining(self) -> int:
        """Records left to read."""
        return max(self.total - self.done, 0)

    def rate(self) -> float:
        """Records per second so far."""
        spent = (self.finished or time.monotonic()) - self.started
        return self.done / spent if spent > 0 else 0.0


@dataclass
class RestoreJob:
    """Restore the slices of one source partition, then call ``ready`` (restore thread)."""

    topic: str
    partition: int
    slices: list[SliceSpec]
    ready: Callable[[list[Store], int], None]
    failed: Callable[[BaseException], None]
    cancelled: bool = False
    # Windows: read the group's committed offset of the source partition
    # once restored (where an idle tick is accounted before any record).
    origin: bool = False
    committed: int | None = None


@dataclass(frozen=True)
class SliceSpec:
    """What restoring one table slice needs."""

    table: str
    changelog: str
    path: Path | None  # None: the memory store
    ttl: bool


class Restorer:
    """The restore thread of one worker.

    Args:
        reader: Opens the changelog reader (on the restore thread).
        backend: The store backend (``state_store``).
        skip_uncommitted: At least once: skip changelog records whose inputs
            were not committed. ``None`` when nothing was committed means
            "skip them all" only if the group starts from the earliest offset.
        earliest: ``auto_offset_reset`` is ``earliest``.
    """

    def __init__(
        self,
        reader: Callable[[], ChangelogReader],
        backend: str,
        skip_uncommitted: bool,
        earliest: bool,
    ) -> None:
        self._open_reader = reader
        self._backend = backend
        self._skip = skip_uncommitted
        self._earliest = earliest
        self._jobs: queue.Queue[RestoreJob | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._locks: dict[Path, Any] = {}
        self._locks_guard = threading.Lock()
        # table, partition -> the latest restore (read by /metrics, /readyz).
        self.progress: dict[tuple[str, int], Progress] = {}
        self.restored = 0  # records applied, all restores
        self._partitions: dict[str, tuple[int, float]] = {}  # source -> (count, valid until)

    def submit(self, job: RestoreJob) -> None:
        """Queue a restore (any thread)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="streamkit-restore", daemon=True)
            self._thread.start()
        self._jobs.put(job)

    def restoring(self) -> list[Progress]:
        """Restores not finished yet."""
        return [p for p in list(self.progress.values()) if p.finished is None]

    def stop(self) -> None:
        """End the thread after the job it runs (any thread)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=10)

    def _run(self) -> None:
        reader: ChangelogReader | None = None
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                if job.cancelled:
                    continue
                if reader is None:
                    try:
                        reader = self._open_reader()
                    except BaseException as exc:
                        job.failed(exc)
                        continue
                self._run_job(reader, job)
        finally:
            if reader is not None:
                reader.close()

    def _run_job(self, reader: ChangelogReader, job: RestoreJob) -> None:
        """Restore every slice of ``job``; broker trouble is waited out, from the start again."""
        warned = False
        while not job.cancelled:
            stores: list[Store] = []
            try:
                partitions = self._checked(reader, job)
                for spec in job.slices:
                    stores.append(self._restore(reader, job, spec, stores))
            except KafkaException as exc:
                for store in stores:
                    store.close()
                for spec in job.slices:
                    self.unlock(spec.path)
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.fatal():
                    job.failed(exc)
                    return
                if not warned:
                    warned = True  # once per restore: an outage would repeat it every second
                    log.warning(
                        "restore waits for the broker; trying again",
                        topic=job.topic,
                        partition=job.partition,
                        error=str(exc),
                    )
                time.sleep(_RETRY_S)
                continue
            except BaseException as exc:
                for store in stores:
                    store.close()
                job.failed(exc)
                return
            if job.cancelled:
                for store in stores:
                    store.close()
                return
            if job.origin:
                try:
                    job.committed = reader.committed(job.topic, job.partition)
                except KafkaException:
                    job.committed = None  # ticks then wait for the partition's first record
            job.ready(stores, partitions)
            return

    def _checked(self, reader: ChangelogReader, job: RestoreJob) -> int:
        """:func:`_check_partitions`, once per source topic and burst of assignments.

        An assignment of many partitions queues a job each; metadata once for
        all of them saves two requests per partition (about 80 ms each on a
        loaded broker, most of a warm restart's time).
        """
        now = time.monotonic()
        cached = self._partitions.get(job.topic)
        if cached is not None and cached[1] > now:
            return cached[0]
        partitions = _check_partitions(reader, job)
        self._partitions[job.topic] = (partitions, now + _METADATA_TTL_S)
        return partitions

    # -- one slice -----------------------------------------------------------

    def _restore(
        self, reader: ChangelogReader, job: RestoreJob, spec: SliceSpec, opened: list[Store]
    ) -> Store:
        store, source = self._open(spec)
        opened.append(store)  # closed by the caller if anything below fails
        low, high = reader.bounds(spec.changelog, job.partition)
        at = store.changelog_offset()
        if at is not None and not low <= at <= high:
            log.warning(
                "local store is outside the changelog; rebuilding it from the changelog's start",
                table=spec.table,
                partition=job.partition,
                store_offset=at,
                changelog=f"{low}-{high}",
            )
            opened.remove(store)
            store = self._wipe(store, spec)
            opened.append(store)
            at, source = None, "rebuild"
        start = low if at is None else at
        progress = Progress(spec.table, job.partition, max(high - start, 0), source=source)
        self.progress[(spec.table, job.partition)] = progress
        threshold: int | None = None
        if self._skip:
            committed = reader.committed(job.topic, job.partition)
            threshold = committed if committed is not None else (0 if self._earliest else None)
        if start < high:
            self._apply(reader, job, spec, store, start, high, threshold, progress)
        else:
            store.write({}, high)
        progress.finished = time.monotonic()
        opened.remove(store)
        log.info(
            "table partition restored",
            table=spec.table,
            partition=job.partition,
            records=progress.done,
            skipped_uncommitted=progress.skipped,
            seconds=round(progress.finished - progress.started, 3),
            source=progress.source,
        )
        return store

    def _apply(
        self,
        reader: ChangelogReader,
        job: RestoreJob,
        spec: SliceSpec,
        store: Store,
        start: int,
        high: int,
        threshold: int | None,
        progress: Progress,
    ) -> None:
        batch: dict[bytes, bytes | None] = {}
        next_log = time.monotonic() + _PROGRESS_EVERY_S
        last = start - 1
        for records in reader.read(spec.changelog, job.partition, start, high):
            if job.cancelled:
                return
            for offset, key, value, headers in records:
                last = offset
                if key is None:
                    continue
                expires = 0
                if headers:
                    skip = False
                    for name, raw in headers:
                        if name == SOURCE_HEADER and threshold is not None:
                            skip = unpack_offset(raw) >= threshold
                        elif name == EXPIRES_HEADER:
                            expires = unpack_offset(raw)
                    if skip:
                        progress.skipped += 1
                        continue
                batch[key] = stored(value, expires) if spec.ttl else value
            progress.done = last + 1 - start
            if len(batch) >= _RESTORE_BATCH:
                store.write(batch, last + 1)
                self.restored += len(batch)
                batch = {}
            now = time.monotonic()
            if now >= next_log:
                next_log = now + _PROGRESS_EVERY_S
                rate = progress.rate()
                log.info(
                    "restoring table partition",
                    table=spec.table,
                    partition=job.partition,
                    records=progress.done,
                    of=progress.total,
                    per_s=round(rate),
                    eta_s=round(progress.remaining / rate, 1) if rate else None,
                )
        self.restored += len(batch)
        store.write(batch, max(high, last + 1))
        progress.done = progress.total

    # -- local stores ---------------------------------------------------------

    def _open(self, spec: SliceSpec) -> tuple[Store, str]:
        if spec.path is None:
            return open_store("memory", Path(".")), "changelog"
        path = self._lock(spec.path)
        try:
            store = open_store(self._backend, path)
            warm = store.changelog_offset() is not None
            return store, "local store + tail" if warm else "changelog"
        except StoreCorrupted as exc:
            log.warning(
                "local store is corrupted; deleting it and rebuilding from the changelog",
                table=spec.table,
                path=str(path),
                error=str(exc),
            )
            shutil.rmtree(path, ignore_errors=True)
            return open_store(self._backend, path), "rebuild"

    def _wipe(self, store: Store, spec: SliceSpec) -> Store:
        store.close()
        if spec.path is None:
            return open_store("memory", Path("."))
        path = self._held_path(spec.path)
        shutil.rmtree(path, ignore_errors=True)
        return open_store(self._backend, path)

    def _lock(self, path: Path) -> Path:
        """Lock ``path`` for this process; a private copy if another one keeps it locked."""
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = path.parent / f"{path.name}.lock"
        handle = open(lock_file, "a+")  # noqa: SIM115 - held until the store closes
        deadline = time.monotonic() + _LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.close()
                    private = path.parent / f"{path.name}.{os.getpid()}-{threading.get_ident()}"
                    log.warning(
                        "store directory is locked by another process; restoring a private copy",
                        path=str(path),
                        private=str(private),
                    )
                    shutil.rmtree(private, ignore_errors=True)
                    with self._locks_guard:
                        self._locks[private] = None
                    return private
                time.sleep(0.05)
        with self._locks_guard:
            self._locks[path] = handle
        return path

    def _held_path(self, path: Path) -> Path:
        with self._locks_guard:
            for held in self._locks:
                if held == path or held.name.startswith(f"{path.name}."):
                    return held
        return path

    def unlock(self, path: Path | None) -> None:
        """Let go of a store directory's lock once its store is closed (any thread)."""
        if path is None:
            return
        with self._locks_guard:
            for held in [p for p in self._locks if p == path or p.name.startswith(f"{path.name}.")]:
                handle = self._locks.pop(held)
                if handle is None:
                    shutil.rmtree(held, ignore_errors=True)  # a private copy: nobody reuses it
                else:
                    with contextlib.suppress(OSError):
                        fcntl.flock(handle, fcntl.LOCK_UN)
                    handle.close()


def _check_partitions(reader: ChangelogReader, job: RestoreJob) -> int:
    """The source's partition count; each changelog must have the same.

    Raises:
        DeclarationError: A changelog is missing, or has another count.
    """
    partitions = reader.partitions(job.topic)
    if partitions is None:
        raise DeclarationError(f"source topic {job.topic} does not exist")
    for spec in job.slices:
        found = reader.partitions(spec.changelog)
        if found is None:
            raise DeclarationError(
                f"table {spec.table}: changelog topic {spec.changelog} does not exist; "
                "create it with `streamkit topics create` (or create_topics=True)"
            )
        if found != partitions:
            raise DeclarationError(
                f"table {spec.table}: changelog {spec.changelog} has {found} partitions and "
                f"its source {job.topic} {partitions}; they must be equal (delete the "
                "changelog and let streamkit create it: the table starts empty)"
            )
    return partitions
