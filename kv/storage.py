"""The storage boundary: a narrow ordered byte store (pure: protocols and the write batch).

`StorageEngine` is what a node's key-value data goes through (Raft state machines,
Dynamo replicas, tombstone markers, hints; not the Raft journals, the cluster metadata
or the gossip generation file: docs/storage.md lists what is stored where);
`kv.leveldb.LevelDBEngine` is the durable implementation and `kv.memory.MemoryEngine` the
in-memory twin.
Both pass `tests/unit/test_storage_contract.py`.

Contract shared by every engine:

- keys and values are `bytes`; keys compare as unsigned bytes (b"" < b"\\x00" < b"\\xff");
- `write` applies a `WriteBatch` atomically, ops in order (the last op on a key wins);
- an iterator reads one consistent view, taken when `iterate` is called;
- a `Snapshot` is a consistent read-only view that later writes never change;
- after `close()`, every call except `close()` raises `StorageError`.
"""

from __future__ import annotations

from collections.abc import Iterator
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
