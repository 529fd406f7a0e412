"""The state machine of one linearizable partition's Raft group: pure apply (DESIGN.md §3).

`apply(view, partition, index, raw)` reads through `view` only and returns the WriteBatch
to write and the result to hand back to the proposer; the driver writes the batch, then
delivers the result (decide, then do: STYLE.md rules 1 and 2). No I/O, threads or clocks.

Storage layout: one Raft group per (partition, replication factor), all of its state under
one prefix, so a snapshot is the range `group_range(p)`. `p` is the group number
`replication << 16 | partition` (raft_groups.placement.GroupSpec.number), so the groups of
one partition for two replication factors never share bookkeeping:

    G = group_prefix(p) = b"l" + p (3 bytes BE)
    G + uid (4 bytes BE, >= 1) + key (UTF-8)  -> JSON {"value": ..., "version": n,
                                                       "expires_at"?: ms} (layout.Record)
    G + b"\\0\\0\\0\\0" + b"applied"             -> applied index (8 bytes BE)
    G + b"\\0\\0\\0\\0" + b"rid/" + request_id   -> JSON {"index": i, "result": {...}, "fp": f}
    G + b"\\0\\0\\0\\0" + b"rix/" + i (8 bytes BE) -> request_id (the same entry, by index)
    G + b"\\0\\0\\0\\0" + b"mig/" + uid (4 bytes BE) -> b"1": uid's data is migrated here
    G + b"\\0\\0\\0\\0" + b"frz/" + uid (4 bytes BE) -> the freezing switch's epoch (ASCII
        digits; b"1" from before epochs were kept): uid takes no more writes here
    G + b"\\0\\0\\0\\0" + b"horizon", b"exp/"...    -> key expiry (raft_groups/expiry.py)

uid 0 is never a keyspace (commands.Command refuses it), so the bookkeeping area cannot
collide with data. Invariant of the dedupe table: every "rid/" entry has exactly one "rix/"
entry, at the index stored in it, and vice versa.

Versions: 1 on creation, +1 per put; an absent key is version 0, so a delete resets it and
the next put creates version 1 again. An expired record (its `expires_at` at or below the
group's expiry horizon) is absent in every respect — reads, listings, `if_version`, the
version a put creates — whether or not an `expire` has deleted it yet. See
docs/raft_state_machine.md and docs/ttl.md.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from kv import json_codec
from kv.listing import scan_range
from kv.sizes import Layout
from kv.storage import ReadView, StorageError, WriteBatch, prefix_end
from raft_groups import expiry
from raft_groups.commands import MAX_UID, Command, decode, fingerprint, item_expiry
from raft_groups.layout import (
    BOOKKEEPING,
    MAX_PARTITION,
    Record,
    bookkeeping_key,
    data_key,
    dump_record,
    group_prefix,
    group_range,
    load_json,
    load_record,
)

__all__ = ["MAX_PARTITION", "Record", "group_prefix", "group_range"]  # re-exported

Result = dict[str, Any]
# Request ids are remembered for this many log indexes after their first application; a
# retry arriving later is applied again. The Raft thesis (§6.3) expires per client session; we
# have no sessions, so the window is in log positions (deterministic on every replica).
RETAIN_REQUESTS = 100_000
# Expired entries deleted per apply: bounded so apply stays O(1). Each apply adds at most
# one entry and removes up to this many expired ones, so the backlog drains.
EXPIRE_PER_APPLY = 4

LAYOUT = Layout(b"l", 3)  # group | uid (0: bookkeeping): what group sizes count (kv/tally.py)
_INDEX_BYTES = 8


def applied_index(view: ReadView, partition: int) -> int:
    """The index of the last applied log entry; 0 when nothing was ever applied."""
    raw = view.get(_applied_key(partition))
    if raw is None:
        return 0
    if len(raw) != _INDEX_BYTES:
        raise StorageError(f"partition {partition}: applied index has {len(raw)} bytes")
    return int.from_bytes(raw, "big")


def read(view: ReadView, partition: int, uid: int, key: str) -> tuple[Any, int] | None:
    """(value, version) of `key` in keyspace incarnation `uid`; None when absent."""
    record = read_record(view, partition, uid, key)
    return None if record is None else (record.value, record.version)


def read_record(view: ReadView, partition: int, uid: int, key: str) -> Record | None:
    """The record of `key` in keyspace incarnation `uid`, with its expiry; None when absent
    (never written, deleted, or expired). A record with an expiry is judged by the horizon
    read from `view` too: pass a view of one state (a snapshot) when entries may be applied
    meanwhile (raft_groups/manager.py `RaftGroups.read`)."""
    found = stored_record(view, partition, uid, key)
    if found is None or found.expires_at is None:
        return found
    return expiry.live(found, expiry.horizon(view, partition))


def stored_record(view: ReadView, partition: int, uid: int, key: str) -> Record | None:
    """The record stored for `key`, expired or not."""
    _check_uid(uid)
    return _load_record(view, data_key(partition, uid, key))


def keys(
    view: ReadView, partition: int, uid: int, prefix: str, after: str | None, limit: int
) -> list[str]:
    """Up to `limit` keys of keyspace incarnation `uid` that start with `prefix`, after
    `after`, in order (a key listing's slice, kv/listing.py); expired keys are skipped."""
    _check_uid(uid)
    base = group_prefix(partition) + uid.to_bytes(4, "big")
    bounds = scan_range(prefix, after)
    if bounds is None:
        return []
    stop = prefix_end(base) if bounds[1] is None else base + bounds[1]
    at = expiry.horizon(view, partition)
    found = (
        raw
        for raw, value in view.iterate(base + bounds[0], stop)
        if not (b'"expires_at"' in value and expiry.expired(load_record(value, raw), at))
    )
    return [raw[len(base) :].decode() for raw in itertools.islice(found, limit)]


def apply(
    view: ReadView, partition: int, index: int, raw: bytes
) -> tuple[WriteBatch, Result | None]:
    """The batch and result of log entry `index`; never raises on a malformed `raw`.

    Invariant (DESIGN.md §3, idempotent crash-safe apply): every returned non-empty batch
    writes APPLIED = index with the entry's effects, so they are durable together. An entry
    at or below the applied index is already in state: journal replay after a restart gets
    (empty batch, None) and never applies a CAS or delete twice.
    """
    if type(index) is not int or index < 1:
        raise ValueError(f"index must be a positive integer, got {index!r}")
    if index <= applied_index(view, partition):
        return WriteBatch(), None
    batch = WriteBatch()
    # Expiry goes first: a re-used expired request id below must overwrite what it deletes.
    _expire_requests(view, partition, index, batch)
    result = _apply_entry(view, partition, index, raw, batch)
    batch.put(_applied_key(partition), index.to_bytes(_INDEX_BYTES, "big"))
    return batch, result


def _apply_entry(
    view: ReadView, partition: int, index: int, raw: bytes, batch: WriteBatch
) -> Result:
    # Apply runs in log order on every replica: bad input must be a deterministic no-op.
    try:
        cmd = decode(raw)
    except ValueError as exc:
        return {"ok": False, "code": "invalid_command", "message": str(exc)}
    if cmd.op in ("put", "delete") and frozen(view, partition, cmd.uid):
        # the keyspace is switching to eventual: its state here is final (refused before
        # the dedupe table, like the guard below)
        return {"ok": False, "code": "frozen"}
    if cmd.guard and not migrated(view, partition, cmd.uid):
        # A switching keyspace's data is not here yet (docs/mode_switch.md): refused before
        # the dedupe table, so a retry after the migration applies.
        return {"ok": False, "code": "not_migrated"}
    if not cmd.request_id:
        return _execute(view, partition, cmd, batch)
    seen = _load_request(view, partition, cmd.request_id)
    fp = fingerprint(cmd)
    if seen is not None and index - seen.index < RETAIN_REQUESTS:
        if seen.fp is not None and seen.fp != fp:
            # the id names another command: answering with that one's result would report
            # this write done when it was never made (issue 11 item 5)
            return {
                "ok": False,
                "code": "request_id_conflict",
                "message": f"request_id {cmd.request_id!r} was used for a different "
                "command (keyspace, key, operation, value or condition); use a new id",
            }
        # Raft §8 (client interaction): a retry returns the first result even if the state has
        # changed since; applying it again would repeat a write whose reply was lost.
        return seen.result
    if seen is not None:  # expired but not yet swept: drop its index entry before re-use
        batch.delete(_rix_key(partition, seen.index))
    result = _execute(view, partition, cmd, batch)
    _remember_request(partition, cmd.request_id, index, result, fp, batch)
    return result


def _execute(view: ReadView, partition: int, cmd: Command, batch: WriteBatch) -> Result:
    if cmd.op == "barrier":
        return {"ok": True}
    if cmd.op == "expire":
        return expiry.expire(view, partition, cmd.now, batch)
    if cmd.op == "migrate":
        return _migrate(view, partition, cmd, batch)
    if cmd.op == "freeze":
        # the latest switch's epoch wins: a retried older freeze must not lower it
        since = max(cmd.since, frozen_since(view, partition, cmd.uid) or 0)
        batch.put(_marker(partition, b"frz/", cmd.uid), str(since).encode())
        return {"ok": True, "migrated": migrated(view, partition, cmd.uid)}
    if cmd.op == "purge":
        return _purge(view, partition, cmd.uid, batch)
    key = data_key(partition, cmd.uid, cmd.key)
    stored = _load_record(view, key)
    current = expiry.live(stored, expiry.horizon(view, partition))  # expired: absent
    version = 0 if current is None else current.version
    if cmd.if_version is not None and cmd.if_version != version:
        return {"ok": False, "code": "condition_failed", "current_version": version}
    old = None if stored is None else stored.expires_at
    if cmd.op == "put":
        new = cmd.expires_at()
        batch.put(key, dump_record(Record(cmd.value, version + 1, new)))
        expiry.reindex(batch, partition, cmd.uid, cmd.key, old, new)
        return {"ok": True, "version": version + 1}
    if stored is not None:
        batch.delete(key)
        expiry.reindex(batch, partition, cmd.uid, cmd.key, old, None)
    return {"ok": True, "version": 0, "existed": current is not None}


def migrated(view: ReadView, partition: int, uid: int) -> bool:
    """Whether this partition's data of keyspace `uid` was migrated here (a switch)."""
    return view.get(_migrated_key(partition, uid)) is not None


def frozen(view: ReadView, partition: int, uid: int) -> bool:
    """Whether keyspace `uid` takes no more writes here (a switch to eventual, or a
    cancelled switch to linearizable)."""
    return view.get(_marker(partition, b"frz/", uid)) is not None


def frozen_since(view: ReadView, partition: int, uid: int) -> int | None:
    """The epoch of the switch that froze `uid` here (0: frozen before epochs were kept),
    or None if it is not frozen."""
    raw = view.get(_marker(partition, b"frz/", uid))
    if raw is None:
        return None
    # b"1": written before the epoch was kept (no switch commits at epoch 1, the bootstrap)
    return int(raw) if raw.isdigit() and raw != b"1" else 0


def records(view: ReadView, partition: int, uid: int) -> list[tuple[str, Any, int]]:
    """Every (key, value, version) of keyspace `uid` in this group, in key order; expired
    keys are absent."""
    return [(key, r.value, r.version) for key, r in entries(view, partition, uid)]


def entries(view: ReadView, partition: int, uid: int) -> list[tuple[str, Record]]:
    """Every (key, record) of keyspace `uid` in this group, in key order, with its expiry;
    expired keys are absent (what a switch to eventual copies, docs/ttl.md)."""
    start = group_prefix(partition) + uid.to_bytes(4, "big")
    skip, at = len(start), expiry.horizon(view, partition)
    found = ((raw_key, load_record(raw, raw_key)) for raw_key, raw in view.iterate_prefix(start))
    return [(raw_key[skip:].decode(), r) for raw_key, r in found if not expiry.expired(r, at)]


PURGE_BATCH = 1000  # records one purge command deletes


def _purge(view: ReadView, partition: int, uid: int, batch: WriteBatch) -> Result:
    """Delete up to PURGE_BATCH of `uid`'s records; with the last, its migrated mark too.
    The freeze stays: a node still routing by metadata from before the switch must keep
    being refused, not write into a purged state nobody reads (commands.py)."""
    start = group_prefix(partition) + uid.to_bytes(4, "big")
    found = list(itertools.islice(view.iterate(start, prefix_end(start)), PURGE_BATCH + 1))
    for raw_key, raw in found[:PURGE_BATCH]:
        batch.delete(raw_key)
        old = load_record(raw, raw_key).expires_at
        expiry.reindex(batch, partition, uid, raw_key[len(start) :].decode(), old, None)
    done = len(found) <= PURGE_BATCH
    if done:
        batch.delete(_migrated_key(partition, uid))
    return {"ok": True, "purged": min(len(found), PURGE_BATCH), "done": done}


def _migrate(view: ReadView, partition: int, cmd: Command, batch: WriteBatch) -> Result:
    """Create each item whose key has no record (create-only: a value already here came
    through the log after the switch and wins), then, with `mark`, record the migration.
    Once marked, later migrate commands (another node migrating the same partition) are
    no-ops, so guarded client writes — all ordered after the mark — are never overwritten.
    """
    since = frozen_since(view, partition, cmd.uid)
    if since is not None and since >= cmd.since:
        # a switch that was cancelled (or this keyspace's data left for eventual): its
        # migrator, on metadata from before, must not mark the partition migrated again
        return {"ok": False, "code": "frozen"}
    if migrated(view, partition, cmd.uid):
        return {"ok": True, "migrated": 0, "already": True}
    created: set[str] = set()  # a key given twice: its first value
    at = expiry.horizon(view, partition)
    for item in cmd.items:
        key, value, expires = item[0], item[1], item_expiry(item)
        where = data_key(partition, cmd.uid, key)
        stored = _load_record(view, where)
        if key not in created and expiry.live(stored, at) is None:
            batch.put(where, dump_record(Record(value, 1, expires)))
            old = None if stored is None else stored.expires_at
            expiry.reindex(batch, partition, cmd.uid, key, old, expires)
            created.add(key)
    if cmd.mark:
        batch.put(_migrated_key(partition, cmd.uid), b"1")
        if since is not None:  # an older switch's freeze: this newer switch takes over
            batch.delete(_marker(partition, b"frz/", cmd.uid))
    return {"ok": True, "migrated": len(created), "kept": len(cmd.items) - len(created)}


# --- request dedupe table ------------------------------------------------------------------


@dataclass(frozen=True)
class _Seen:
    index: int
    result: Result
    fp: str | None  # commands.fingerprint; None in entries written before it was kept


def _load_request(view: ReadView, partition: int, request_id: str) -> _Seen | None:
    raw = view.get(_rid_key(partition, request_id.encode()))
    if raw is None:
        return None
    entry = load_json(raw, f"request {request_id!r}")
    return _Seen(entry["index"], entry["result"], entry.get("fp"))


def _remember_request(
    partition: int, request_id: str, index: int, result: Result, fp: str, batch: WriteBatch
) -> None:
    rid = request_id.encode()
    entry = {"index": index, "result": result, "fp": fp}
    batch.put(_rid_key(partition, rid), json_codec.dumps(entry))
    batch.put(_rix_key(partition, index), rid)


def _expire_requests(view: ReadView, partition: int, index: int, batch: WriteBatch) -> None:
    """Delete up to EXPIRE_PER_APPLY entries first applied at or before index - RETAIN."""
    horizon = index - RETAIN_REQUESTS
    if horizon < 1:
        return
    start = _rix_key(partition, 0)
    stop = _rix_key(partition, horizon + 1)
    for n, (rix, rid) in enumerate(view.iterate(start, stop)):
        if n == EXPIRE_PER_APPLY:
            break
        batch.delete(rix)
        batch.delete(_rid_key(partition, rid))


# --- keys and records ----------------------------------------------------------------------


def _applied_key(partition: int) -> bytes:
    return group_prefix(partition) + BOOKKEEPING + b"applied"


def _rid_key(partition: int, request_id: bytes) -> bytes:
    return bookkeeping_key(partition, b"rid/" + request_id)


def _migrated_key(partition: int, uid: int) -> bytes:
    return _marker(partition, b"mig/", uid)


def _marker(partition: int, kind: bytes, uid: int) -> bytes:
    return bookkeeping_key(partition, kind + uid.to_bytes(4, "big"))


def _rix_key(partition: int, index: int) -> bytes:
    return bookkeeping_key(partition, b"rix/" + index.to_bytes(_INDEX_BYTES, "big"))


def _load_record(view: ReadView, key: bytes) -> Record | None:
    """The stored record, expired or not."""
    raw = view.get(key)
    return None if raw is None else load_record(raw, key)


def _check_uid(uid: int) -> None:
    if type(uid) is not int or not 1 <= uid <= MAX_UID:
        raise ValueError(f"uid must be in 1..{MAX_UID}, got {uid!r}")
