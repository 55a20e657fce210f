"""The local store backends behind :func:`streamkit.state.store.open_store`.

One module per backend: ``memory`` (tests), ``sqlite`` (standard library),
``rocksdb`` (the ``rocksdb`` extra, rocksdict) and ``lmdb`` (the ``lmdb``
extra). The optional libraries are imported only when a store of that kind is
opened, so ``import streamkit`` never needs them.

The helpers here are shared by the on-disk backends: the changelog offset's
encoding, and the format marker every new store writes in its first
transaction. A directory that holds files but no marker was not left by a
store (or was truncated to nothing): the backends raise
:class:`~streamkit.state.store.StoreCorrupted` for it rather than open it as a
new, empty store, because an empty store with offset ``None`` would look like
a fresh partition instead of a damaged one.
"""

from __future__ import annotations

import struct
from pathlib import Path

# The marker's key (in each backend's meta space) and value. The value names
# the layout, so a later layout can tell an old store from a damaged one.
FORMAT_KEY = b"format"
FORMAT_VALUE = b"streamkit-store-1"
OFFSET_KEY = b"changelog_offset"

# A Kafka offset is a signed 64-bit integer; big-endian so the bytes sort as
# the numbers do (not needed today, free to keep).
_OFFSET = struct.Struct(">q")


def encode_offset(offset: int) -> bytes:
    """The offset as the 8 bytes every on-disk backend stores."""
    return _OFFSET.pack(offset)


def decode_offset(raw: bytes) -> int:
    """The offset from :func:`encode_offset`'s bytes.

    Raises:
        ValueError: ``raw`` is not 8 bytes (the meta entry is damaged).
    """
    if len(raw) != _OFFSET.size:
        raise ValueError(f"changelog offset entry is {len(raw)} bytes, expected {_OFFSET.size}")
    value: int = _OFFSET.unpack(raw)[0]
    return value


def holds_files(path: Path) -> bool:
    """Whether ``path`` exists and has anything in it (a store was there before)."""
    return path.is_dir() and any(path.iterdir())
