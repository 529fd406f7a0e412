"""One contract suite for every StorageEngine (STYLE rule 4): MemoryEngine and LevelDBEngine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kv.leveldb import LevelDBEngine
from kv.memory import MemoryEngine
from kv.storage import StorageEngine, StorageError, WriteBatch, prefix_end


@pytest.fixture(params=["memory", "leveldb"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageEngine]:
    made: StorageEngine = (
        MemoryEngine() if request.param == "memory" else LevelDBEngine(tmp_path / "db")
    )
    yield made
    made.close()


def put_all(engine: StorageEngine, items: dict[bytes, bytes]) -> None:
    batch = WriteBatch()
    for key, value in items.items():
        batch.put(key, value)
    engine.write(batch)


def keys(pairs: Iterator[tuple[bytes, bytes]]) -> list[bytes]:
    return [key for key, _ in pairs]


ABCDE = {k: k.upper() for k in (b"a", b"b", b"c", b"d", b"e")}


# --- prefix_end and WriteBatch (pure helpers) ---------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        (b"a", b"b"),
        (b"ks\x00", b"ks\x01"),
        (b"a\xff", b"b"),
        (b"a\xfe\xff\xff", b"a\xff"),
        (b"\xff", None),
        (b"\xff\xff", None),
        (b"", None),
    ],
)
def test_prefix_end(prefix: bytes, end: bytes | None) -> None:
    assert prefix_end(prefix) == end


def test_write_batch_keeps_ops_in_order() -> None:
    batch = WriteBatch()
    batch.put(b"k", b"1")
    batch.delete(b"k")
    batch.put(b"j", b"")
    assert batch.ops == ((b"k", b"1"), (b"k", None), (b"j", b""))
    assert len(batch) == 3


@pytest.mark.parametrize("bad", ["text", bytearray(b"x"), memoryview(b"x"), None, 1])
def test_write_batch_rejects_non_bytes_before_any_write(bad: object) -> None:
    batch = WriteBatch()
    with pytest.raises(TypeError):
        batch.put(bad, b"v")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        batch.put(b"k", bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        batch.delete(bad)  # type: ignore[arg-type]
    assert len(batch) == 0


# --- get / write ---------------------------------------------------------------------------


def test_get_absent_key(engine: StorageEngine) -> None:
    assert engine.get(b"nope") is None
    assert list(engine.iterate()) == []


def test_put_then_get(engine: StorageEngine) -> None:
    put_all(engine, {b"k": b"v"})
    assert engine.get(b"k") == b"v"


def test_overwrite(engine: StorageEngine) -> None:
    put_all(engine, {b"k": b"v1"})
    put_all(engine, {b"k": b"v2"})
    assert engine.get(b"k") == b"v2"


def test_batch_applies_ops_in_order(engine: StorageEngine) -> None:
    batch = WriteBatch()
    batch.put(b"gone", b"1")
    batch.delete(b"gone")
    batch.delete(b"back")
    batch.put(b"back", b"2")
    batch.put(b"twice", b"a")
    batch.put(b"twice", b"b")
    engine.write(batch)
    assert engine.get(b"gone") is None
    assert engine.get(b"back") == b"2"
    assert engine.get(b"twice") == b"b"
    assert keys(engine.iterate()) == [b"back", b"twice"]


def test_batch_is_all_or_nothing_to_readers(engine: StorageEngine) -> None:
    put_all(engine, {b"old": b"0"})
    batch = WriteBatch()
    batch.delete(b"old")
    for i in range(100):
        batch.put(b"new%03d" % i, b"v")
    with engine.snapshot() as before:
        engine.write(batch, sync=True)
        assert list(before.iterate()) == [(b"old", b"0")]
    assert engine.get(b"old") is None
    assert len(list(engine.iterate_prefix(b"new"))) == 100


def test_empty_batch_and_delete_of_absent_key(engine: StorageEngine) -> None:
    engine.write(WriteBatch())
    batch = WriteBatch()
    batch.delete(b"never")
    engine.write(batch)
    assert list(engine.iterate()) == []


def test_write_does_not_keep_a_reference_to_the_batch(engine: StorageEngine) -> None:
    batch = WriteBatch()
    batch.put(b"k", b"1")
    engine.write(batch)
    batch.put(b"k", b"2")
    assert engine.get(b"k") == b"1"


def test_sync_is_callable(engine: StorageEngine) -> None:
    put_all(engine, {b"k": b"v"})
    engine.sync()
    assert engine.get(b"k") == b"v"


# --- iterate -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "stop", "expected"),
    [
        (b"", None, b"abcde"),
        (b"b", b"d", b"bc"),
        (b"bb", b"dd", b"cd"),
        (b"a", b"b", b"a"),
        (b"e", None, b"e"),
        (b"", b"a", b""),
        (b"c", b"c", b""),
        (b"d", b"b", b""),
        (b"f", None, b""),
    ],
)
def test_iterate_range(
    engine: StorageEngine, start: bytes, stop: bytes | None, expected: bytes
) -> None:
    put_all(engine, ABCDE)
    want = [bytes([c]) for c in expected]
    assert keys(engine.iterate(start, stop)) == want
    assert keys(engine.iterate(start, stop, reverse=True)) == want[::-1]


def test_iterate_yields_values(engine: StorageEngine) -> None:
    put_all(engine, ABCDE)
    assert list(engine.iterate(b"b", b"c")) == [(b"b", b"B")]


def test_reverse_iterate_whose_only_key_is_start(engine: StorageEngine) -> None:
    # Regression: plyvel 1.5.1 yields nothing here when given both start and reverse.
    put_all(engine, {b"a": b"1"})
    assert keys(engine.iterate(b"a", reverse=True)) == [b"a"]
    assert keys(engine.iterate(b"a", b"b", reverse=True)) == [b"a"]


def test_iterate_prefix(engine: StorageEngine) -> None:
    put_all(engine, {b"k": b"", b"ks": b"", b"ks\x00a": b"", b"ks\x00b": b"", b"ks\x01": b""})
    assert keys(engine.iterate_prefix(b"ks\x00")) == [b"ks\x00a", b"ks\x00b"]
    assert keys(engine.iterate_prefix(b"ks")) == [b"ks", b"ks\x00a", b"ks\x00b", b"ks\x01"]
    assert keys(engine.iterate_prefix(b"zz")) == []


def test_iterate_empty_prefix_is_everything(engine: StorageEngine) -> None:
    put_all(engine, ABCDE)
    assert keys(engine.iterate_prefix(b"")) == list(ABCDE)


def test_iterate_prefix_of_ff_bytes(engine: StorageEngine) -> None:
    put_all(engine, {b"\xfe": b"", b"\xff": b"", b"\xff\x00": b"", b"\xff\xff\xff": b""})
    assert keys(engine.iterate_prefix(b"\xff")) == [b"\xff", b"\xff\x00", b"\xff\xff\xff"]
    assert keys(engine.iterate_prefix(b"\xff\xff")) == [b"\xff\xff\xff"]


def test_iterator_sees_the_state_when_it_was_made(engine: StorageEngine) -> None:
    put_all(engine, {b"a": b"1", b"c": b"3"})
    it = engine.iterate()
    put_all(engine, {b"b": b"2"})
    assert keys(it) == [b"a", b"c"]


def test_abandoned_iterator_does_not_block_writes(engine: StorageEngine) -> None:
    put_all(engine, ABCDE)
    it = engine.iterate()
    assert next(it) == (b"a", b"A")
    put_all(engine, {b"z": b"Z"})
    it.close()  # type: ignore[attr-defined]
    assert engine.get(b"z") == b"Z"


# --- binary keys and value sizes ---------------------------------------------------------


def test_binary_keys_sort_as_unsigned_bytes(engine: StorageEngine) -> None:
    binary = [
        b"",
        b"\x00",
        b"\x00\x00",
        b"\x00\xff",
        b"\x01",
        b"\x7f",
        b"\x80",
        b"\xff",
        b"\xff\x00",
    ]
    put_all(engine, {key: key + b"!" for key in reversed(binary)})
    assert keys(engine.iterate()) == binary
    assert keys(engine.iterate(reverse=True)) == binary[::-1]
    for key in binary:
        assert engine.get(key) == key + b"!"


@pytest.mark.parametrize("size", [0, 1, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 1024 * 1024])
def test_value_sizes(engine: StorageEngine, size: int) -> None:
    value = bytes(i % 251 for i in range(size))
    put_all(engine, {b"k": value})
    assert engine.get(b"k") == value
    assert list(engine.iterate()) == [(b"k", value)]


# --- snapshots -----------------------------------------------------------------------------


def test_snapshot_isolation(engine: StorageEngine) -> None:
    put_all(engine, {b"a": b"1", b"b": b"2"})
    with engine.snapshot() as snap:
        batch = WriteBatch()
        batch.put(b"a", b"changed")
        batch.delete(b"b")
        batch.put(b"c", b"new")
        engine.write(batch)
        assert snap.get(b"a") == b"1"
        assert snap.get(b"b") == b"2"
        assert snap.get(b"c") is None
        assert list(snap.iterate()) == [(b"a", b"1"), (b"b", b"2")]
        assert list(snap.iterate(reverse=True)) == [(b"b", b"2"), (b"a", b"1")]
        assert keys(snap.iterate_prefix(b"b")) == [b"b"]
    assert list(engine.iterate()) == [(b"a", b"changed"), (b"c", b"new")]


def test_snapshots_are_independent(engine: StorageEngine) -> None:
    put_all(engine, {b"k": b"1"})
    first = engine.snapshot()
    put_all(engine, {b"k": b"2"})
    second = engine.snapshot()
    put_all(engine, {b"k": b"3"})
    assert (first.get(b"k"), second.get(b"k"), engine.get(b"k")) == (b"1", b"2", b"3")
    first.close()
    assert second.get(b"k") == b"2"
    second.close()


def test_closed_snapshot_refuses_reads(engine: StorageEngine) -> None:
    snap = engine.snapshot()
    snap.close()
    snap.close()  # idempotent
    with pytest.raises(StorageError):
        snap.get(b"k")
    with pytest.raises(StorageError):
        list(snap.iterate())


# --- close ---------------------------------------------------------------------------------


def test_close_twice_is_harmless_and_later_calls_raise(engine: StorageEngine) -> None:
    put_all(engine, {b"k": b"v"})
    snap = engine.snapshot()
    engine.close()
    engine.close()
    snap.close()  # still harmless after the engine closed
    with pytest.raises(StorageError):
        engine.get(b"k")
    with pytest.raises(StorageError):
        put_all(engine, {b"k": b"v2"})
    with pytest.raises(StorageError):
        engine.iterate()
    with pytest.raises(StorageError):
        engine.snapshot()
    with pytest.raises(StorageError):
        engine.sync()


def test_snapshot_is_unusable_after_engine_close(engine: StorageEngine) -> None:
    put_all(engine, {b"k": b"v"})
    snap = engine.snapshot()
    engine.close()
    with pytest.raises(StorageError):
        snap.get(b"k")


# --- LevelDB only --------------------------------------------------------------------------


def test_leveldb_reopen_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "db"
    first = LevelDBEngine(path)
    put_all(first, {b"k": b"v", b"\x00": b"\xff" * 70_000})
    first.sync()
    first.close()
    second = LevelDBEngine(str(path), create_if_missing=False)
    try:
        assert second.get(b"k") == b"v"
        assert keys(second.iterate()) == [b"\x00", b"k"]
    finally:
        second.close()


def test_leveldb_locked_db_raises_storage_error_naming_path(tmp_path: Path) -> None:
    path = tmp_path / "db"
    holder = LevelDBEngine(path)
    try:
        with pytest.raises(StorageError, match="lock") as info:
            LevelDBEngine(path)
        assert str(path) in str(info.value)
        assert info.value.path == str(path)
    finally:
        holder.close()


def test_leveldb_missing_db_without_create_raises(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    with pytest.raises(StorageError) as info:
        LevelDBEngine(path, create_if_missing=False)
    assert str(path) in str(info.value)


def test_leveldb_closed_engine_error_names_path(tmp_path: Path) -> None:
    path = tmp_path / "db"
    engine = LevelDBEngine(path)
    engine.close()
    with pytest.raises(StorageError, match=str(path)):
        engine.get(b"k")
