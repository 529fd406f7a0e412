"""Both StorageEngines against a plain dict oracle (STYLE.md rules 4 and 7).

Random sequences of batches are applied to MemoryEngine, LevelDBEngine and a dict;
after every batch all three agree on `get` and on full iteration, and snapshots taken
along the way keep agreeing with the oracle's copy from that moment.
Failures print a `@reproduce_failure` blob (print_blob=True).
"""

from __future__ import annotations

import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from kv.leveldb import LevelDBEngine
from kv.memory import MemoryEngine
from kv.storage import Snapshot, StorageEngine, WriteBatch

Op = tuple[bytes, bytes | None]

# A small alphabet with the edge bytes, so keys collide, nest as prefixes and sort oddly.
keys = st.binary(max_size=3).map(lambda b: bytes(b"\x00a\x7f\xff"[x % 4] for x in b))
values = st.binary(max_size=8)
ops = st.tuples(keys, st.none() | values)
batches = st.lists(ops, max_size=8)
steps = st.lists(st.tuples(batches, st.booleans()), min_size=1, max_size=12)


def oracle_apply(oracle: dict[bytes, bytes], batch: list[Op]) -> None:
    for key, value in batch:
        if value is None:
            oracle.pop(key, None)
        else:
            oracle[key] = value


def to_batch(batch: list[Op]) -> WriteBatch:
    built = WriteBatch()
    for key, value in batch:
        if value is None:
            built.delete(key)
        else:
            built.put(key, value)
    return built


def assert_agrees(view: StorageEngine | Snapshot, oracle: dict[bytes, bytes]) -> None:
    expected = sorted(oracle.items())
    assert list(view.iterate()) == expected
    assert list(view.iterate(reverse=True)) == expected[::-1]
    for key in [*oracle, b"", b"\x00", b"\xff", b"zz"]:
        assert view.get(key) == oracle.get(key)


def assert_range_agrees(
    view: StorageEngine, oracle: dict[bytes, bytes], start: bytes, stop: bytes | None
) -> None:
    items = sorted(oracle.items())
    in_range = [(k, v) for k, v in items if k >= start and (stop is None or k < stop)]
    assert list(view.iterate(start, stop)) == in_range
    assert list(view.iterate(start, stop, reverse=True)) == in_range[::-1]
    assert list(view.iterate_prefix(start)) == [(k, v) for k, v in items if k.startswith(start)]


@settings(max_examples=200, deadline=None, print_blob=True)
@given(steps=steps, start=keys, stop=st.none() | keys)
def test_engines_agree_with_dict_oracle(
    steps: list[tuple[list[Op], bool]], start: bytes, stop: bytes | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engines: list[StorageEngine] = [MemoryEngine(), LevelDBEngine(tmp)]
        try:
            run_steps(engines, steps, start, stop)
        finally:
            for engine in engines:
                engine.close()


def run_steps(
    engines: list[StorageEngine],
    steps: list[tuple[list[Op], bool]],
    start: bytes,
    stop: bytes | None,
) -> None:
    oracle: dict[bytes, bytes] = {}
    snapshots: list[tuple[list[Snapshot], dict[bytes, bytes]]] = []
    for batch, take_snapshot in steps:
        if take_snapshot:
            snapshots.append(([engine.snapshot() for engine in engines], dict(oracle)))
        oracle_apply(oracle, batch)
        for engine in engines:
            engine.write(to_batch(batch))
            assert_agrees(engine, oracle)
            assert_range_agrees(engine, oracle, start, stop)
    for views, frozen in snapshots:
        for view in views:
            assert_agrees(view, frozen)
            view.close()
