"""LevelDBEngine: the durable `StorageEngine`. The only module that imports plyvel.

plyvel's exceptions (`plyvel.Error` and its IOError/CorruptionError subclasses, and the
RuntimeError it raises on a closed database, snapshot or iterator) stop here and
become `StorageError` naming the database path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self

import plyvel

from kv.files import sync_dir
from kv.storage import StorageError, WriteBatch, prefix_end

_PLYVEL_ERRORS = (plyvel.Error, RuntimeError)


def _describe(exc: BaseException) -> str:
    # plyvel carries LevelDB's Status message as bytes.
    arg = exc.args[0] if exc.args else exc
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


def _failed(path: str, doing: str, exc: BaseException) -> StorageError:
    return StorageError(f"LevelDB at {path}: {doing} failed: {_describe(exc)}", path=path)


@contextmanager
def _mapped(path: str, doing: str) -> Iterator[None]:
    """plyvel's errors as `StorageError`; `get` and `write`, on every request's path, do the
    same with a plain try (a generator-based context manager costs about a microsecond)."""
    try:
        yield
    except _PLYVEL_ERRORS as exc:
        raise _failed(path, doing, exc) from exc


def _iterate(
    reader: Any, path: str, start: bytes, stop: bytes | None, reverse: bool
) -> Iterator[tuple[bytes, bytes]]:
    """Iterate [start, stop) of a plyvel DB or Snapshot; the plyvel iterator is made now.

    plyvel 1.5.1 yields nothing for a reverse scan with `start` whose highest key in range
    equals `start` (`Iterator.real_prev` tests `start >= key`), so a reverse scan passes
    plyvel only `stop` and ends at `start` here.
    """
    with _mapped(path, "iterate"):
        if reverse:
            raw = reader.iterator(stop=stop, reverse=True)
        else:
            raw = reader.iterator(start=start, stop=stop)
    return _drain(raw, path, start if reverse else None)


def _drain(raw: Any, path: str, floor: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    # Closing the generator (exhaustion, .close() or GC) closes the LevelDB iterator.
    with raw, _mapped(path, "iterate"):
        for key, value in raw:
            if floor is not None and key < floor:
                return
            yield key, value


def _fsync_if_present(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LevelDBEngine:
    """A LevelDB database directory at `path`, exclusively locked while open."""

    def __init__(self, path: str | os.PathLike[str], *, create_if_missing: bool = True) -> None:
        self._path = os.fspath(path)
        with _mapped(self._path, "open"):
            self._db: Any = plyvel.DB(self._path, create_if_missing=create_if_missing)
        self._synced_logs: set[str] = set()  # the write-ahead logs `sync` found last time

    @property
    def path(self) -> str:
        return self._path

    @property
    def closed(self) -> bool:
        return bool(self._db.closed)

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._db.get(key)
        except _PLYVEL_ERRORS as exc:
            raise _failed(self._path, "get", exc) from exc
        return value

    def write(self, batch: WriteBatch, *, sync: bool = False) -> None:
        try:
            # transaction=True: an exception while filling the batch writes nothing.
            with self._db.write_batch(transaction=True, sync=sync) as wb:
                for key, value in batch.ops:
                    if value is None:
                        wb.delete(key)
                    else:
                        wb.put(key, value)
        except _PLYVEL_ERRORS as exc:
            raise _failed(self._path, "write", exc) from exc

    def iterate(
        self, start: bytes = b"", stop: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        return _iterate(self._db, self._path, start, stop, reverse)

    def iterate_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self.iterate(prefix, prefix_end(prefix))

    def snapshot(self) -> LevelDBSnapshot:
        with _mapped(self._path, "snapshot"):
            return LevelDBSnapshot(self._db.snapshot(), self._path)

    def sync(self) -> None:
        """Every write made so far is on disk when this returns. An empty synced batch
        fsyncs LevelDB's current write-ahead log; LevelDB does not sync a log it switches
        away from (docs/storage.md: the caveat), so every `*.log` still in the directory is
        fsynced too — LevelDB hands each write to the OS before it returns, so an fsync of
        the file covers it — and the directory, when a log appeared since the last sync. A
        log deleted meanwhile was compacted into a table file, which LevelDB syncs."""
        with _mapped(self._path, "sync"):
            self._db.write_batch(sync=True).write()
        try:
            logs = {name for name in os.listdir(self._path) if name.endswith(".log")}
            for name in sorted(logs):
                _fsync_if_present(os.path.join(self._path, name))
            if logs - self._synced_logs:
                sync_dir(self._path)
        except OSError as exc:
            raise StorageError(
                f"LevelDB at {self._path}: sync failed: {exc}", path=self._path
            ) from exc
        self._synced_logs = logs

    def close(self) -> None:
        # plyvel's close is idempotent and also closes this DB's iterators and snapshots.
        self._db.close()

    def __repr__(self) -> str:
        return f"LevelDBEngine({self._path!r})"


class LevelDBSnapshot:
    """A LevelDB snapshot; unusable once closed or once its engine is closed."""

    def __init__(self, snap: Any, path: str) -> None:
        self._snap = snap
        self._path = path

    def get(self, key: bytes) -> bytes | None:
        with _mapped(self._path, "snapshot get"):
            value: bytes | None = self._snap.get(key)
        return value

    def iterate(
        self, start: bytes = b"", stop: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        return _iterate(self._snap, self._path, start, stop, reverse)

    def iterate_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self.iterate(prefix, prefix_end(prefix))

    def close(self) -> None:
        # Idempotent, and harmless after the engine closed (plyvel checks both).
        self._snap.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
