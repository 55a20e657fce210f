"""Restoring one table slice from a changelog: the skip rule, rebuilds, and what stops a worker."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from streamkit.backends.memory_broker import MemoryBroker
from streamkit.backends.memory_reader import MemoryChangelogReader
from streamkit.errors import DeclarationError
from streamkit.state.changelog import SOURCE_HEADER, pack_offset
from streamkit.state.restore import RestoreJob, Restorer, SliceSpec
from streamkit.state.store import Store, open_store
from streamkit.types import TopicPartition

SOURCE, CHANGELOG, GROUP = "counts.in", "app.counts.changelog", "app"


@pytest.fixture
def broker() -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topic(SOURCE, 2)
    broker.create_topic(CHANGELOG, 2)
    return broker


def write(broker: MemoryBroker, key: bytes, value: bytes | None, src: int | None = None) -> None:
    headers = [(SOURCE_HEADER, pack_offset(src))] if src is not None else None
    broker.append(CHANGELOG, key, value, headers=headers, partition=1)


def commit(broker: MemoryBroker, offset: int) -> None:
    member = broker.join(GROUP, [SOURCE])
    broker.commit(member, [(TopicPartition(SOURCE, 1), offset)])


def restore(
    broker: MemoryBroker, path: Path | None, skip: bool = True, backend: str = "rocksdb"
) -> tuple[list[Store], BaseException | None]:
    restorer = Restorer(
        lambda: MemoryChangelogReader(broker, GROUP, read_committed=False),
        backend,
        skip_uncommitted=skip,
        earliest=True,
    )
    done = threading.Event()
    result: dict[str, Any] = {}

    def ready(stores: list[Store], partitions: int) -> None:
        result["stores"] = stores
        done.set()

    def failed(exc: BaseException) -> None:
        result["error"] = exc
        done.set()

    spec = SliceSpec("counts", CHANGELOG, path, ttl=False)
    restorer.submit(RestoreJob(SOURCE, 1, [spec], ready, failed))
    assert done.wait(10)
    restorer.unlock(path)
    restorer.stop()
    return result.get("stores", []), result.get("error")


def test_updates_whose_inputs_never_committed_are_skipped(broker: MemoryBroker) -> None:
    write(broker, b"a", b"1", src=3)
    write(broker, b"a", b"2", src=8)
    write(broker, b"b", b"5", src=9)  # first written at 9: the commit stops at 9
    write(broker, b"c", b"7")  # no header: always applied
    commit(broker, 9)
    [store], error = restore(broker, None, backend="memory")
    assert error is None
    assert dict(store.items()) == {b"a": b"2", b"c": b"7"}
    assert store.changelog_offset() == 4


def test_exactly_once_applies_every_committed_record(broker: MemoryBroker) -> None:
    write(broker, b"a", b"1", src=3)
    write(broker, b"a", None)  # a tombstone deletes
    write(broker, b"b", b"5", src=9)
    [store], _ = restore(broker, None, skip=False, backend="memory")
    assert dict(store.items()) == {b"b": b"5"}


def test_a_warm_store_reads_only_the_tail_and_a_store_past_the_end_is_rebuilt(
    broker: MemoryBroker, tmp_path: Path
) -> None:
    path = tmp_path / "counts" / "1"
    write(broker, b"a", b"1")
    [store], _ = restore(broker, path, skip=False)
    store.write({b"a": b"1", b"stale": b"x"}, 1)
    store.close()
    write(broker, b"b", b"2")
    [store], _ = restore(broker, path, skip=False)
    assert dict(store.items()) == {b"a": b"1", b"stale": b"x", b"b": b"2"}  # only the tail
    store.write({}, 99)  # past the changelog's end: the topic was recreated
    store.close()
    [store], _ = restore(broker, path, skip=False)
    assert dict(store.items()) == {b"a": b"1", b"b": b"2"}
    store.close()


def test_a_corrupted_store_is_rebuilt_from_the_changelog(
    broker: MemoryBroker, tmp_path: Path
) -> None:
    path = tmp_path / "counts" / "1"
    write(broker, b"a", b"1")
    [store], _ = restore(broker, path, skip=False)
    store.close()
    for file in [p for p in path.rglob("*") if p.is_file()]:
        file.write_bytes(b"\x00garbage" * 512)
    [store], error = restore(broker, path, skip=False)
    assert error is None and dict(store.items()) == {b"a": b"1"}
    store.close()


def test_a_changelog_with_another_partition_count_stops_the_worker(broker: MemoryBroker) -> None:
    broker.create_topic("other.in", 3)
    restorer = Restorer(
        lambda: MemoryChangelogReader(broker, GROUP, False), "memory", True, earliest=True
    )
    errors: list[BaseException] = []
    done = threading.Event()
    spec = SliceSpec("counts", CHANGELOG, None, ttl=False)

    def failed(exc: BaseException) -> None:
        errors.append(exc)
        done.set()

    job = RestoreJob("other.in", 0, [spec], lambda *_: done.set(), failed)
    restorer.submit(job)
    assert done.wait(10)
    restorer.stop()
    assert isinstance(errors[0], DeclarationError)
    assert "has 2 partitions and its source other.in 3" in str(errors[0])
    assert open_store("memory", Path(".")).changelog_offset() is None
