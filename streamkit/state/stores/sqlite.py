"""A store in one SQLite file, ``store.sqlite``, with nothing beyond the standard library.

Layout: ``kv(key BLOB PRIMARY KEY, value BLOB) WITHOUT ROWID`` (the key *is*
the b-tree key, so a row is stored once, not in a rowid table plus an index)
and ``meta(name BLOB PRIMARY KEY, value BLOB) WITHOUT ROWID`` for the format
marker and the changelog offset. :meth:`SqliteStore.write` is one transaction,
so the values and the offset commit together.

Durability: WAL with ``synchronous=NORMAL``. A commit is not fsynced (the WAL
is, at each checkpoint), so a power loss can drop the last commits but never
tears one: the store rolls back to an older offset *with* its older values,
and the changelog replays the rest. A process crash loses nothing. That is all
the contract asks, since the changelog is committed before the store is
written (step 5 of :mod:`streamkit.runtime.checkpoint`).

What is detected as :class:`~streamkit.state.store.StoreCorrupted`:

* a file that is not SQLite (random bytes, a bad header): ``file is not a
  database`` on the first statement;
* a file truncated to nothing, or a database without the format marker;
* a file truncated part way: SQLite compares the header's page count with the
  file's size when it first reads, and reports ``database disk image is
  malformed``;
* damaged b-tree structure under the meta table (read at open); damaged
  structure elsewhere is found only when read, by :meth:`SqliteStore.get` or
  :meth:`SqliteStore.items`, which raise ``StoreCorrupted`` too.

Not detected: damaged bytes inside a row. SQLite pages carry no checksum, so
a flipped byte in a stored value is returned as it is (seen by flipping one
in the file). And a damaged WAL file: SQLite checksums WAL frames and ignores
the frames from the first bad one on, so the store silently opens at an
older, consistent offset, which the changelog then replays from. ``PRAGMA
quick_check`` is not run at open: it checks structure only (not a flipped
value either) and reads the whole file, 1.04 s for 5,000,000 keys on the
bench machine (``bench/README.md``), a second per partition at every start.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path

from streamkit.state.store import StoreCorrupted
from streamkit.state.stores import (
    FORMAT_KEY,
    FORMAT_VALUE,
    OFFSET_KEY,
    decode_offset,
    encode_offset,
    holds_files,
)

FILE_NAME = "store.sqlite"

# 16 MiB of page cache (negative: KiB), 8x SQLite's default: a checkpoint's
# 2,000 random keys dirty up to 2,000 leaf pages (8 MB at 4 KiB), which a
# 2 MiB cache would spill to the WAL before the commit, writing them twice.
_CACHE_KIB = 16 * 1024

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS meta (name BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
)
# An upsert, not INSERT OR REPLACE: REPLACE deletes and reinserts the row.
_PUT = (
    "INSERT INTO kv (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_DELETE = "DELETE FROM kv WHERE key = ?"
_PUT_META = (
    "INSERT INTO meta (name, value) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)
_GET_META = "SELECT value FROM meta WHERE name = ?"


class SqliteStore:
    """The :class:`~streamkit.state.store.Store` contract over one SQLite file.

    Args:
        path: The store's directory; created if missing.

    Raises:
        StoreCorrupted: The file there cannot be opened or read, or is not a store.
    """

    def __init__(self, path: Path) -> None:
        existed = holds_files(path)
        path.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._offset: int | None = None
        self._closed = False
        # isolation_level=None: no implicit transactions, write() opens its own.
        # check_same_thread=False: the restore thread opens the store and the
        # event loop then uses it; never both at once (see store.py).
        self._conn = sqlite3.connect(
            path / FILE_NAME, isolation_level=None, check_same_thread=False
        )
        try:
            self._open(existed)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreCorrupted(f"sqlite store at {path} cannot be read: {exc}") from exc
        except StoreCorrupted:
            self._conn.close()
            raise

    def _open(self, existed: bool) -> None:
        conn = self._conn
        # The first statement reads the header: "file is not a database" here.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if not existed and not tables:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(_PUT_META, (FORMAT_KEY, FORMAT_VALUE))
            conn.execute("COMMIT")
            return
        if "meta" not in tables or "kv" not in tables:
            raise StoreCorrupted(f"sqlite store at {self._path} has no store tables")
        marker = self._meta(FORMAT_KEY)
        if marker != FORMAT_VALUE:
            raise StoreCorrupted(f"sqlite store at {self._path} has format {marker!r}")
        raw = self._meta(OFFSET_KEY)
        if raw is not None:
            try:
                self._offset = decode_offset(raw)
            except ValueError as exc:
                raise StoreCorrupted(f"sqlite store at {self._path}: {exc}") from exc

    def _meta(self, name: bytes) -> bytes | None:
        row = self._conn.execute(_GET_META, (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def get(self, key: bytes) -> bytes | None:
        """The stored value, or ``None`` if the key is absent."""
        try:
            row = self._conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupted(f"sqlite store at {self._path}: {exc}") from exc
        return None if row is None else bytes(row[0])

    def write(self, batch: Mapping[bytes, bytes | None], changelog_offset: int) -> None:
        """Apply puts and deletes and set the offset in one transaction."""
        puts = [(key, value) for key, value in batch.items() if value is not None]
        deletes = [(key,) for key, value in batch.items() if value is None]
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if puts:
                conn.executemany(_PUT, puts)
            if deletes:
                conn.executemany(_DELETE, deletes)
            conn.execute(_PUT_META, (OFFSET_KEY, encode_offset(changelog_offset)))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._offset = changelog_offset

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every key and value, in key order (the b-tree's), read in one statement."""
        try:
            for key, value in self._conn.execute("SELECT key, value FROM kv"):
                yield bytes(key), bytes(value)
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupted(f"sqlite store at {self._path}: {exc}") from exc

    def changelog_offset(self) -> int | None:
        """The offset of the last write, read from the meta table at open."""
        return self._offset

    def close(self) -> None:
        """Close the connection; SQLite checkpoints the WAL into the file and removes it."""
        if self._closed:
            return
        self._closed = True
        self._conn.close()
