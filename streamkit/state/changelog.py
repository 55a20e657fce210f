"""Changelog records: what a checkpoint produces for a table, and what a restore reads back.

A changelog record is the latest value of one key (``None``: deleted), keyed
by the table key's bytes, in the changelog partition of the source partition
that wrote it. Two headers, only where they are needed:

* ``streamkit-src`` (at least once): the first source offset that wrote the
  key since its previous changelog record, 8 bytes big-endian. A restore
  skips records whose first offset is at or past the group's committed
  offset: every write in them belongs to inputs that will be processed
  again, so applying them would count those inputs twice. (Exactly once
  needs no header: ``read_committed`` never shows an aborted record.)
* ``streamkit-expires`` (TTL tables): the event time, in ms, when the key
  expires, so a restored key expires when the original would have.
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any

from streamkit.state.partition import Batch, TablePartition

SOURCE_HEADER = "streamkit-src"
EXPIRES_HEADER = "streamkit-expires"
_OFFSET = struct.Struct(">q")
# How long produce() waits for room when librdkafka's queue is full.
_QUEUE_FULL_WAIT_S = 0.05


def pack_offset(offset: int) -> bytes:
    """8 bytes, big-endian: a header's offset or time."""
    return _OFFSET.pack(offset)


def unpack_offset(raw: bytes) -> int:
    """The inverse of :func:`pack_offset`."""
    value: int = _OFFSET.unpack(raw)[0]
    return value


class ChangelogFlush:
    """The changelog records of one checkpoint, and their delivery reports.

    One callback for every record (this object's :meth:`__call__`), which
    keeps the highest acknowledged offset per changelog partition: the store
    persists that offset, plus one, with the batch.
    """

    def __init__(self, producer: Any) -> None:
        self._produce = producer.produce
        self._poll = producer.poll
        self.pending = 0
        self.errors: list[str] = []
        self.ends: dict[tuple[str, int], int] = {}

    def __call__(self, err: Any, msg: Any) -> None:
        """Delivery report of one changelog record."""
        self.pending -= 1
        if err is not None:
            self.errors.append(f"{msg.topic()}[{msg.partition()}]: {err}")
            return
        key = (msg.topic(), msg.partition())
        end = msg.offset() + 1
        if end > self.ends.get(key, -1):
            self.ends[key] = end

    def produce(self, part: TablePartition, batch: Batch, firsts: dict[bytes, int] | None) -> None:
        """Produce ``batch`` to ``part``'s changelog partition (``firsts``: at least once)."""
        topic, partition = part.changelog, part.partition
        for kb, (value, expires) in batch.items():
            headers: list[tuple[str, bytes]] | None = None
            if firsts is not None:
                headers = [(SOURCE_HEADER, _OFFSET.pack(firsts[kb]))]
            if expires:
                headers = [*(headers or ()), (EXPIRES_HEADER, _OFFSET.pack(expires))]
            self.pending += 1
            while True:
                try:
                    self._produce(topic, value, kb, partition, self, headers=headers)
                    break
                except BufferError:
                    self._poll(_QUEUE_FULL_WAIT_S)
                except BaseException:
                    self.pending -= 1
                    raise

    def end_of(self, part: TablePartition) -> int | None:
        """The changelog offset after ``part``'s last acknowledged record, if any."""
        return self.ends.get((part.changelog, part.partition))

    async def acknowledged(self, deadline: float) -> bool:
        """Serve delivery reports until every record is acknowledged, or ``deadline`` (monotonic).

        Returns:
            Whether all went through (none refused, none left waiting).
        """
        while self.pending > 0 and time.monotonic() < deadline:
            self._poll(0)
            if self.pending > 0:
                await asyncio.sleep(0.002)
        return self.pending <= 0 and not self.errors
