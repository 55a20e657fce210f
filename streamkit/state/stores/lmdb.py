"""A store in an LMDB environment, one per directory (the ``lmdb`` extra).

Layout: two named databases, ``kv`` for user keys and ``meta`` for the format
marker and the changelog offset. User keys are not kept in LMDB's main
database because that one also lists the named databases' names, which
:meth:`LmdbStore.items` would then have to filter out. :meth:`LmdbStore.write`
is one write transaction.

Durability: ``sync=True, metasync=False``: every commit fsyncs the data pages
but not the meta page, so a power loss can undo the last commit (an older
offset with its older values) and never leaves a damaged file. LMDB's
``sync=False`` would be faster, but after an OS crash it can leave a file whose
pages are wrong, and LMDB has no checksums to notice: wrong data, silently.

Map size: 64 GiB of address space, reserved, not allocated (the file grows
with the data, the rest of the mapping is never touched); a write that still
finds it full doubles it and retries (``MapFullError``).

Memory: every page read through the mapping counts in the process's RSS
(file-backed, so the kernel may reclaim it, but RSS and a container's limit
see it): after 100,000 gets on 5,000,000 keys the bench read 519 MB, of which
497 MB mapped. This backend does not fit a 300 MB worker with such a table.

Limits: LMDB refuses keys longer than 511 bytes (``max_key_size``); such a
write raises ``ValueError`` naming the limit.

What is detected as :class:`~streamkit.state.store.StoreCorrupted`: meta pages
that are not LMDB's (random bytes, a truncated header: ``MDB_INVALID``), a
file truncated below the last page its meta names (checked before any page is
read, since reading a page past the end of the file through the mapping would
kill the process with SIGBUS), an empty file or a missing marker, and
``MDB_CORRUPTED``/``MDB_PAGE_NOTFOUND`` from reads. Not detected: damaged
bytes inside b-tree pages. LMDB 0.9 pages carry no checksum, so a flipped
byte in a stored value is returned as it is (seen by flipping one), and a
damaged branch page can crash the process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamkit.state.store import StoreCorrupted
from streamkit.state.stores import (
    FORMAT_KEY,
    FORMAT_VALUE,
    OFFSET_KEY,
    decode_offset,
    encode_offset,
    holds_files,
)

if TYPE_CHECKING:
    import lmdb

DATA_FILE = "data.mdb"
KV_DB = b"kv"
META_DB = b"meta"

# 64 GiB: far more than a table partition holds, and free while unused (a
# reserved range of a 47-bit address space, not memory or disk).
_MAP_SIZE = 64 << 30


def _lmdb() -> Any:
    try:
        import lmdb
    except ImportError as exc:
        raise ImportError("the lmdb state store needs lmdb: pip install 'streamkit[lmdb]'") from exc
    return lmdb


class LmdbStore:
    """The :class:`~streamkit.state.store.Store` contract over an LMDB environment.

    Args:
        path: The store's directory; created if missing.

    Raises:
        StoreCorrupted: The files there cannot be opened or read, or are not a store.
        ImportError: lmdb is not installed (names the ``lmdb`` extra).
    """

    def __init__(self, path: Path) -> None:
        self._lib = _lmdb()
        self._path = path
        self._offset: int | None = None
        self._closed = False
        existed = holds_files(path)
        path.mkdir(parents=True, exist_ok=True)
        error: type[Exception] = self._lib.Error
        try:
            self._env: lmdb.Environment = self._lib.open(
                str(path),
                map_size=_MAP_SIZE,
                max_dbs=2,
                sync=True,
                metasync=False,
                # Point reads are random: readahead would fill the page cache
                # (and the RSS of the mapping) with neighbours never asked for.
                readahead=False,
                # Pages are never written uninitialised to disk anyway here
                # (no writemap), so skip the memset.
                meminit=False,
            )
        except error as exc:
            if "already open" in str(exc):
                raise  # the store is open elsewhere: not damage, so not StoreCorrupted
            raise StoreCorrupted(f"lmdb store at {path} cannot be opened: {exc}") from exc
        try:
            self._check_size(existed)
            self._kv = self._env.open_db(KV_DB)
            self._meta = self._env.open_db(META_DB)
            self._load(existed)
        except BaseException as exc:
            self.close()
            if isinstance(exc, error):
                raise StoreCorrupted(f"lmdb store at {path} cannot be read: {exc}") from exc
            raise

    def _check_size(self, existed: bool) -> None:
        # The meta page names the last page in use; a shorter file was
        # truncated, and mapping past its end would raise SIGBUS, not an error.
        needed = (self._env.info()["last_pgno"] + 1) * self._env.stat()["psize"]
        size = os.path.getsize(self._path / DATA_FILE)
        if existed and size < needed:
            raise StoreCorrupted(
                f"lmdb store at {self._path}: {DATA_FILE} is {size} bytes, its meta needs {needed}"
            )

    def _load(self, existed: bool) -> None:
        with self._env.begin() as txn:
            marker = txn.get(FORMAT_KEY, db=self._meta)
            raw = txn.get(OFFSET_KEY, db=self._meta)
        if marker is None and not existed:
            self._commit(lambda txn: txn.put(FORMAT_KEY, FORMAT_VALUE, db=self._meta))
            return
        if marker != FORMAT_VALUE:
            raise StoreCorrupted(f"lmdb store at {self._path} has format {marker!r}")
        if raw is not None:
            try:
                self._offset = decode_offset(raw)
            except ValueError as exc:
                raise StoreCorrupted(f"lmdb store at {self._path}: {exc}") from exc

    def _commit(self, work: Any) -> None:
        """Run ``work(txn)`` in a write transaction; on a full map, double it and run it again."""
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    work(txn)
                return
            except self._lib.MapFullError:
                # The transaction was aborted by the context manager; nothing
                # else holds a transaction (one thread), so resizing is safe.
                self._env.set_mapsize(self._env.info()["map_size"] * 2)

    def get(self, key: bytes) -> bytes | None:
        """The stored value, or ``None`` if the key is absent."""
        try:
            with self._env.begin(db=self._kv) as txn:
                return txn.get(key)
        except (self._lib.CorruptedError, self._lib.PageNotFoundError) as exc:
            raise StoreCorrupted(f"lmdb store at {self._path}: {exc}") from exc

    def write(self, batch: Mapping[bytes, bytes | None], changelog_offset: int) -> None:
        """Apply puts, deletes and the offset in one write transaction.

        Raises:
            ValueError: A key is longer than LMDB's limit (511 bytes).
        """
        kv, meta = self._kv, self._meta
        puts = [(key, value) for key, value in batch.items() if value is not None]
        deletes = [key for key, value in batch.items() if value is None]

        def work(txn: lmdb.Transaction[bytes]) -> None:
            if puts:
                txn.cursor(db=kv).putmulti(puts)
            for key in deletes:
                txn.delete(key, db=kv)
            txn.put(OFFSET_KEY, encode_offset(changelog_offset), db=meta)

        try:
            self._commit(work)
        except self._lib.BadValsizeError as exc:
            limit = self._env.max_key_size()
            raise ValueError(f"lmdb store: a key is longer than {limit} bytes ({exc})") from exc
        self._offset = changelog_offset

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every user key and value, in key order, from one read transaction."""
        try:
            with self._env.begin(db=self._kv) as txn:
                yield from txn.cursor()
        except (self._lib.CorruptedError, self._lib.PageNotFoundError) as exc:
            raise StoreCorrupted(f"lmdb store at {self._path}: {exc}") from exc

    def changelog_offset(self) -> int | None:
        """The offset of the last write, read from the ``meta`` database at open."""
        return self._offset

    def close(self) -> None:
        """Close the environment (its lock slot and mapping); later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        env = getattr(self, "_env", None)
        if env is not None:
            env.close()
