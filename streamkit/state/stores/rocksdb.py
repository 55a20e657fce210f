"""A store in a RocksDB directory, through rocksdict (the ``rocksdb`` extra).

Layout: user keys in the default column family, the format marker and the
changelog offset in a column family of their own, ``meta``, so no user key
can collide with them and :meth:`RocksDBStore.items` sees user keys only.
:meth:`RocksDBStore.write` is one ``WriteBatch`` over both families: RocksDB
applies a batch atomically across column families (one WAL record).

Durability: the WAL is written but not fsynced per batch (RocksDB's default),
so a power loss can drop the last batches; recovery stops at the last intact
WAL record (point-in-time recovery), which leaves an older offset with its
older values, never a torn batch. The changelog replays the rest.

Memory: a table of 5,000,000 keys must keep the worker under 300 MB, so the
buffers are bounded instead of RocksDB's defaults (64 MiB memtables, two of
them, per column family):

* memtables: 16 MiB, at most 2 per store (32 MiB); ``meta`` 1 MiB; and
  32 MiB for all the stores of the process together (a write buffer manager);
* block cache: 32 MiB for the whole process, shared by every store;
* index and bloom-filter blocks: held by the open SST files, outside the
  cache, about 1.6 bytes a key (10 filter bits and the index), 8 MB for
  5,000,000 keys. Charging them to the 32 MiB cache instead made every get
  evict and reread them (megabytes per SST): 1,479 gets/s after reopening
  5,000,000 keys, against 53,928 with them outside (bench/README.md).

What is detected as :class:`~streamkit.state.store.StoreCorrupted`, with
``paranoid_checks`` on: a damaged or empty ``CURRENT`` or ``MANIFEST``
(open fails), SST files that are missing, truncated, or whose footer or
index is damaged (every SST is opened at open, ``max_open_files=-1``, and
its size checked against the manifest), and a directory without the format
marker. Data blocks carry checksums, checked when read, so a damaged block (one
flipped byte in a stored value: see the tests) raises ``StoreCorrupted`` from
:meth:`RocksDBStore.get` or :meth:`RocksDBStore.items`, never a wrong
value. A damaged WAL tail is dropped silently (see durability above).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from streamkit.state.store import StoreCorrupted
from streamkit.state.stores import (
    FORMAT_KEY,
    FORMAT_VALUE,
    OFFSET_KEY,
    decode_offset,
    encode_offset,
    holds_files,
)

META_FAMILY = "meta"

_MIB = 1 << 20
_WRITE_BUFFER = 16 * _MIB
_WRITE_BUFFERS = 2
_META_WRITE_BUFFER = 1 * _MIB
_BLOCK_CACHE = 32 * _MIB
# 10 bits per key: about 1% false positives, so a get for an absent key
# reads no data block 99 times in 100 (the bench's 10% misses).
_BLOOM_BITS = 10.0

# One block cache per process, made at the first open (the library is only
# imported then). A Cache must outlive every DB that uses it; this one lives
# as long as the module.
_shared_cache: Any = None
# Memtables of every store of the process together: a worker owning twelve
# partitions of two tables would otherwise allow 24 x 32 MiB. Past this,
# RocksDB flushes the largest memtables early (smaller SST files, same data).
_ALL_WRITE_BUFFERS = 32 * _MIB
_shared_buffers: Any = None


def _rocksdict() -> Any:
    try:
        import rocksdict
    except ImportError as exc:
        raise ImportError(
            "the rocksdb state store needs rocksdict, a dependency of streamkit: "
            "pip install 'streamkit[rocksdb]' (or reinstall streamkit)"
        ) from exc
    return rocksdict


def _options(rd: Any, write_buffer: int) -> Any:
    global _shared_cache, _shared_buffers
    if _shared_cache is None:
        _shared_cache = rd.Cache(_BLOCK_CACHE)
        _shared_buffers = rd.WriteBufferManager(_ALL_WRITE_BUFFERS, False)
    table = rd.BlockBasedOptions()
    table.set_block_cache(_shared_cache)
    table.set_bloom_filter(_BLOOM_BITS, False)
    options = rd.Options(raw_mode=True)
    options.set_block_based_table_factory(table)
    options.set_write_buffer_size(write_buffer)
    options.set_max_write_buffer_number(_WRITE_BUFFERS)
    options.set_write_buffer_manager(_shared_buffers)
    return options


def _is_corruption(exc: Exception) -> bool:
    # rocksdict raises plain Exception with RocksDB's status text; the status
    # codes that mean "the files are bad" start these messages.
    text = str(exc)
    return text.startswith(("Corruption", "Invalid argument", "IO error: No such file"))


def _is_locked(exc: Exception) -> bool:
    # "IO error: lock hold by current process ... /LOCK: No locks available",
    # or "IO error: While lock file: .../LOCK: Resource temporarily unavailable".
    text = str(exc)
    return text.startswith("IO error") and "/LOCK" in text


class RocksDBStore:
    """The :class:`~streamkit.state.store.Store` contract over a RocksDB directory.

    Args:
        path: The store's directory; created if missing.

    Raises:
        StoreCorrupted: The files there cannot be opened or read, or are not a store.
        ImportError: rocksdict is not installed (names the ``rocksdb`` extra).
    """

    def __init__(self, path: Path) -> None:
        rd = _rocksdict()
        self._rd = rd
        self._path = path
        self._offset: int | None = None
        self._closed = False
        existed = holds_files(path)
        path.mkdir(parents=True, exist_ok=True)
        options = _options(rd, _WRITE_BUFFER)
        options.create_if_missing(True)
        options.create_missing_column_families(True)
        options.set_paranoid_checks(True)
        # Both families flush together, in one manifest record: the offset in
        # "meta" is never persisted ahead of (or behind) the values it covers,
        # even if a damaged manifest is read only up to some record.
        options.set_atomic_flush(True)
        # RocksDB's info LOG: one file of at most 1 MiB and one old one, not
        # its default of 1,000 kept files per directory.
        options.set_max_log_file_size(_MIB)
        options.set_keep_log_file_num(2)
        families = {META_FAMILY: _options(rd, _META_WRITE_BUFFER)}
        try:
            self._db: Any = rd.Rdict(str(path), options, column_families=families)
        except Exception as exc:
            if _is_locked(exc):
                raise  # the store is open elsewhere: not damage, so not StoreCorrupted
            raise StoreCorrupted(f"rocksdb store at {path} cannot be opened: {exc}") from exc
        try:
            self._meta: Any = self._db.get_column_family(META_FAMILY)
            self._meta_handle: Any = self._db.get_column_family_handle(META_FAMILY)
            self._load(existed)
        except BaseException as exc:
            self.close()
            if isinstance(exc, Exception) and not isinstance(exc, StoreCorrupted):
                raise StoreCorrupted(f"rocksdb store at {path} cannot be read: {exc}") from exc
            raise

    def _load(self, existed: bool) -> None:
        marker = self._meta.get(FORMAT_KEY)
        if marker is None and not existed:
            batch = self._rd.WriteBatch(raw_mode=True)
            batch.put(FORMAT_KEY, FORMAT_VALUE, self._meta_handle)
            self._db.write(batch)
            return
        if marker != FORMAT_VALUE:
            raise StoreCorrupted(f"rocksdb store at {self._path} has format {marker!r}")
        raw = self._meta.get(OFFSET_KEY)
        if raw is not None:
            try:
                self._offset = decode_offset(raw)
            except ValueError as exc:
                raise StoreCorrupted(f"rocksdb store at {self._path}: {exc}") from exc

    def get(self, key: bytes) -> bytes | None:
        """The stored value, or ``None`` if the key is absent."""
        try:
            value: bytes | None = self._db.get(key)
        except Exception as exc:
            if _is_corruption(exc):
                raise StoreCorrupted(f"rocksdb store at {self._path}: {exc}") from exc
            raise
        return value

    def write(self, batch: Mapping[bytes, bytes | None], changelog_offset: int) -> None:
        """Apply puts, deletes and the offset in one ``WriteBatch``."""
        wb = self._rd.WriteBatch(raw_mode=True)
        for key, value in batch.items():
            if value is None:
                wb.delete(key)
            else:
                wb.put(key, value)
        wb.put(OFFSET_KEY, encode_offset(changelog_offset), self._meta_handle)
        self._db.write(wb)
        self._offset = changelog_offset

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every user key and value (the default family only), in key order."""
        try:
            yield from self._db.items()
        except Exception as exc:
            if _is_corruption(exc):
                raise StoreCorrupted(f"rocksdb store at {self._path}: {exc}") from exc
            raise

    def changelog_offset(self) -> int | None:
        """The offset of the last write, read from the ``meta`` family at open."""
        return self._offset

    def close(self) -> None:
        """Flush the memtables to SST files and close; later calls do nothing.

        The flush makes the next open quick: there is no WAL left to replay.
        """
        if self._closed:
            return
        self._closed = True
        # Every column-family handle keeps the DB alive: drop them first.
        self._meta_handle = None
        meta, self._meta = getattr(self, "_meta", None), None
        if meta is not None:
            meta.close()
        self._db.close()
