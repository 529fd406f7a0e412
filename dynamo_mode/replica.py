"""A node's local replica of eventual keyspaces: versions stored in the StorageEngine.

Storage layout (keyspace is a key prefix inside a partition, DESIGN.md §2):

    b"e" | partition (2 bytes BE) | keyspace uid (4 bytes BE) | key (UTF-8)  →  JSON [wire versions]

so one partition's data is one contiguous range (what anti-entropy walks), and a keyspace
re-created under the same name (new uid) never sees the old incarnation. Hints this node
holds as a fallback for other nodes (Dynamo §4.6) live apart, under `dynamo_mode.hints`'
`b"h"` key space: they are not replica data, are never fetched for a read and never enter
a Merkle tree. Tombstone markers (`b"g"`) and expiry markers (`b"t"`, dynamo_mode/expiry.py)
are written in the same batch as the versions they index.

Invariant: what is stored for a key is always `reconcile(...)` of everything this replica
has been sent, so storing is commutative, associative and idempotent (a CRDT merge). Each
read-modify-write below runs without an `await`, so it is atomic on the event loop.
"""

from __future__ import annotations

import itertools
import json
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dynamo_mode import expiry, hints, merkle, siblings
from dynamo_mode.siblings import Version
from dynamo_mode.vclock import Dot, VClock
from kv import json_codec
from kv.internode import array
from kv.listing import scan_range
from kv.sizes import Layout
from kv.storage import StorageEngine, WriteBatch, prefix_end

PREFIX = b"e"
LAYOUT = Layout(PREFIX, 2)  # partition | uid: what partition sizes count (kv/tally.py)
GC_PREFIX = b"g"  # tombstone markers: b"g" | storage key → when it became tombstone-only
ACTOR_KEY = b"a/actor"  # the causal actor this store mints dots as (see `local_actor`)
Vs = tuple[Version, ...]


@dataclass(frozen=True)
class KeyRef:
    partition: int
    uid: int  # keyspace incarnation
    key: str

    def storage_key(self) -> bytes:
        return PREFIX + struct.pack(">HI", self.partition, self.uid) + self.key.encode()

    def to_wire(self) -> dict[str, Any]:
        return {"partition": self.partition, "uid": self.uid, "key": self.key}

    @staticmethod
    def from_storage_key(raw: bytes) -> KeyRef:
        if not raw.startswith(PREFIX) or len(raw) < 7:
            raise ValueError(f"not an eventual-mode storage key: {raw[:16]!r}")
        partition, uid = struct.unpack_from(">HI", raw, 1)
        return KeyRef(partition, uid, raw[7:].decode())

    @staticmethod
    def from_wire(d: Any) -> KeyRef:
        if not isinstance(d, dict):
            raise ValueError("ref must be an object")
        partition, uid, key = d.get("partition"), d.get("uid"), d.get("key")
        if (
            isinstance(partition, bool)
            or not isinstance(partition, int)
            or not 0 <= partition < 1 << 16
        ):
            raise ValueError(f"ref.partition invalid: {partition!r}")
        if isinstance(uid, bool) or not isinstance(uid, int) or not 0 <= uid < 1 << 32:
            raise ValueError(f"ref.uid invalid: {uid!r}")
        if not isinstance(key, str):
            raise ValueError("ref.key must be a string")
        return KeyRef(partition, uid, key)


def encode_versions(versions: tuple[Version, ...]) -> bytes:
    return json_codec.dumps([v.to_wire() for v in versions])


def decode_versions(raw: Any) -> tuple[Version, ...]:
    """Versions from the network: every field checked (`Version.from_wire`)."""
    return tuple(Version.from_wire(v) for v in array(raw, "versions"))


def decode_stored(raw: bytes) -> tuple[Version, ...]:
    """Versions as this node stored them (`encode_versions` of checked versions)."""
    return tuple(Version.from_storage(v) for v in json_codec.loads(raw))


def _prefix_end(prefix: bytes) -> bytes:
    end = prefix_end(prefix)
    assert end is not None  # a prefix starting with b"e" always has an end
    return end


def local_actor(engine: StorageEngine, node_id: str, incarnation: int) -> str:
    """The causal actor of this node's store, kept in the store itself.

    A store that already holds eventual data from before actors were recorded keeps
    `node_id`. A fresh store — a new node, or one whose data directory was wiped — gets
    `node_id@incarnation`, so dots it mints never collide with dots its earlier self minted
    and peers still hold (a reused actor's new writes would be silently dominated: Riak
    riak_kv#679)."""
    stored = engine.get(ACTOR_KEY)
    if stored is not None:
        return stored.decode()
    has_data = next(iter(engine.iterate_prefix(PREFIX)), None) is not None
    actor = node_id if has_data else f"{node_id}@{incarnation}"
    batch = WriteBatch()
    batch.put(ACTOR_KEY, actor.encode())
    engine.write(batch, sync=True)
    return actor


def _after(prefix: bytes, after: KeyRef | None) -> tuple[bytes, bytes]:
    """[start, stop) of the keys `prefix | storage key` past `after`'s (all: None)."""
    start = prefix + after.storage_key() + b"\0" if after is not None else prefix
    return start, _prefix_end(prefix)


def partition_prefix(partition: int) -> bytes:
    return PREFIX + struct.pack(">H", partition)


class DynamoReplica:
    """Local versions plus one Merkle tree per partition, kept in step with every write
    (Dynamo §4.7): a tree is built from a scan the first time it is needed after start-up,
    then updated incrementally, so an exchange never rebuilds it."""

    def __init__(
        self,
        engine: StorageEngine,
        node_id: str,
        tree_segments: int = 1 << 12,
        clock: Callable[[], float] = time.time,
        actor: str | None = None,
    ) -> None:
        self._engine = engine
        self.node_id = node_id
        self.actor = actor or node_id  # the dot actor (DVV); node_id unless `local_actor` says
        self._clock = clock
        self._trees: dict[int, merkle.MerkleTree] = {}
        self._segments = tree_segments
        self._hint_counts: dict[str, int] | None = None  # owner → hinted keys; lazy, like trees

    def tree(self, partition: int) -> merkle.MerkleTree:
        tree = self._trees.get(partition)
        if tree is None:
            items = (
                (key, merkle.version_hash(decode_stored(raw)))
                for key, raw in self._engine.iterate_prefix(partition_prefix(partition))
            )
            tree = merkle.rebuild(items, segments=self._segments)
            self._trees[partition] = tree
        return tree

    def sync(self) -> None:
        """Put every write so far on disk (blocking: call it from a thread)."""
        self._engine.sync()

    def fetch(self, ref: KeyRef) -> tuple[Version, ...]:
        raw = self._engine.get(ref.storage_key())
        return decode_stored(raw) if raw is not None else ()

    def scan(
        self,
        partition: int,
        uid: int,
        after: str | None,
        limit: int,
        max_bytes: int = 0,
        key_prefix: str = "",
    ) -> tuple[list[tuple[KeyRef, tuple[Version, ...]]], bool]:
        """Up to `limit` keys of one keyspace in one partition starting with `key_prefix`, in
        key order, after `after` (a partition transfer's batch, a key listing's), stopping
        early once their stored bytes reach `max_bytes` (0: no byte limit; at least one
        key); and whether the range is exhausted."""
        prefix = PREFIX + struct.pack(">HI", partition, uid)
        bounds = scan_range(key_prefix, after)
        if bounds is None:
            return [], True
        start = prefix + bounds[0]
        stop = _prefix_end(prefix) if bounds[1] is None else prefix + bounds[1]
        out: list[tuple[KeyRef, tuple[Version, ...]]] = []
        size = 0
        for raw, value in self._engine.iterate(start, stop):
            if len(out) == limit or (max_bytes and size >= max_bytes):
                return out, False
            out.append((KeyRef.from_storage_key(raw), decode_stored(value)))
            size += len(raw) + len(value)
        return out, True

    def drop(self, partition: int, uid: int, limit: int) -> int:
        """Delete up to `limit` keys of one keyspace in one partition (a copy this node no
        longer owns, after a membership plan moved it away); returns how many."""
        prefix = PREFIX + struct.pack(">HI", partition, uid)
        found = self._engine.iterate(prefix, _prefix_end(prefix))
        dropped = list(itertools.islice(found, limit))
        batch = WriteBatch()
        for raw, value in dropped:
            batch.delete(raw)
            batch.delete(GC_PREFIX + raw)
            expiry.remark(batch, raw, decode_stored(value), ())
        self._engine.write(batch)
        tree = self._trees.get(partition)
        if tree is not None:
            for raw, _ in dropped:
                tree.update(raw, None)
        return len(dropped)

    def store(self, ref: KeyRef, incoming: tuple[Version, ...]) -> tuple[Version, ...]:
        """Merge `incoming` into the local versions; write only if something changed."""
        local = self.fetch(ref)
        merged = siblings.reconcile((*local, *incoming))
        if not siblings.same(local, merged):
            self._write(ref, local, merged)
        return merged

    def coordinate(
        self,
        ref: KeyRef,
        context: VClock,
        value: Any,
        deleted: bool,
        max_siblings: int,
        context_dots: tuple[Dot, ...] = (),
        ttl_ms: int | None = None,
    ) -> tuple[Version, tuple[Version, ...]]:
        """Mint the new version's dot here (DVV: the dot belongs to this replica) and store it;
        with `ttl_ms` it expires that long after this replica's clock now (docs/ttl.md).

        Raises siblings.SiblingLimitExceeded or siblings.SiblingBytesExceeded (the stored
        set, as encoded here, over `siblings.MAX_SIBLING_BYTES`) without writing anything.
        """
        local = self.fetch(ref)
        now_ms = int(self._clock() * 1000)
        new, merged = siblings.coordinate(
            local, self.actor, context, value, deleted, max_siblings, context_dots, now_ms, ttl_ms
        )
        encoded = encode_versions(merged)
        siblings.admit_bytes(len(encoded))
        self._write(ref, local, merged, encoded)
        return new, merged

    def _write(self, ref: KeyRef, before: Vs, versions: Vs, encoded: bytes | None = None) -> None:
        """Store `versions` in place of `before` (what is stored now), markers included."""
        batch = WriteBatch()
        key = ref.storage_key()
        batch.put(key, encode_versions(versions) if encoded is None else encoded)
        self._mark_tombstone(batch, key, before, versions)
        expiry.remark(batch, key, before, versions)
        self._engine.write(batch)
        tree = self._trees.get(ref.partition)
        if tree is not None:  # not built yet: the scan at build time will see this write
            tree.update(key, merkle.version_hash(versions))

    # -- tombstones and their purge (DESIGN.md §4: only once every replica has them) ---------

    def _mark_tombstone(self, batch: WriteBatch, key: bytes, before: Vs, versions: Vs) -> None:
        """Keep `GC_PREFIX | storage key → first time seen tombstone-only` in step with the
        data, in the same batch, so the purge loop visits tombstones only (cost ∝ tombstones).
        A live set needs no read: only a tombstone-only `before` can have left a marker."""
        marker = GC_PREFIX + key
        if siblings.is_tombstone_only(versions):
            if self._engine.get(marker) is None:
                batch.put(marker, json.dumps(self._clock()).encode())
        elif siblings.is_tombstone_only(before):
            batch.delete(marker)

    def tombstones(
        self, older_than: float, limit: int, after: KeyRef | None = None
    ) -> list[tuple[KeyRef, tuple[Version, ...]]]:
        """Up to `limit` tombstone-only keys that have been so since before `older_than`, in
        key order, after `after` (where the previous sweep stopped)."""
        out = []
        for marker, raw in self._engine.iterate(*_after(GC_PREFIX, after)):
            if json.loads(raw) <= older_than:
                ref = KeyRef.from_storage_key(marker[len(GC_PREFIX) :])
                out.append((ref, self.fetch(ref)))
                if len(out) >= limit:
                    break
        return out

    def expire(self, now_ms: int, limit: int) -> int:
        """Turn the expired versions of up to `limit` keys due at `now_ms` into tombstones
        (dynamo_mode/expiry.py); returns how many keys. A stray marker is dropped."""
        due = expiry.due(self._engine, now_ms, limit)
        for marker, key in due:
            ref = KeyRef.from_storage_key(key)
            if dead := expiry.tombstones(self.fetch(ref), now_ms):
                self.store(ref, dead)
            else:
                self._engine.write(expiry.unmarked(marker))
        return len(due)

    def purge(self, ref: KeyRef, dots: set[Dot]) -> bool:
        """Remove a tombstone-only key whose versions are exactly `dots` (compare-and-delete:
        a version written since the check keeps the key)."""
        local = self.fetch(ref)
        if not siblings.is_tombstone_only(local) or {v.dot for v in local} != dots:
            return False
        key = ref.storage_key()
        batch = WriteBatch()
        batch.delete(key)
        batch.delete(GC_PREFIX + key)
        self._engine.write(batch)
        tree = self._trees.get(ref.partition)
        if tree is not None:
            tree.update(key, None)
        return True

    # -- hints held for other nodes (Dynamo §4.6) -------------------------------------------

    def store_hint(
        self, owner: str, ref: KeyRef, incoming: tuple[Version, ...]
    ) -> tuple[Version, ...]:
        """Merge `incoming` into the hint kept for `owner` (the same CRDT merge as `store`)."""
        key = hints.hint_key(owner, ref.storage_key())
        local = self._load(key)
        merged = siblings.reconcile((*(local or ()), *incoming))
        if local is None or not siblings.same(local, merged):
            batch = WriteBatch()
            batch.put(key, encode_versions(merged))
            self._engine.write(batch)
            if local is None:
                self._count_hint(owner, +1)
        return merged

    def hints_for(
        self, owner: str, limit: int, after: KeyRef | None = None
    ) -> list[tuple[KeyRef, tuple[Version, ...]]]:
        """Up to `limit` hints held for `owner`, in key order, after `after`."""
        out = []
        for key, raw in self._engine.iterate(*_after(hints.owner_prefix(owner), after)):
            _, storage_key = hints.parse_hint_key(key)
            out.append((KeyRef.from_storage_key(storage_key), decode_stored(raw)))
            if len(out) >= limit:
                break
        return out

    def hints_of(
        self, partition: int, uid: int, limit: int
    ) -> list[tuple[KeyRef, tuple[Version, ...]]]:
        """Every hint this node holds (for any owner) of keyspace `uid` in `partition`, up
        to `limit` (a switch's migrator reads them with the replicas' data)."""
        out = []
        for key, raw in self._engine.iterate_prefix(hints.HINT_PREFIX):
            ref = KeyRef.from_storage_key(hints.parse_hint_key(key)[1])
            if (ref.partition, ref.uid) == (partition, uid):
                out.append((ref, decode_stored(raw)))
                if len(out) >= limit:
                    break
        return out

    def drop_hint(self, owner: str, ref: KeyRef, delivered: tuple[Version, ...]) -> bool:
        """Delete the hint once `owner` acknowledged `delivered`, unless it grew meanwhile."""
        key = hints.hint_key(owner, ref.storage_key())
        current = self._load(key)
        if current is None:
            return True
        if not hints.may_drop(current, delivered):
            return False
        batch = WriteBatch()
        batch.delete(key)
        self._engine.write(batch)
        self._count_hint(owner, -1)
        return True

    def _load(self, key: bytes) -> tuple[Version, ...] | None:
        raw = self._engine.get(key)
        return decode_stored(raw) if raw is not None else None

    def hint_counts(self) -> dict[str, int]:
        """owner → number of keys with a pending hint on this node."""
        return dict(self._counts())

    def _counts(self) -> dict[str, int]:
        if self._hint_counts is None:  # first use after start-up: one scan, then incremental
            counts: dict[str, int] = {}
            for key, _ in self._engine.iterate_prefix(hints.HINT_PREFIX):
                owner, _ = hints.parse_hint_key(key)
                counts[owner] = counts.get(owner, 0) + 1
            self._hint_counts = counts
        return self._hint_counts

    def _count_hint(self, owner: str, delta: int) -> None:
        counts = self._hint_counts
        if counts is None:  # not built yet: the scan at build time will see this write
            return
        counts[owner] = counts.get(owner, 0) + delta
        if counts[owner] <= 0:
            del counts[owner]
