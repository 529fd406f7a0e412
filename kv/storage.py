"""The storage boundary: a narrow ordered byte store and its in-memory twin.

`StorageEngine` is what a node's key-value data goes through (Raft state machines,
Dynamo replicas, tombstone markers, hints; not the Raft journals, the cluster metadata
or the gossip generation file: docs/storage.md lists what is stored where);
`kv.leveldb.LevelDBEngine` is the durable implementation and `MemoryEngine` the twin.
Both pass `tests/unit/test_storage_contract.py`.

Contract shared by every engine:

- keys and values are `bytes`; keys compare as unsigned bytes (b"" < b"\\x00" < b"\\xff");
- `write` applies a `WriteBatch` atomically, ops in order (the last op on a key wins);
- an iterator reads one consistent view, taken when `iterate` is called;
- a `Snapshot` is a consistent read-only view that later writes never change;
- after `close()`, every call except `close()` raises `StorageError`.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self


class StorageError(Exception):
    """The store cannot serve the call (closed, locked by another process, I/O, corruption).

    Not retryable by the request path: the node must be repaired or restarted.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


def prefix_end(prefix: bytes) -> bytes | None:
    """Smallest key greater than every key starting with `prefix`; None if there is none.

    None means "no upper bound": the prefix is empty or all 0xff.
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


class WriteBatch:
    """An ordered list of puts and deletes, applied by `StorageEngine.write` as one unit."""

    __slots__ = ("_ops",)

    def __init__(self) -> None:
        self._ops: list[tuple[bytes, bytes | None]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self._ops.append((_require_bytes("key", key), _require_bytes("value", value)))

    def delete(self, key: bytes) -> None:
        self._ops.append((_require_bytes("key", key), None))

    @property
    def ops(self) -> tuple[tuple[bytes, bytes | None], ...]:
        """(key, value) in insertion order; value None is a delete."""
        return tuple(self._ops)

    def __len__(self) -> int:
        return len(self._ops)

    def __repr__(self) -> str:
        return f"WriteBatch({len(self._ops)} ops)"


def _require_bytes(name: str, data: object) -> bytes:
    # Checked when the batch is built, so a bad op can never fail a write half-way.
    if type(data) is not bytes:
        raise TypeError(f"{name} must be bytes, got {type(data).__name__}")
    return data


class ReadView(Protocol):
    """The read half shared by engines and snapshots (what a state machine reads through)."""

    def get(self, key: bytes) -> bytes | None: ...

    def iterate(
        self, start: bytes = b"", stop: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) for keys in [start, stop) in byte order (descending if reverse)."""
        ...

    def iterate_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: ...


class Snapshot(ReadView, Protocol):
    """A consistent read-only view; release it with `close()` or a `with` block."""

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class StorageEngine(ReadView, Protocol):
    def write(self, batch: WriteBatch, *, sync: bool = False) -> None:
        """Apply every op of `batch` or none; with sync=True, fsync before returning."""
        ...

    def snapshot(self) -> Snapshot: ...

    def close(self) -> None:
        """Release the store; idempotent. Must not race with other calls on this engine."""
        ...

    def sync(self) -> None:
        """Flush acknowledged writes to disk (see docs/storage.md for what this covers)."""
        ...


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
