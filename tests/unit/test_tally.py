"""kv/tally.py `TalliedEngine`: the running size of each counted scope is exact at every
instant — after the counting scan, after every write through it, and for writes made while
the scan runs — and scopes nobody asked about cost a write nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kv.leveldb import LevelDBEngine
from kv.memory import MemoryEngine
from kv.sizes import Layout, Size, record
from kv.storage import StorageEngine, WriteBatch
from kv.tally import TalliedEngine

LAYOUT = Layout(b"e", 2)


def key(scope: int, uid: int, name: str) -> bytes:
    return b"e" + scope.to_bytes(2, "big") + uid.to_bytes(4, "big") + name.encode()


def exact(engine: StorageEngine, scope: int) -> dict[int, Size]:
    """The sizes of `scope`, by reading every record."""
    out: dict[int, Size] = {}
    for k, v in engine.iterate(*LAYOUT.range(scope)):
        where = LAYOUT.locate(k)
        assert where is not None
        out[where[1]] = out.get(where[1], Size()) + record(k, v)
    return out


def write(engine: StorageEngine, *ops: tuple[bytes, bytes | None]) -> None:
    batch = WriteBatch()
    for k, v in ops:
        if v is None:
            batch.delete(k)
        else:
            batch.put(k, v)
    engine.write(batch)


@pytest.fixture(params=["memory", "leveldb"])
def base(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageEngine]:
    made: StorageEngine = (
        MemoryEngine() if request.param == "memory" else LevelDBEngine(tmp_path / "db")
    )
    yield made
    made.close()


def test_a_scope_is_unknown_until_counted_then_exact(base: StorageEngine) -> None:
    tally = TalliedEngine(base, LAYOUT)
    write(tally, (key(5, 1, "a"), b"x" * 10), (key(5, 2, "b"), b"y" * 20), (b"h-other", b"z"))
    assert tally.sizes(5) is None
    tally.count([5, 6])
    assert tally.sizes(5) == exact(base, 5) == {1: Size(1, 18), 2: Size(1, 28)}
    assert tally.sizes(6) == {}  # counted, and empty: a known 0


def test_every_write_after_counting_keeps_it_exact(base: StorageEngine) -> None:
    tally = TalliedEngine(base, LAYOUT)
    write(tally, (key(5, 1, "a"), b"1"), (key(5, 1, "b"), b"22"))
    tally.count([5])
    write(tally, (key(5, 1, "a"), b"longer value"))  # overwrite
    write(tally, (key(5, 1, "b"), None), (key(5, 1, "b"), b"back"))  # last op on a key wins
    write(tally, (key(5, 3, "c"), b"new"), (key(5, 1, "zz"), None))  # absent: nothing to drop
    assert tally.sizes(5) == exact(base, 5)
    write(tally, (key(5, 1, "a"), None), (key(5, 1, "b"), None), (key(5, 3, "c"), None))
    assert tally.sizes(5) == exact(base, 5) == {}


def test_a_write_made_while_the_scan_runs_is_counted_once(
    base: StorageEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan reads a snapshot; writes from that moment on add their change as they
    happen — a write between the snapshot and the end of the scan is in exactly once."""
    tally = TalliedEngine(base, LAYOUT)
    write(tally, (key(5, 1, "a"), b"1"), (key(5, 1, "b"), b"22"))
    scan = TalliedEngine._scan

    def scan_while_writing(self: TalliedEngine, snap: object, scope: int) -> dict[int, Size]:
        write(self, (key(5, 1, "a"), None), (key(5, 1, "c"), b"333"))
        return scan(self, snap, scope)  # type: ignore[arg-type]

    monkeypatch.setattr(TalliedEngine, "_scan", scan_while_writing)
    tally.count([5])
    assert tally.sizes(5) == exact(base, 5) == {1: Size(2, 2 * 8 + 5)}


class Gets:
    """An engine that counts `get` calls."""

    def __init__(self) -> None:
        self.engine = MemoryEngine()
        self.gets = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.engine, name)

    def get(self, k: bytes) -> bytes | None:
        self.gets += 1
        return self.engine.get(k)


def test_scopes_nobody_asked_about_cost_a_write_nothing() -> None:
    spy = Gets()
    tally = TalliedEngine(spy, LAYOUT)  # type: ignore[arg-type]
    write(tally, (key(5, 1, "a"), b"1"))
    assert spy.gets == 0
    tally.count([5])
    write(tally, (key(6, 1, "a"), b"1"), (b"h-other", b"2"))  # not counted / not the layout
    assert spy.gets == 0
    write(tally, (key(5, 1, "a"), b"2"))
    assert spy.gets == 1


OPS = st.lists(
    st.tuples(
        st.sampled_from(["put", "delete", "count"]),
        st.integers(0, 2),  # scope
        st.integers(0, 2),  # uid
        st.sampled_from(["a", "b", "c"]),
        st.binary(max_size=8),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_counted_scopes_always_match_a_recount(ops: list[tuple[str, int, int, str, bytes]]) -> None:
    base = MemoryEngine()
    tally = TalliedEngine(base, LAYOUT)
    for op, scope, uid, name, value in ops:
        if op == "count":
            tally.count([scope])
        else:
            write(tally, (key(scope, uid, name), value if op == "put" else None))
        for s in range(3):
            found = tally.sizes(s)
            assert found is None or found == exact(base, s)


def test_a_count_gives_up_once_the_engine_closes(base: StorageEngine) -> None:
    """The node stops counting before it closes the engine: the scope stays unknown."""
    tally = TalliedEngine(base, LAYOUT)
    write(tally, (key(5, 1, "a"), b"1"))
    tally.close()
    tally.count([5])
    assert tally.sizes(5) is None and tally.counted([5]) == []
    write(tally, (key(5, 1, "b"), b"2"))  # not tracked any more: no change to add
    assert tally.sizes(5) is None
