"""The Store contract, once for every backend (streamkit/state/store.py)."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from streamkit.state.store import BACKENDS, Store, StoreCorrupted, open_store

ON_DISK = [name for name in BACKENDS if name != "memory"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(params=ON_DISK)
def disk_backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def store(backend: str, tmp_path: Path) -> Iterator[Store]:
    opened = open_store(backend, tmp_path / "store")
    yield opened
    opened.close()


def key(i: int) -> bytes:
    return i.to_bytes(16, "big")


def fill(path: Path, backend: str, count: int = 2_000) -> None:
    """A store with data in it, closed, so its files are on disk."""
    s = open_store(backend, path)
    s.write({key(i): b"v" * 30 for i in range(count)}, changelog_offset=count)
    s.close()


def test_new_store_is_empty_with_no_offset(store: Store) -> None:
    assert store.changelog_offset() is None
    assert store.get(b"k") is None
    assert list(store.items()) == []


def test_write_puts_deletes_and_sets_the_offset(store: Store) -> None:
    store.write({b"a": b"1", b"b": b"2", b"c": b"3"}, changelog_offset=3)
    store.write({b"a": b"10", b"b": None, b"absent": None}, changelog_offset=7)
    assert store.get(b"a") == b"10"
    assert store.get(b"b") is None
    assert store.get(b"c") == b"3"
    assert store.get(b"absent") is None
    assert store.changelog_offset() == 7
    assert sorted(store.items()) == [(b"a", b"10"), (b"c", b"3")]


def test_empty_batch_still_moves_the_offset(store: Store) -> None:
    store.write({}, changelog_offset=0)
    assert store.changelog_offset() == 0
    store.write({}, changelog_offset=2**63 - 1)
    assert store.changelog_offset() == 2**63 - 1


class Exploding(Mapping[bytes, bytes | None]):
    """A batch that fails while it is read, after some entries."""

    def __getitem__(self, k: bytes) -> bytes | None:
        raise KeyError(k)

    def __len__(self) -> int:
        return 3

    def __iter__(self) -> Iterator[bytes]:
        yield b"x"
        yield b"y"
        raise RuntimeError("batch failed halfway")

    def items(self) -> Iterator[tuple[bytes, bytes | None]]:  # type: ignore[override]
        yield b"x", b"new"
        yield b"y", None
        raise RuntimeError("batch failed halfway")


def test_a_failed_write_changes_nothing(store: Store) -> None:
    store.write({b"x": b"old", b"y": b"kept"}, changelog_offset=5)
    with pytest.raises(RuntimeError, match="halfway"):
        store.write(Exploding(), changelog_offset=9)
    assert store.get(b"x") == b"old"
    assert store.get(b"y") == b"kept"
    assert store.changelog_offset() == 5
    store.write({b"x": b"after"}, changelog_offset=10)  # the store is still usable
    assert store.get(b"x") == b"after"


def test_items_excludes_the_meta_entries(store: Store) -> None:
    # User keys spelled like the meta keys: they must not collide with them.
    store.write({b"format": b"mine", b"changelog_offset": b"mine", b"k": b"v"}, 42)
    assert sorted(store.items()) == [
        (b"changelog_offset", b"mine"),
        (b"format", b"mine"),
        (b"k", b"v"),
    ]
    assert store.changelog_offset() == 42


def test_reopen_keeps_data_and_offset(disk_backend: str, tmp_path: Path) -> None:
    path = tmp_path / "store"
    s = open_store(disk_backend, path)
    s.write({b"a": b"1", b"b": b"2"}, changelog_offset=11)
    s.write({b"b": None}, changelog_offset=12)
    s.close()
    s = open_store(disk_backend, path)
    try:
        assert s.changelog_offset() == 12
        assert dict(s.items()) == {b"a": b"1"}
    finally:
        s.close()


def test_reopened_memory_store_starts_over(tmp_path: Path) -> None:
    s = open_store("memory", tmp_path)
    s.write({b"a": b"1"}, changelog_offset=1)
    s.close()
    assert open_store("memory", tmp_path).changelog_offset() is None


def test_100k_keys_survive_a_reopen(backend: str, tmp_path: Path) -> None:
    path = tmp_path / "store"
    s = open_store(backend, path)
    rng = random.Random(7)
    expected = {rng.randbytes(16): rng.randbytes(30) for _ in range(100_000)}
    pairs = list(expected.items())
    for start in range(0, len(pairs), 10_000):
        s.write(dict(pairs[start : start + 10_000]), changelog_offset=start + 10_000)
    if backend != "memory":
        s.close()
        s = open_store(backend, path)
    try:
        assert s.changelog_offset() == 100_000
        assert dict(s.items()) == expected
        for k, v in pairs[::997]:
            assert s.get(k) == v
    finally:
        s.close()


def test_close_is_idempotent(backend: str, tmp_path: Path) -> None:
    s = open_store(backend, tmp_path / "store")
    s.write({b"a": b"1"}, changelog_offset=1)
    s.close()
    s.close()


def test_unknown_backend_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown state store backend 'redis'"):
        open_store("redis", tmp_path)


def overwrite_random(path: Path) -> None:
    rng = random.Random(3)
    for f in path.rglob("*"):
        if f.is_file():
            f.write_bytes(rng.randbytes(max(f.stat().st_size, 4096)))


def truncate_all(path: Path) -> None:
    for f in path.rglob("*"):
        if f.is_file():
            os.truncate(f, 0)


def truncate_half(path: Path) -> None:
    for f in path.rglob("*"):
        if f.is_file():
            os.truncate(f, f.stat().st_size // 2)


@pytest.mark.parametrize("damage", [overwrite_random, truncate_all, truncate_half])
def test_damaged_files_raise_store_corrupted(
    disk_backend: str, tmp_path: Path, damage: object
) -> None:
    path = tmp_path / "store"
    fill(path, disk_backend)
    assert callable(damage)
    damage(path)
    with pytest.raises(StoreCorrupted, match=str(path)) as caught:
        open_store(disk_backend, path).close()
    if damage is overwrite_random:
        # The library's own error is kept as the cause, for the log.
        assert caught.value.__cause__ is not None


def test_a_directory_of_other_files_is_not_a_new_store(disk_backend: str, tmp_path: Path) -> None:
    path = tmp_path / "store"
    path.mkdir()
    (path / "notes.txt").write_text("not a store")
    with pytest.raises(StoreCorrupted):
        open_store(disk_backend, path)


def test_a_corrupted_store_can_be_rebuilt_in_place(disk_backend: str, tmp_path: Path) -> None:
    # What the caller does with StoreCorrupted: remove the directory and reopen.
    path = tmp_path / "store"
    fill(path, disk_backend)
    overwrite_random(path)
    with pytest.raises(StoreCorrupted):
        open_store(disk_backend, path)
    for f in sorted(path.rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    s = open_store(disk_backend, path)
    try:
        assert s.changelog_offset() is None
    finally:
        s.close()


def test_rocksdb_finds_a_flipped_value_byte_by_its_block_checksum(tmp_path: Path) -> None:
    # SQLite and LMDB pages carry no checksum: there the same flip is returned as the value.
    rng = random.Random(5)
    values = {key(i): rng.randbytes(30) for i in range(1_000)}  # incompressible: findable
    s = open_store("rocksdb", tmp_path)
    s.write(values, changelog_offset=1_000)
    s.close()
    needle = values[key(500)]
    for sst in tmp_path.glob("*.sst"):
        data = bytearray(sst.read_bytes())
        at = data.find(needle)
        if at >= 0:
            data[at + 10] ^= 0x01
            sst.write_bytes(bytes(data))
            break
    else:
        pytest.fail("the value is in no SST file")
    s = open_store("rocksdb", tmp_path)
    try:
        with pytest.raises(StoreCorrupted, match="checksum"):
            s.get(key(500))
    finally:
        s.close()


@pytest.mark.parametrize(("backend_name", "module"), [("rocksdb", "rocksdict"), ("lmdb", "lmdb")])
def test_missing_library_names_the_extra(
    backend_name: str, module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # None: "import" raises ImportError
    with pytest.raises(ImportError, match=rf"pip install 'streamkit\[{backend_name}\]'"):
        open_store(backend_name, tmp_path / "store")


def test_lmdb_refuses_long_keys_with_a_value_error(tmp_path: Path) -> None:
    s = open_store("lmdb", tmp_path / "store")
    try:
        with pytest.raises(ValueError, match="longer than 511 bytes"):
            s.write({b"k" * 512: b"v"}, changelog_offset=1)
        assert s.changelog_offset() is None
    finally:
        s.close()
