"""A store in a dict: for tests, and for tables whose state may be lost.

Nothing survives :meth:`MemoryStore.close` or the process; a reopened memory
store is empty with offset ``None``, so the worker rebuilds it from the whole
changelog, which is what a test wants and what a throwaway table accepts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path


class MemoryStore:
    """The :class:`~streamkit.state.store.Store` contract over a dict.

    Args:
        path: Ignored; accepted so every backend opens the same way.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._data: dict[bytes, bytes] = {}
        self._offset: int | None = None

    def get(self, key: bytes) -> bytes | None:
        """The stored value, or ``None`` if the key is absent."""
        return self._data.get(key)

    def write(self, batch: Mapping[bytes, bytes | None], changelog_offset: int) -> None:
        """Apply puts and deletes, then set the offset.

        Atomic: the batch is read in full before anything changes (reading
        it is what can raise), the dict operations after that cannot fail,
        and one thread at a time uses a store.
        """
        changes = list(batch.items())
        data = self._data
        for key, value in changes:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        self._offset = changelog_offset

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every key and value; a write meanwhile raises ``RuntimeError`` (dict iteration)."""
        yield from self._data.items()

    def changelog_offset(self) -> int | None:
        """The offset of the last write; ``None`` before the first."""
        return self._offset

    def close(self) -> None:
        """Nothing to release; the data stays readable until the object goes."""
