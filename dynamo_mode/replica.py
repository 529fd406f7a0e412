"""A node's local replica of eventual keyspaces: versions stored in the StorageEngine.

Storage layout (keyspace is a key prefix inside a partition, DESIGN.md §2):

    b"e" | partition (2 bytes BE) | keyspace uid (4 bytes BE) | key (UTF-8)  →  JSON [wire versions]

so one partition's data is one contiguous range (what anti-entropy walks), and a keyspace
re-created under the same name (new uid) never sees the old incarnation.

Invariant: what is stored for a key is always `reconcile(...)` of everything this replica
has been sent, so storing is commutative, associative and idempotent (a CRDT merge). Each
read-modify-write below runs without an `await`, so it is atomic on the event loop.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from dynamo_mode import merkle, siblings
from dynamo_mode.siblings import Version
from dynamo_mode.vclock import VClock
from kv.storage import StorageEngine, WriteBatch

PREFIX = b"e"


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
    return json.dumps([v.to_wire() for v in versions], separators=(",", ":")).encode()


def decode_versions(raw: Any) -> tuple[Version, ...]:
    if not isinstance(raw, list):
        raise ValueError("versions must be a list")
    return tuple(Version.from_wire(v) for v in raw)


def partition_prefix(partition: int) -> bytes:
    return PREFIX + struct.pack(">H", partition)


class DynamoReplica:
    """Local versions plus one Merkle tree per partition, kept in step with every write
    (Dynamo §4.7): a tree is built from a scan the first time it is needed after start-up,
    then updated incrementally, so an exchange never rebuilds it."""

    def __init__(self, engine: StorageEngine, node_id: str, tree_segments: int = 1 << 12) -> None:
        self._engine = engine
        self.node_id = node_id
        self._trees: dict[int, merkle.MerkleTree] = {}
        self._segments = tree_segments

    def tree(self, partition: int) -> merkle.MerkleTree:
        tree = self._trees.get(partition)
        if tree is None:
            items = (
                (key, merkle.version_hash(decode_versions(json.loads(raw))))
                for key, raw in self._engine.iterate_prefix(partition_prefix(partition))
            )
            tree = merkle.rebuild(items, segments=self._segments)
            self._trees[partition] = tree
        return tree

    def fetch(self, ref: KeyRef) -> tuple[Version, ...]:
        raw = self._engine.get(ref.storage_key())
        return decode_versions(json.loads(raw)) if raw is not None else ()

    def store(self, ref: KeyRef, incoming: tuple[Version, ...]) -> tuple[Version, ...]:
        """Merge `incoming` into the local versions; write only if something changed."""
        local = self.fetch(ref)
        merged = siblings.reconcile((*local, *incoming))
        if not siblings.same(local, merged):
            self._write(ref, merged)
        return merged

    def coordinate(
        self, ref: KeyRef, context: VClock, value: Any, deleted: bool, max_siblings: int
    ) -> tuple[Version, tuple[Version, ...]]:
        """Mint the new version's dot here (DVV: the dot belongs to this replica) and store it.

        Raises siblings.SiblingLimitExceeded without writing anything.
        """
        local = self.fetch(ref)
        new, merged = siblings.coordinate(
            local, self.node_id, context, value, deleted, max_siblings
        )
        self._write(ref, merged)
        return new, merged

    def _write(self, ref: KeyRef, versions: tuple[Version, ...]) -> None:
        batch = WriteBatch()
        key = ref.storage_key()
        batch.put(key, encode_versions(versions))
        self._engine.write(batch)
        tree = self._trees.get(ref.partition)
        if tree is not None:  # not built yet: the scan at build time will see this write
            tree.update(key, merkle.version_hash(versions))
