"""Per-partition hash trees for anti-entropy (Dynamo §4.7; Riak ``hashtree.erl``; Merkle 1987).

Pure: no I/O, no clocks, no randomness. The replica (dynamo_mode/replica.py) keeps one tree per
partition in memory: built by ``rebuild`` from a scan of the partition's keys the first time it
is needed after start-up, then fed by ``update`` from the write path. Trees are never persisted.
The level-at-a-time comparison of two trees is dynamo_mode/merkle_diff.py.

Shape (fixed, identical on every replica of a partition)::

    level 0            root                          widths[0] == 1
    level 1..depth-1   interior nodes, fan-out F     widths[l + 1] == widths[l] * F
    level depth        leaf = bucket (segment)       widths[depth] == segments
                       (the root alone may have fewer than F children)

- bucket of a storage key = top log2(segments) bits of blake2b(key); frozen, because every
  replica must agree on it, whatever version it runs (the unit tests hold recorded values).
- leaf hash = H(sorted (len, key, version hash) of the bucket's keys); a sorted hash, not an
  XOR of per-key hashes: XOR sums are linear and lose collision resistance (Bellare and
  Micciancio 1997), and the bucket dict needed by the leaf-level exchange is kept anyway.
- interior hash = H(children's hashes in order) (Merkle 1987).

Memory (the price of serving bucket queries without a storage scan): a dict per non-empty
bucket plus a cached leaf hash, measured ~230 bytes/key at 100k keys besides the key bytes;
interior levels are one pointer per node and empty leaves share one constant, so an empty
default tree costs ~36 KB. Riak keeps segments on disk instead; do that here (a storage
prefix per bucket) before partitions reach millions of keys.

Invariants:
- ``_buckets`` holds exactly the present keys, each in bucket ``bucket_of(key)``; no bucket
  dict is empty.
- a cached hash (``_leaf_cache`` entry, non-None ``_interior`` cell) equals the hash
  recomputed from the items; ``None`` marks a dirty interior node.
- dirty node => every ancestor dirty (equivalently: clean node => clean subtree), so
  ``update`` stops walking up at the first dirty ancestor: O(depth), O(1) amortised.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator

from dynamo_mode import canonical
from dynamo_mode.siblings import Version

HASH_SIZE = 16  # bytes; a false "equal" needs a 2^-128 collision between two given subtrees
DEFAULT_SEGMENTS = 1 << 16  # ~1.5 keys/bucket at 100k keys: the bucket answer stays small
DEFAULT_FANOUT = 16  # 4 levels under the root at the default: few round trips per exchange
MAX_SEGMENTS = 1 << 24
MAX_FANOUT = 1 << 10

_KEY_LEN = struct.Struct(">I")


def _digest(person: bytes, data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=HASH_SIZE, person=person).digest()


def version_hash(versions: Iterable[Version]) -> bytes:
    """Canonical hash of a reconciled version set: independent of order (sorted by dot, then
    canonical form), covering each version's dot, context, deleted flag and value. Frozen
    (`canonical.canonical_form`): replicas running other builds must hash alike."""
    forms = sorted((v.dot, canonical.canonical_form(v)) for v in versions)
    if not forms:
        raise ValueError("an empty version set is an absent key: update(key, None)")
    return _digest(b"kv-versions", b"[" + b",".join(f for _, f in forms) + b"]")


def _leaf_hash(items: dict[bytes, bytes]) -> bytes:
    parts = [_KEY_LEN.pack(len(k)) + k + items[k] for k in sorted(items)]
    return _digest(b"kv-merkle-leaf", b"".join(parts))


def _interior_hash(children: Iterable[bytes]) -> bytes:
    return _digest(b"kv-merkle-node", b"".join(children))


_EMPTY_LEAF = _leaf_hash({})


def _log2_checked(name: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be a power of two in [{low}, {high}], got {value!r}")
    if value & (value - 1):
        raise ValueError(f"{name} must be a power of two in [{low}, {high}], got {value!r}")
    return value.bit_length() - 1


def _widths(segments: int, fanout: int) -> tuple[int, ...]:
    """Node count per level, root first."""
    widths = [segments]
    while widths[-1] > 1:
        widths.append(max(1, widths[-1] // fanout))
    return tuple(reversed(widths))


class MerkleTree:
    """The hash tree of one partition's (storage key, version hash) pairs."""

    def __init__(self, segments: int = DEFAULT_SEGMENTS, fanout: int = DEFAULT_FANOUT) -> None:
        self._seg_bits = _log2_checked("segments", segments, 1, MAX_SEGMENTS)
        _log2_checked("fanout", fanout, 2, MAX_FANOUT)
        self._segments = segments
        self._fanout = fanout
        self._widths = _widths(segments, fanout)
        self._interior: list[list[bytes | None]] = _empty_interior(self._widths, fanout)
        self._buckets: dict[int, dict[bytes, bytes]] = {}
        self._leaf_cache: dict[int, bytes] = {}
        self._count = 0

    # Shape -----------------------------------------------------------------------------

    @property
    def segments(self) -> int:
        return self._segments

    @property
    def fanout(self) -> int:
        return self._fanout

    @property
    def depth(self) -> int:
        """Level of the leaves (buckets); the root is level 0."""
        return len(self._widths) - 1

    def width(self, level: int) -> int:
        self._check_level(level)
        return self._widths[level]

    def bucket_of(self, storage_key: bytes) -> int:
        """Frozen: the top log2(segments) bits of blake2b-64 of the key."""
        h = hashlib.blake2b(storage_key, digest_size=8, person=b"kv-merkle-seg").digest()
        return int.from_bytes(h, "big") >> (64 - self._seg_bits)

    def ancestor(self, bucket: int, level: int) -> int:
        """Index at ``level`` of the node whose subtree holds ``bucket``."""
        self._check_node(self.depth, bucket)
        self._check_level(level)
        return bucket >> (self._fanout.bit_length() - 1) * (self.depth - level)

    def children(self, level: int, index: int) -> range:
        """Child indexes at ``level + 1``; empty for a leaf (its children are keys)."""
        self._check_node(level, index)
        return range(0) if level == self.depth else self._kids(level, index)

    def _kids(self, level: int, index: int) -> range:
        first = index * self._fanout
        return range(first, min(first + self._fanout, self._widths[level + 1]))

    # Contents --------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def get(self, storage_key: bytes) -> bytes | None:
        return self._buckets.get(self.bucket_of(storage_key), {}).get(storage_key)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for bucket in self._buckets.values():
            yield from bucket.items()

    def bucket_items(self, bucket: int) -> dict[bytes, bytes]:
        """A copy of the bucket's key -> version hash entries."""
        self._check_node(self.depth, bucket)
        return dict(self._buckets.get(bucket, {}))

    def update(self, storage_key: bytes, version_hash: bytes | None) -> None:
        """Record the key's current version hash (None: the key is absent). O(depth)."""
        if not isinstance(storage_key, bytes):
            raise ValueError(f"storage_key must be bytes, got {type(storage_key).__name__}")
        if version_hash is not None and not is_hash(version_hash):
            raise ValueError(f"version_hash must be {HASH_SIZE} bytes or None")
        bucket = self.bucket_of(storage_key)
        changed = (
            self._discard(bucket, storage_key)
            if version_hash is None
            else self._store(bucket, storage_key, version_hash)
        )
        if changed:
            self._invalidate(bucket)

    def _store(self, bucket: int, key: bytes, vhash: bytes) -> bool:
        entries = self._buckets.setdefault(bucket, {})
        old = entries.get(key)
        entries[key] = vhash
        self._count += old is None
        return old != vhash

    def _discard(self, bucket: int, key: bytes) -> bool:
        entries = self._buckets.get(bucket)
        if entries is None or key not in entries:
            return False
        del entries[key]
        if not entries:
            del self._buckets[bucket]
        self._count -= 1
        return True

    def _invalidate(self, bucket: int) -> None:
        self._leaf_cache.pop(bucket, None)
        index = bucket
        for level in range(self.depth - 1, -1, -1):
            index //= self._fanout
            row = self._interior[level]
            if row[index] is None:
                break  # dirty => ancestors dirty
            row[index] = None

    # Hashes ----------------------------------------------------------------------------

    def root(self) -> bytes:
        return self.node_hash(0, 0)

    def node_hash(self, level: int, index: int) -> bytes:
        """Recomputes only the dirty part of the node's subtree."""
        self._check_node(level, index)
        return self._hash(level, index)

    def _hash(self, level: int, index: int) -> bytes:
        if level == self.depth:
            return self._leaf(index)
        cached = self._interior[level][index]
        if cached is None:  # clean children are read in place: no call per child
            kids = self._kids(level, index)
            if level + 1 == self.depth:
                hashes = [self._leaf(c) for c in kids]
            else:
                row = self._interior[level + 1]
                hashes = [row[c] or self._hash(level + 1, c) for c in kids]
            cached = self._interior[level][index] = _interior_hash(hashes)
        return cached

    def _leaf(self, bucket: int) -> bytes:
        entries = self._buckets.get(bucket)
        if entries is None:  # most buckets of a partition: a dirty parent has ~15 of them
            return _EMPTY_LEAF
        cached = self._leaf_cache.get(bucket)
        if cached is None:
            cached = self._leaf_cache[bucket] = _leaf_hash(entries)
        return cached

    def _check_level(self, level: int) -> None:
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= self.depth:
            raise ValueError(f"level must be in [0, {self.depth}], got {level!r}")

    def _check_node(self, level: int, index: int) -> None:
        self._check_level(level)
        width = self._widths[level]
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < width:
            raise ValueError(f"index at level {level} must be in [0, {width}), got {index!r}")


def _empty_interior(widths: tuple[int, ...], fanout: int) -> list[list[bytes | None]]:
    """Every interior level filled with its empty-subtree hash (clean from the start)."""
    rows: list[list[bytes | None]] = []
    below = _EMPTY_LEAF
    for level in range(len(widths) - 2, -1, -1):
        arity = min(fanout, widths[level + 1])
        below = _interior_hash([below] * arity)
        rows.append([below] * widths[level])
    return rows[::-1]


def rebuild(
    items: Iterable[tuple[bytes, bytes]],
    *,
    segments: int = DEFAULT_SEGMENTS,
    fanout: int = DEFAULT_FANOUT,
) -> MerkleTree:
    """A tree from a scan of (storage key, version hash) pairs; later pairs win."""
    tree = MerkleTree(segments, fanout)
    for key, vhash in items:
        tree.update(key, vhash)
    return tree


def is_hash(value: object) -> bool:
    """A node or version hash: ``HASH_SIZE`` bytes."""
    return isinstance(value, bytes) and len(value) == HASH_SIZE
