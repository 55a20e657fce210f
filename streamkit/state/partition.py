"""One table's slice for one partition: the local store and the writes not persisted yet.

Reads see, newest first: the ``live`` overlay (values written and not yet
persisted, as the agent wrote them, and recently read or persisted values,
decoded), then the local store (bytes, decoded on read). The overlay's clean
entries are dropped once it holds more than ``_CACHED_KEYS`` keys, so it
never holds the table (a 5,000,000-key table lives in the store, not in
memory). Values are shared with the agent, not copied: change one in place
and the change shows in later reads of this worker but is persisted only
when the value is assigned again.

What a checkpoint takes from here differs by guarantee, because what may
reach the changelog differs (:mod:`streamkit.runtime.checkpoint` has the order):

* **At least once**, ``dirty`` names the keys written since the last
  checkpoint, each with the offset of the first record that wrote it since;
  :meth:`stage` encodes their latest values once per checkpoint (ten writes
  of a key cost one encode and one changelog record). The changelog record
  carries that first offset (header ``streamkit-src``), so a restore can skip
  updates whose inputs were never committed (:mod:`streamkit.state.restore`).
* **Exactly once**, only the writes of the records whose offsets the
  transaction commits may go out: each write is kept, encoded, on its
  record's ticket (``ticket.writes``), with the value it replaced, and the
  checkpoint folds the tickets it releases (:func:`fold_writes`). A failed
  attempt's writes are undone before the record is retried
  (:func:`undo_writes`), and an aborted transaction drops the overlay
  (:meth:`TablePartition.reset`): the store holds exactly what committed.
"""

from __future__ import annotations

import builtins
import struct
from collections import deque
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from streamkit.errors import StateError
from streamkit.serde.base import Serde
from streamkit.state.partitioner import Partitioner
from streamkit.state.store import Store
from streamkit.state.table import NO_VALUE, Table

# The input record being processed (its ticket), set by the runtime per
# record for agents with tables: writes need its offset, and the partition
# check needs its key.
CURRENT_RECORD: ContextVar[Any] = ContextVar("streamkit.record", default=None)

# A deleted key in the overlay: a tombstone until it is persisted.
DELETED: Any = object()
_MISSING: Any = object()
_EXPIRY = struct.Struct(">q")  # TTL tables: the store's values start with the expiry (ms)
# Clean (persisted) values a slice keeps decoded for reads: at ~200 bytes
# each, 10,000 keys are ~2 MB per partition, and a key read and written back
# in every interval is then never read from the store or decoded again.
# 20,000 put a 5,000,000-key table's worker at 306 MB after 100,000 records
# (bench/README.md, "Tables"), past the 300 MB goal; 10,000 gives 250 MB.
_CACHED_KEYS = 10_000

# (partition, key, encoded value or None, value it replaced, expiry ms or 0)
Write = tuple["TablePartition", bytes, "bytes | None", Any, int]
# What a checkpoint writes: key -> (encoded value or None for a delete, expiry ms or 0).
Batch = dict[bytes, tuple["bytes | None", int]]


def stored(value: bytes | None, expires: int) -> bytes | None:
    """How a changelog value is kept in a TTL table's store: its expiry first."""
    return None if value is None else _EXPIRY.pack(expires) + value


def expiry_of(raw: bytes) -> tuple[int, bytes]:
    """A TTL table's stored value: ``(expiry ms, value)``."""
    return _EXPIRY.unpack_from(raw)[0], raw[8:]


class TablePartition:
    """The slice of one table that one partition owns (event-loop thread only).

    Args:
        table: The declaration.
        partition: The partition number (of the source and of the changelog).
        partitions: The source's partition count (for the partition check).
        store: The local store, restored up to the changelog's end.
        key: The table's key serde.
        value: The table's value serde.
        partitioner: Where the producer puts a key.
        exactly_once: Keep writes on tickets (see the module docstring).
    """

    def __init__(
        self,
        table: Table,
        partition: int,
        partitions: int,
        store: Store,
        key: Serde,
        value: Serde,
        partitioner: Partitioner,
        exactly_once: bool,
    ) -> None:
        self.table = table
        self.name = table.name
        self.partition = partition
        self.partitions = partitions
        self.store = store
        self.changelog = table.changelog_name
        self._encode_key = key.serialize
        self._decode_key = key.deserialize
        self._encode = value.serialize
        self._decode = value.deserialize
        self._partitioner = partitioner
        self.exactly_once = exactly_once
        self.ttl = table.ttl_ms or 0
        self.live: dict[bytes, Any] = {}
        self.expiry: dict[bytes, int] = {}  # TTL tables: the overlay's expiry per key
        # At least once: key -> the first source offset that wrote it since the last stage.
        self.dirty: dict[bytes, int] = {}
        # At least once: staged batches waiting for their commit, oldest first:
        # (position the commit must reach, batch, changelog offset after it).
        self.waiting: deque[tuple[int, Batch, int]] = deque()
        # At least once: batches staged and not yet acknowledged (nor refused).
        self.staged: list[Batch] = []
        # Exactly once: the last writer's offset per overlay key, and the
        # batch the open checkpoint folded.
        self.written: dict[bytes, int] = {}
        self.batch: Batch = {}
        self.batch_end = -1
        self.stream_time = 0  # the newest record timestamp seen here (TTL's clock)
        self._last_ticket: Any = None
        self._last_key: Any = None
        self._last_kb = b""
        self.closed = False
        # Bumped whenever writes are taken back wholesale (an abort's reset),
        # so what is built over the slice (a window index) knows to rebuild.
        self.generation = 0
        # What a window keeps beside the store (streamkit.windows.slice),
        # and the source's committed offset when the slice was restored.
        self.extension: Any = None
        self.origin: int | None = None

    def __repr__(self) -> str:
        return f"TablePartition({self.name}[{self.partition}])"

    # -- reads and writes, from agents ---------------------------------------

    def _key(self, key: Any, ticket: Any) -> bytes:
        # An agent reads a key and writes it back: the second access of the
        # same key by the same record reuses the first one's encoding and check.
        if ticket is self._last_ticket and key == self._last_key:
            return self._last_kb
        kb: bytes = self._encode_key(key)
        if ticket is not None:
            if kb != ticket.msg.key():
                self._check(key, kb)
            if self.ttl:
                ts = ticket.msg.timestamp()[1]
                if ts > self.stream_time:
                    self.stream_time = ts
        self._last_ticket, self._last_key, self._last_kb = ticket, key, kb
        return kb

    def _check(self, key: Any, kb: bytes) -> None:
        owner = self._partitioner(kb, self.partitions)
        if owner != self.partition:
            raise StateError(
                f"table {self.name}: key {key!r} lives in partition {owner}, and this record "
                f"is in partition {self.partition}; an agent reads and writes the keys of its "
                "own partition (re-key the stream into a topic keyed by it first)"
            )

    def get(self, key: Any) -> Any:
        """The value, or :data:`~streamkit.state.table.NO_VALUE`."""
        kb = self._key(key, CURRENT_RECORD.get())
        value = self.live.get(kb, _MISSING)
        if value is _MISSING or value is DELETED or self.ttl:
            return self.get_bytes(kb)
        return value

    def get_bytes(self, kb: bytes) -> Any:
        """The value of an encoded key, or ``NO_VALUE`` (also for the HTTP endpoint).

        A value read from the store stays in the overlay as a clean entry, so
        the next read of the key (most keys are read and written back) is a
        dict lookup; :meth:`persist` drops clean entries past ``_CACHED_KEYS``.
        """
        value = self.live.get(kb, _MISSING)
        if value is _MISSING:
            raw = self.store.get(kb)
            if raw is None:
                return NO_VALUE
            if self.ttl:
                (expires,) = _EXPIRY.unpack_from(raw)
                if expires <= self.stream_time:
                    return NO_VALUE
                raw = raw[8:]
                self.expiry[kb] = expires
            value = self.live[kb] = self._decode(raw)
            return value
        if value is DELETED:
            return NO_VALUE
        if self.ttl and self.expiry.get(kb, 0) <= self.stream_time:
            return NO_VALUE
        return value

    def set(self, key: Any, value: Any) -> None:
        """Write ``value`` (staged; persisted by the checkpoint)."""
        ticket = CURRENT_RECORD.get()
        if ticket is None:
            raise StateError(f"table {self.name}: writes happen while an agent handles a record")
        kb = self._key(key, ticket)
        if self.exactly_once or self.ttl:
            self._write(kb, value, ticket)
            return
        if kb not in self.dirty:
            self.dirty[kb] = ticket.offset
        self.live[kb] = value

    def put(self, kb: bytes, value: Any, ticket: Any, src: int) -> None:
        """Write an encoded key the caller knows lives here (windows; ``DELETED`` deletes).

        ``src`` is the offset the write counts as, at least once: the
        record's, or for a write no record made (a window closed by idle
        advance) the next offset's.
        """
        if self.exactly_once:
            self._write(kb, value, ticket)
            return
        if kb not in self.dirty:
            self.dirty[kb] = src
        self.live[kb] = value

    def delete(self, key: Any) -> None:
        """Delete ``key`` (a tombstone in the changelog)."""
        ticket = CURRENT_RECORD.get()
        if ticket is None:
            raise StateError(f"table {self.name}: writes happen while an agent handles a record")
        self._write(self._key(key, ticket), DELETED, ticket)

    def _write(self, kb: bytes, value: Any, ticket: Any) -> None:
        live = self.live
        expires = ticket.msg.timestamp()[1] + self.ttl if self.ttl else 0
        if self.exactly_once:
            encoded = None if value is DELETED else self._encode(value)
            write: Write = (self, kb, encoded, live.get(kb, _MISSING), expires)
            writes = ticket.writes
            if writes is None:
                # Held like an output (exactly_once.hold): a record that
                # emits nothing is otherwise done at once, and whatever
                # advances the offsets drops its ticket, writes and all,
                # before the checkpoint folds them (its offset then
                # committed without its writes).
                ticket.writes = [write]
                ticket.pending += 1
            else:
                writes.append(write)
            self.written[kb] = ticket.offset
        elif kb not in self.dirty:
            self.dirty[kb] = ticket.offset
        live[kb] = value
        if expires:
            self.expiry[kb] = expires

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Every live key and value of this partition (the overlay over the store)."""
        decode_key = self._decode_key
        return ((decode_key(kb), value) for kb, value in self.raw_items())

    def raw_items(self) -> Iterator[tuple[bytes, Any]]:
        """Every live encoded key and decoded value (the overlay over the store)."""
        live = dict(self.live)
        seen = set(live)
        for kb, raw in list(self.store.items()):
            if kb in seen:
                continue
            if self.ttl:
                (expires,) = _EXPIRY.unpack_from(raw)
                if expires <= self.stream_time:
                    continue
                raw = raw[8:]
            yield kb, self._decode(raw)
        for kb, value in live.items():
            if value is DELETED or (self.ttl and self.expiry.get(kb, 0) <= self.stream_time):
                continue
            yield kb, value

    # -- the checkpoint's side (streamkit.runtime.checkpoint) ----------------

    def stage(self) -> tuple[Batch, dict[bytes, int]]:
        """At least once: the changed keys' latest values, encoded, and their first offsets."""
        dirty, self.dirty = self.dirty, {}
        live, expiry, encode = self.live, self.expiry, self._encode
        batch: Batch = {}
        for kb in dirty:
            value = live[kb]
            batch[kb] = (None if value is DELETED else encode(value), expiry.get(kb, 0))
        # Between here and wait_for_commit (or unstage) the batch is in no
        # other list, and a commit confirmed meanwhile trims the overlay:
        # without this, its keys' newest values went and older ones were read
        # back from the store (found by bench.tables_diag overlay-race).
        self.staged.append(batch)
        return batch, dirty

    def _unlist(self, batch: Batch) -> None:
        self.staged = [b for b in self.staged if b is not batch]

    def unstage(self, batch: Batch, firsts: dict[bytes, int]) -> None:
        """At least once: a staged batch did not reach the changelog; its keys go next time."""
        self._unlist(batch)
        dirty = self.dirty
        for kb, first in firsts.items():
            if dirty.get(kb, first + 1) > first:
                dirty[kb] = first

    def wait_for_commit(self, position: int, batch: Batch, changelog_end: int) -> None:
        """At least once: persist ``batch`` once a commit reached ``position``."""
        self._unlist(batch)
        self.waiting.append((position, batch, changelog_end))

    def committed(self, position: int) -> None:
        """At least once: a commit of ``position`` was confirmed; persist what it covers."""
        waiting = self.waiting
        while waiting and waiting[0][0] <= position:
            _, batch, end = waiting.popleft()
            self.persist(batch, end)

    def persist(self, batch: Batch, changelog_end: int) -> None:
        """Step 4: write ``batch`` to the store with its changelog offset.

        The overlay keeps the persisted values as clean entries (a read
        cache) until it holds more than ``_CACHED_KEYS`` keys; then every
        clean entry goes, and reads of those keys go to the store again.
        """
        if self.closed:
            return
        self._unlist(batch)
        self.store.write(
            {kb: stored(value, expires) for kb, (value, expires) in batch.items()}
            if self.ttl
            else {kb: value for kb, (value, _) in batch.items()},
            changelog_end,
        )
        if self.exactly_once:
            written, end = self.written, self.batch_end
            for kb in batch:
                if written.get(kb, end + 1) <= end:
                    del written[kb]
            if batch is self.batch:
                self.batch = {}
            if len(self.live) > _CACHED_KEYS:
                self._trim(builtins.set(written))
            return
        if len(self.live) > _CACHED_KEYS:
            keep: builtins.set[bytes] = builtins.set(self.dirty)
            for _, pending, _ in self.waiting:
                keep.update(pending)
            for staged in self.staged:
                keep.update(staged)
            self._trim(keep)

    def _trim(self, keep: builtins.set[bytes]) -> None:
        live, expiry = self.live, self.expiry
        for kb in [kb for kb in live if kb not in keep]:
            del live[kb]
            expiry.pop(kb, None)

    def reset(self) -> None:
        """Exactly once, after an abort: forget every write not committed."""
        self.live.clear()
        self.expiry.clear()
        self.written.clear()
        self.batch = {}
        self.batch_end = -1
        self.generation += 1

    def close(self) -> None:
        """Close the store; writes not persisted are dropped (they are redone by the next owner)."""
        if not self.closed:
            self.closed = True
            self.store.close()


def fold_writes(tickets: list[Any]) -> list[TablePartition]:
    """Exactly once: move the writes of released tickets into their partitions' batches.

    ``tickets`` are in offset order, so a key's last write wins. Returns the
    partitions whose batch holds something.
    """
    touched: dict[int, TablePartition] = {}
    for ticket in tickets:
        writes: list[Write] | None = ticket.writes
        if writes is None:
            continue
        ticket.writes = None
        ticket.pending -= 1
        for part, kb, value, _, expires in writes:
            part.batch[kb] = (value, expires)
            part.batch_end = ticket.offset
            touched[id(part)] = part
    return list(touched.values())


def undo_writes(ticket: Any) -> None:
    """Exactly once: a failed attempt's writes are taken back, newest first."""
    writes: list[Write] | None = ticket.writes
    if writes is None:
        return
    ticket.writes = None
    ticket.pending -= 1
    for part, kb, _, previous, _ in reversed(writes):
        if previous is _MISSING:
            part.live.pop(kb, None)
        else:
            part.live[kb] = previous
