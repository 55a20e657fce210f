"""The local store: one per table partition, bytes to bytes, on disk or in memory.

A store holds the values the checkpoint has persisted (step 4 of the
checkpoint order in :mod:`streamkit.runtime.checkpoint`) and the changelog
offset they reflect, written in the same atomic batch, so a store is never
ahead of or behind its own offset: after a crash the worker replays the
changelog from exactly that offset (a warm restart restores only the tail).

Everything a store does is decided by that contract:

* :meth:`Store.write` applies puts and deletes *and* the new changelog offset
  atomically (one RocksDB write batch, one SQLite transaction, one LMDB txn);
* :meth:`Store.changelog_offset` is the offset after the last changelog
  record the store reflects (``None``: a new, empty store);
* a store whose files cannot be read raises :class:`StoreCorrupted` from
  :func:`open_store`, and the caller rebuilds it from the changelog.

Stores are used from one thread at a time (the worker's event loop, or the
restore thread while the partition is not yet processing).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

from streamkit.errors import StoreCorrupted

__all__ = ["BACKENDS", "Store", "StoreCorrupted", "open_store"]

# The backends by name, as the state_store setting spells them.
BACKENDS = ("rocksdb", "sqlite", "lmdb", "memory")


class Store(Protocol):
    """One table partition's local values, and the changelog offset they reflect."""

    def get(self, key: bytes) -> bytes | None:
        """The stored value, or ``None`` if the key is absent."""

    def write(self, batch: Mapping[bytes, bytes | None], changelog_offset: int) -> None:
        """Put (a value) or delete (``None``) each key in ``batch``, set the offset: atomically."""

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every stored key and value (any order); the store must not change meanwhile."""

    def changelog_offset(self) -> int | None:
        """The offset after the last changelog record reflected here; ``None`` if never written."""

    def close(self) -> None:
        """Release files and locks; idempotent."""


def open_store(backend: str, path: Path) -> Store:
    """Open (or create) the store at ``path`` (a directory) with the named backend.

    Each backend's module is imported here, on first use, so the optional
    libraries (rocksdict, lmdb) are needed only by the apps that choose them.
    What each backend detects as corruption is listed in its module
    (:mod:`streamkit.state.stores.sqlite`, ``.rocksdb``, ``.lmdb``); a
    directory that holds files but is not a store counts as corrupted too,
    rather than being opened as a new, empty one.

    Raises:
        StoreCorrupted: The files there cannot be opened or read.
        ImportError: The backend's optional dependency is missing; names the extra.
        ValueError: ``backend`` is not one of :data:`BACKENDS`.
    """
    if backend == "rocksdb":
        from streamkit.state.stores.rocksdb import RocksDBStore

        return RocksDBStore(path)
    if backend == "sqlite":
        from streamkit.state.stores.sqlite import SqliteStore

        return SqliteStore(path)
    if backend == "lmdb":
        from streamkit.state.stores.lmdb import LmdbStore

        return LmdbStore(path)
    if backend == "memory":
        from streamkit.state.stores.memory import MemoryStore

        return MemoryStore(path)
    raise ValueError(f"unknown state store backend {backend!r}; expected one of {BACKENDS}")
