"""Key expiry (TTL) in a linearizable partition's state machine (docs/ttl.md). Pure.

A put with a time to live carries `ttl_ms` and `now`, the clock of the leader that proposed
it (raft_groups/frontend.py sends such a write to the leader); its record keeps
`expires_at = now + ttl_ms`. Whether a key has expired is decided by the log, never by a
replica's clock: each group keeps an **expiry horizon** H, moved only by `expire` commands
(proposed by the group's leader with its clock, raft_groups/expirer.py) and never down:

    a record whose expires_at ≤ H is absent — to reads, listings, conditions, versions.

Reads are served from applied state after ReadIndex, so an expiry takes effect at one
point of the log like any write: every read after it sees the key absent, including reads
after a leader whose clock is slower takes over (its `expire` carries a smaller `now`; H
stays). The price: a key stays readable after its expiry until the leader's next `expire`
applies (the expirer's interval plus one commit).

Storage, under the group's bookkeeping (raft_groups/layout.py):

    G + 0000 + b"horizon"                                     -> H (8 bytes BE)
    G + 0000 + b"exp/" + expires_at (8 BE) + uid (4 BE) + key -> b""   (the expiry index)

Invariant: every record with an `expires_at` has exactly one index entry, at that expiry,
and every entry names such a record. `reindex` keeps it on each write of a record (put,
delete, migrate, purge); `expire` deletes a record and its entry together. So `expire`
finds the records at or below H in index order, O(expired), and deletes at most
EXPIRE_BATCH of them per command (the expirer proposes again while `more`).
"""

from __future__ import annotations

import itertools
from typing import Any

from kv.storage import ReadView, StorageError, WriteBatch
from raft_groups.layout import Record, bookkeeping_key, group_prefix

HORIZON = b"horizon"
INDEX = b"exp/"
EXPIRE_BATCH = 1000  # expired records one `expire` command deletes
_MS_BYTES = 8

Result = dict[str, Any]


def horizon(view: ReadView, partition: int) -> int:
    """The group's expiry horizon (ms since the epoch); 0 before any `expire`."""
    raw = view.get(bookkeeping_key(partition, HORIZON))
    if raw is None:
        return 0
    if len(raw) != _MS_BYTES:
        raise StorageError(f"partition {partition}: expiry horizon has {len(raw)} bytes")
    return int.from_bytes(raw, "big")


def expired(record: Record, at: int) -> bool:
    """Whether `record` is absent under horizon `at`."""
    return record.expires_at is not None and record.expires_at <= at


def live(record: Record | None, at: int) -> Record | None:
    return None if record is None or expired(record, at) else record


def next_expiry(view: ReadView, partition: int) -> int | None:
    """The earliest expiry of a record still stored (expired or not); None if none has one.
    What the leader's expirer compares with its clock to decide whether to propose."""
    start = _index_prefix(partition)
    for entry, _ in view.iterate(start, _index_stop(partition)):
        return int.from_bytes(entry[len(start) : len(start) + _MS_BYTES], "big")
    return None


def reindex(
    batch: WriteBatch, partition: int, uid: int, key: str, old: int | None, new: int | None
) -> None:
    """Keep the index in step with a record of `key` whose expiry goes from `old` to `new`
    (None: no record, or no expiry)."""
    if old == new:
        return
    if old is not None:
        batch.delete(_index_key(partition, old, uid, key))
    if new is not None:
        batch.put(_index_key(partition, new, uid, key), b"")


def expire(view: ReadView, partition: int, now: int, batch: WriteBatch) -> Result:
    """An `expire` command: the horizon becomes max(H, now); up to EXPIRE_BATCH records at or
    below it are deleted with their index entries, in expiry order."""
    at = max(horizon(view, partition), now)
    batch.put(bookkeeping_key(partition, HORIZON), at.to_bytes(_MS_BYTES, "big"))
    start = _index_prefix(partition)
    stop = start + (at + 1).to_bytes(_MS_BYTES, "big")
    due = list(itertools.islice(view.iterate(start, stop), EXPIRE_BATCH + 1))
    for entry, _ in due[:EXPIRE_BATCH]:
        batch.delete(entry)
        batch.delete(group_prefix(partition) + entry[len(start) + _MS_BYTES :])  # uid + key
    return {
        "ok": True,
        "horizon": at,
        "expired": min(len(due), EXPIRE_BATCH),
        "more": len(due) > EXPIRE_BATCH,
    }


def _index_prefix(partition: int) -> bytes:
    return bookkeeping_key(partition, INDEX)


def _index_stop(partition: int) -> bytes:
    return bookkeeping_key(partition, INDEX[:-1] + bytes([INDEX[-1] + 1]))


def _index_key(partition: int, expires_at: int, uid: int, key: str) -> bytes:
    stamp = expires_at.to_bytes(_MS_BYTES, "big")
    return _index_prefix(partition) + stamp + uid.to_bytes(4, "big") + key.encode()
