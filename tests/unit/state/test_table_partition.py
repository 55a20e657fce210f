"""One table slice: reads over the overlay and the store, what each checkpoint takes, undo, TTL."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from streamkit.errors import StateError
from streamkit.serde import resolve_serde
from streamkit.state.partition import (
    CURRENT_RECORD,
    TablePartition,
    fold_writes,
    undo_writes,
)
from streamkit.state.partitioner import crc32_partition
from streamkit.state.store import open_store
from streamkit.state.table import NO_VALUE, Table

PARTITIONS = 4


@dataclass
class Msg:
    raw_key: bytes | None
    ts: int = 1_000

    def key(self) -> bytes | None:
        return self.raw_key

    def timestamp(self) -> tuple[int, int]:
        return (1, self.ts)


@dataclass
class Ticket:
    offset: int
    msg: Msg
    writes: list[Any] | None = None
    pending: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def key_in(partition: int) -> str:
    return next(
        k for i in range(1000) if crc32_partition((k := f"k{i}").encode(), PARTITIONS) == partition
    )


def make(
    exactly_once: bool = False, ttl: float | None = None, default: Any = 0
) -> tuple[Table, TablePartition]:
    table = Table("app", "counts", default=default, ttl=ttl)
    part = TablePartition(
        table,
        1,
        PARTITIONS,
        open_store("memory", Path(".")),
        resolve_serde("str"),
        resolve_serde("json"),
        crc32_partition,
        exactly_once,
    )
    table.current.set(part)
    return table, part


def record(offset: int, key: str, ts: int = 1_000) -> Ticket:
    ticket = Ticket(offset, Msg(key.encode(), ts))
    CURRENT_RECORD.set(ticket)
    return ticket


def test_at_least_once_a_checkpoint_stages_each_key_once_with_its_first_writer() -> None:
    table, part = make()
    k = key_in(1)
    for offset in range(10, 15):
        record(offset, k)
        table[k] = table[k] + 1
    batch, firsts = part.stage()
    assert batch == {k.encode(): (b"5", 0)} and firsts == {k.encode(): 10}
    assert part.dirty == {}
    record(15, k)
    table[k] += 1  # written after the stage: the next checkpoint's
    part.wait_for_commit(15, batch, changelog_end=1)
    part.committed(14)
    assert part.store.get(k.encode()) is None  # not yet: the commit does not cover it
    part.committed(15)
    assert part.store.get(k.encode()) == b"5" and part.store.changelog_offset() == 1
    assert table[k] == 6  # the overlay keeps the newer write
    batch, _ = part.stage()
    part.wait_for_commit(16, batch, changelog_end=2)
    part.committed(16)
    assert part.store.get(k.encode()) == b"6" and part.dirty == {} and table[k] == 6


def test_clean_values_stay_cached_until_the_overlay_is_full() -> None:
    table, part = make()
    keys = [k for k in (f"x{i}" for i in range(100_000)) if crc32_partition(k.encode(), 4) == 1]
    for offset, key in enumerate(keys[:12_000]):
        record(offset, key)
        table[key] = offset
    batch, _ = part.stage()
    part.wait_for_commit(12_000, batch, changelog_end=1)
    record(12_000, keys[0])
    table[keys[0]] = -1  # dirty again: kept whatever the trim does
    part.committed(12_000)
    assert part.live == {keys[0].encode(): -1}  # past 10,000 keys: every clean one went
    record(12_001, keys[1])
    assert table[keys[1]] == 1 and keys[1].encode() in part.live  # read back, cached again


def test_a_batch_the_changelog_refused_goes_again_with_its_first_offset() -> None:
    table, part = make()
    k = key_in(1)
    record(3, k)
    table[k] = 1
    batch, firsts = part.stage()
    record(9, k)
    table[k] = 2
    part.unstage(batch, firsts)
    assert part.dirty == {k.encode(): 3}


def test_exactly_once_only_released_records_writes_are_folded_and_a_failed_attempt_is_undone() -> (
    None
):
    table, part = make(exactly_once=True)
    k = key_in(1)
    first = record(0, k)
    table[k] = 1
    second = record(1, k)
    table[k] = 2
    failed = record(2, k)
    table[k] = 99
    undo_writes(failed)  # the attempt raised: its write is taken back
    assert table[k] == 2 and failed.writes is None
    assert fold_writes([first]) == [part]  # only the first record is released
    assert part.batch == {k.encode(): (b"1", 0)}
    part.persist(part.batch, changelog_end=1)
    assert part.store.get(k.encode()) == b"1"
    assert table[k] == 2  # the unreleased write still shows
    part.reset()  # an abort: back to what committed
    assert table[k] == 1 and second.writes is not None


def test_a_key_of_another_partition_is_refused_naming_both_partitions() -> None:
    table, _ = make()
    mine, theirs = key_in(1), key_in(3)
    record(0, mine)
    with pytest.raises(
        StateError, match=r"lives in partition 3, and this record is in partition 1"
    ):
        table[theirs] = 1
    assert table.get(mine) == 0


def test_outside_an_agent_the_table_says_how_to_declare_it() -> None:
    table = Table("app", "seen")
    with pytest.raises(StateError, match=r"tables=\[seen\]"):
        table.get("x")


def test_defaults_missing_keys_and_deletes() -> None:
    table, part = make(default=list)
    k = key_in(1)
    record(0, k)
    assert table[k] == [] and table[k] is not table[k]  # a factory: never shared
    table[k] = [1]
    del table[k]
    assert k not in table and part.get(k) is NO_VALUE
    batch, _ = part.stage()
    assert batch == {k.encode(): (None, 0)}  # a tombstone for the changelog
    strict = Table("app", "strict")
    strict.current.set(part)
    with pytest.raises(KeyError):
        strict[k] = strict[k]


def test_ttl_keys_expire_by_event_time_and_carry_their_expiry() -> None:
    table, part = make(ttl=10)
    k = key_in(1)
    record(0, k, ts=1_000)
    table[k] = 5
    batch, _ = part.stage()
    assert batch[k.encode()] == (b"5", 11_000)
    part.wait_for_commit(1, batch, 1)
    part.committed(1)
    record(1, k, ts=10_999)
    assert table[k] == 5
    record(2, k, ts=11_000)
    assert table.get(k) == 0  # expired: the default
    assert list(table.items()) == []


def test_items_merge_the_overlay_over_the_store() -> None:
    table, part = make()
    a, b = (
        key_in(1),
        next(k for k in (f"x{i}" for i in range(999)) if crc32_partition(k.encode(), 4) == 1),
    )
    record(0, a)
    table[a] = 1
    table[b] = 2
    batch, _ = part.stage()
    part.wait_for_commit(1, batch, 1)
    part.committed(1)
    record(1, a)
    table[a] = 10
    assert dict(table.items()) == {a: 10, b: 2} and len(table) == 2 and set(table) == {a, b}


def test_a_confirmed_commit_never_trims_a_batch_still_waiting_for_its_changelog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The race the tables bench found: a commit confirmed while the next stage is in flight."""
    monkeypatch.setattr("streamkit.state.partition._CACHED_KEYS", 0)  # trim at every persist
    table, part = make()
    k = key_in(1)
    record(0, k)
    table[k] = 1
    first, _ = part.stage()
    part.wait_for_commit(1, first, changelog_end=1)
    record(1, k)
    table[k] = 2
    second, firsts = part.stage()  # produced, its acknowledgements awaited
    part.committed(1)  # the first commit's confirmation arrives meanwhile
    assert table[k] == 2, "the staged value was trimmed and the store's older one read back"
    part.unstage(second, firsts)  # the changelog refused it: the key goes again
    assert part.dirty == {k.encode(): 1} and table[k] == 2
