"""`MemoryEngine`: the in-memory twin of `kv.leveldb.LevelDBEngine` (kv/storage.py's
contract; both pass tests/unit/test_storage_contract.py). Used by the unit, property and
simulation tiers, and to read a snapshot's records before installing it.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from kv.storage import StorageError, WriteBatch, prefix_end

# --- MemoryEngine -------------------------------------------------------------------------


@dataclass
class _Table:
    # Invariant: `keys` is sorted and holds exactly the keys of `values`.
    keys: list[bytes] = field(default_factory=list)
    values: dict[bytes, bytes] = field(default_factory=dict)

    def copy(self) -> _Table:
        return _Table(list(self.keys), dict(self.values))

    def apply(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            if self.values.pop(key, None) is not None:
                del self.keys[bisect.bisect_left(self.keys, key)]
            return
        if key not in self.values:
            bisect.insort(self.keys, key)
        self.values[key] = value

    def iterate(
        self, start: bytes, stop: bytes | None, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        lo = bisect.bisect_left(self.keys, start)
        hi = len(self.keys) if stop is None else bisect.bisect_left(self.keys, stop)
        indices = range(hi - 1, lo - 1, -1) if reverse else range(lo, hi)
        for i in indices:
            key = self.keys[i]
            yield key, self.values[key]


class MemoryEngine:
    """The in-memory twin of LevelDBEngine: same contract, no durability.

    Copy-on-write: `snapshot()` and `iterate()` share the current table and mark it
    frozen; the next `write` copies it first (O(n)), so a frozen table never changes.
    Don't "optimise" by mutating a frozen table: views rely on it for isolation.
    """

    def __init__(self) -> None:
        self._table = _Table()
        self._frozen = False
        self._closed = False
        # Guards _table/_frozen: Raft applies from its own thread while asyncio reads.
        self._lock = threading.Lock()

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        return self._table.values.get(key)

    def write(self, batch: WriteBatch, *, sync: bool = False) -> None:
        ops = batch.ops
        with self._lock:
            self._check_open()
            if self._frozen:
                self._table = self._table.copy()
                self._frozen = False
            for key, value in ops:
                self._table.apply(key, value)

    def iterate(
        self, start: bytes = b"", stop: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        return self._freeze().iterate(start, stop, reverse)

    def iterate_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self.iterate(prefix, prefix_end(prefix))

    def snapshot(self) -> MemorySnapshot:
        return MemorySnapshot(self, self._freeze())

    def close(self) -> None:
        self._closed = True

    def sync(self) -> None:
        self._check_open()

    @property
    def closed(self) -> bool:
        return self._closed

    def _freeze(self) -> _Table:
        with self._lock:
            self._check_open()
            self._frozen = True
            return self._table

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("memory engine is closed")


class MemorySnapshot:
    """A frozen `_Table`; unusable once closed or once its engine is closed (as in LevelDB)."""

    def __init__(self, engine: MemoryEngine, table: _Table) -> None:
        self._engine = engine
        self._table: _Table | None = table

    def get(self, key: bytes) -> bytes | None:
        return self._open_table().values.get(key)

    def iterate(
        self, start: bytes = b"", stop: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        return self._open_table().iterate(start, stop, reverse)

    def iterate_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self.iterate(prefix, prefix_end(prefix))

    def close(self) -> None:
        self._table = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _open_table(self) -> _Table:
        if self._table is None or self._engine.closed:
            raise StorageError("snapshot is closed")
        return self._table
