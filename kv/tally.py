"""`TalliedEngine`: a `StorageEngine` that keeps an exact running size of the ranges one
subsystem writes (its `Layout`), per (scope, uid) — what partition sizes are read from
(kv/sizes.py, docs/membership.md "Plan sizes").

Why a running count: LevelDB's own estimate (`GetApproximateSizes`, plyvel's
`approximate_sizes`) counts only table files — data still in the memtable (4 MiB by
default) reads as 0 — and counts compressed bytes: 40 000 fresh 139-byte records
(5.5 MB) read 0, and 0.77 MB after a reopen flushed them. Counting by iterating a range is
exact but costs the range's size on every question. So a scope is counted once, by one
scan, the first time it is asked for (`count`), and from then on every write through this
engine adds its change — one `get` per written key of a counted scope, nothing for a scope
never asked for. A scope's count is exact at every instant: the scan reads a snapshot, and
the writes from the moment that snapshot was taken are added to it as they happen.

The counts live in memory; a restarted node counts again when first asked. Writes made to
the underlying engine around this one are not seen: each subsystem writes its ranges
through its own `TalliedEngine` only (dynamo_mode/replica.py's `e` keys, the Raft groups'
`l` keys).

Threads: Raft groups apply on the driver thread, the eventual replica writes on the event
loop, and `count` scans on a worker thread; one lock orders each write's change with its
write (and a count's snapshot with both), and is never held during a scan. Readers never
take it — a write as large as a moved group's deletion must not stall the event loop —
they read the counts each write publishes: a scope's sizes are replaced, never changed in
place, one dict item at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping

from kv.sizes import Layout, Size, record
from kv.storage import Snapshot, StorageEngine, WriteBatch


class TalliedEngine:
    """`engine`, with exact sizes of the scopes of `layout` that were asked for."""

    def __init__(self, engine: StorageEngine, layout: Layout) -> None:
        self._engine = engine
        self.layout = layout
        self._lock = threading.Lock()  # the counts, and each write with its change
        self._counting = threading.Lock()  # one scan at a time
        self._sizes: dict[int, dict[int, Size]] = {}  # scope → uid → size (counted or counting)
        self._published: dict[int, dict[int, Size]] = {}  # counted scopes, for readers
        self._closed = False  # a scan under way gives up

    # ------------------------------------------------------------------ sizes
    def sizes(self, scope: int) -> dict[int, Size] | None:
        """uid → size of `scope` as of the last write; None until `count` counted it."""
        found = self._published.get(scope)
        if found is None:
            return None
        return {uid: s for uid, s in found.items() if s.keys or s.bytes}

    def counted(self, scopes: Iterable[int]) -> list[int]:
        return [s for s in scopes if s in self._published]

    def count(self, scopes: Iterable[int]) -> None:
        """Count the scopes not counted yet, by one scan of a snapshot (blocking: call it
        on a worker thread); afterwards `sizes` answers for them."""
        with self._counting:
            with self._lock:
                todo = sorted({s for s in scopes if s not in self._published})
                if not todo:
                    return
                snap = self._engine.snapshot()
                for scope in todo:  # from now on, writes add their change
                    self._sizes[scope] = {}
            try:
                for scope in todo:
                    self._merge(scope, self._scan(snap, scope))
            except _Closed:
                self._forget(todo)
            except BaseException:
                self._forget(todo)
                raise
            finally:
                snap.close()

    def _forget(self, scopes: Iterable[int]) -> None:
        """Stop tracking scopes whose count did not finish (they stay unknown)."""
        with self._lock:
            for scope in scopes:
                if scope not in self._published:
                    self._sizes.pop(scope, None)

    def _scan(self, snap: Snapshot, scope: int) -> dict[int, Size]:
        found: dict[int, Size] = {}
        for key, value in snap.iterate(*self.layout.range(scope)):
            if self._closed:
                raise _Closed
            where = self.layout.locate(key)
            if where is not None:
                found[where[1]] = found.get(where[1], Size()) + record(key, value)
        return found

    def _merge(self, scope: int, found: Mapping[int, Size]) -> None:
        with self._lock:
            sizes = self._sizes[scope]
            for uid, size in found.items():
                sizes[uid] = sizes.get(uid, Size()) + size
            self._published[scope] = dict(sizes)

    # ------------------------------------------------------------------ StorageEngine
    def write(self, batch: WriteBatch, *, sync: bool = False) -> None:
        with self._lock:
            changes = self._changes(batch) if self._sizes else ()
            self._engine.write(batch, sync=sync)
            for scope, uid, before, after in changes:
                sizes = self._sizes[scope]
                sizes[uid] = sizes.get(uid, Size()) + after - before
            for scope in {scope for scope, *_ in changes if scope in self._published}:
                self._published[scope] = dict(self._sizes[scope])

    def _changes(self, batch: WriteBatch) -> list[tuple[int, int, Size, Size]]:
        """(scope, uid, size before, size after) of each key the batch writes in a counted
        (or counting) scope; the last op on a key is the one that counts."""
        final: dict[bytes, bytes | None] = {}
        for key, value in batch.ops:
            final[key] = value
        out = []
        for key, value in final.items():
            where = self.layout.locate(key)
            if where is not None and where[0] in self._sizes:
                before = record(key, self._engine.get(key))
                out.append((*where, before, record(key, value)))
        return out

    def get(self, key: bytes) -> bytes | None:
        return self._engine.get(key)

    def iterate(
        self, start: bytes = b"", stop: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        return self._engine.iterate(start, stop, reverse=reverse)

    def iterate_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self._engine.iterate_prefix(prefix)

    def snapshot(self) -> Snapshot:
        return self._engine.snapshot()

    def sync(self) -> None:
        self._engine.sync()

    def close(self) -> None:
        """Stop counting: a scan under way gives up, its scopes stay unknown. The
        underlying engine belongs to the node, which closes it (after this)."""
        self._closed = True


class _Closed(Exception):
    """A scan gave up: the engine is being closed."""
