"""Per-partition hash trees for anti-entropy, and the Riak-style top-down diff.

Pure: no I/O, no clocks, no randomness. The I/O shell feeds ``update`` from the write path,
persists ``to_bytes`` next to the data, and carries the diff's queries to the peer replica,
which serves them with ``answer`` (Dynamo §4.7; Riak ``hashtree.erl``; Merkle 1987).

Shape (fixed, identical on every replica of a partition)::

    level 0            root                          widths[0] == 1
    level 1..depth-1   interior nodes, fan-out F     widths[l + 1] == widths[l] * F
    level depth        leaf = bucket (segment)       widths[depth] == segments
                       (the root alone may have fewer than F children)

- bucket of a storage key = top log2(segments) bits of blake2b(key); frozen, because both
  replicas and the persisted form must agree (the unit tests hold recorded values).
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
- the diff never reports a key whose hashes are equal on both sides, and with no budget
  cut reports every key whose hashes differ (tested against a dict comparison).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from dynamo_mode.siblings import Version

HASH_SIZE = 16  # bytes; a false "equal" needs a 2^-128 collision between two given subtrees
DEFAULT_SEGMENTS = 1 << 16  # ~1.5 keys/bucket at 100k keys: the bucket answer stays small
DEFAULT_FANOUT = 16  # 4 levels under the root at the default: few round trips per exchange
MAX_SEGMENTS = 1 << 24
MAX_FANOUT = 1 << 10

_MAGIC = b"KVMT"
_FORMAT = 1
_HEADER = struct.Struct(">4sBBBBQ")  # magic, format, log2 segments, log2 fanout, hash, count
_KEY_LEN = struct.Struct(">I")

_T = TypeVar("_T")


def _digest(person: bytes, data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=HASH_SIZE, person=person).digest()


def version_hash(versions: Iterable[Version]) -> bytes:
    """Canonical hash of a reconciled version set: independent of order (sorted by dot, then
    canonical form), covering each version's dot, context, deleted flag and value."""
    forms = sorted((v.dot, _canonical_json(v)) for v in versions)
    if not forms:
        raise ValueError("an empty version set is an absent key: update(key, None)")
    return _digest(b"kv-versions", ("[" + ",".join(f for _, f in forms) + "]").encode())


def _canonical_json(v: Version) -> str:
    return json.dumps(v.to_wire(), sort_keys=True, separators=(",", ":"))


def _leaf_hash(items: dict[bytes, bytes]) -> bytes:
    parts = [_KEY_LEN.pack(len(k)) + k + items[k] for k in sorted(items)]
    return _digest(b"kv-merkle-leaf", b"".join(parts))


def _interior_hash(children: Iterable[bytes]) -> bytes:
    return _digest(b"kv-merkle-node", b"".join(children))


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
        if level == self.depth:
            return range(0)
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
        if version_hash is not None and not _is_hash(version_hash):
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
        if cached is None:
            cached = _interior_hash(self._hash(level + 1, c) for c in self.children(level, index))
            self._interior[level][index] = cached
        return cached

    def _leaf(self, bucket: int) -> bytes:
        cached = self._leaf_cache.get(bucket)
        if cached is None:
            cached = _leaf_hash(self._buckets.get(bucket, {}))
            if bucket in self._buckets:
                self._leaf_cache[bucket] = cached
        return cached

    def _check_level(self, level: int) -> None:
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= self.depth:
            raise ValueError(f"level must be in [0, {self.depth}], got {level!r}")

    def _check_node(self, level: int, index: int) -> None:
        self._check_level(level)
        width = self._widths[level]
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < width:
            raise ValueError(f"index at level {level} must be in [0, {width}), got {index!r}")

    # Persistence -----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Header, items sorted by key, blake2b checksum; equal trees give equal bytes."""
        header = _HEADER.pack(
            _MAGIC, _FORMAT, self._seg_bits, self._fanout.bit_length() - 1, HASH_SIZE, len(self)
        )
        body = [_KEY_LEN.pack(len(k)) + k + v for k, v in sorted(self.items())]
        payload = header + b"".join(body)
        return payload + _digest(b"kv-merkle-file", payload)

    @classmethod
    def from_bytes(cls, data: bytes) -> MerkleTree:
        """Raises ValueError on any corruption; hashes are recomputed lazily on first use."""
        if len(data) < _HEADER.size + HASH_SIZE:
            raise ValueError("merkle tree data too short")
        payload, checksum = data[:-HASH_SIZE], data[-HASH_SIZE:]
        if _digest(b"kv-merkle-file", payload) != checksum:
            raise ValueError("merkle tree checksum mismatch")
        magic, fmt, seg_bits, fan_bits, hash_size, count = _HEADER.unpack_from(payload)
        if (magic, fmt, hash_size) != (_MAGIC, _FORMAT, HASH_SIZE):
            raise ValueError(f"not a merkle tree of format {_FORMAT}: {magic!r} {fmt} {hash_size}")
        tree = cls(1 << seg_bits, 1 << fan_bits)
        end = _load_items(tree, payload, _HEADER.size)
        if end != len(payload) or len(tree) != count:
            raise ValueError(f"merkle tree holds {len(tree)} keys, header says {count}")
        return tree


def _empty_interior(widths: tuple[int, ...], fanout: int) -> list[list[bytes | None]]:
    """Every interior level filled with its empty-subtree hash (clean from the start)."""
    rows: list[list[bytes | None]] = []
    below = _leaf_hash({})
    for level in range(len(widths) - 2, -1, -1):
        arity = min(fanout, widths[level + 1])
        below = _interior_hash([below] * arity)
        rows.append([below] * widths[level])
    return rows[::-1]


def _load_items(tree: MerkleTree, payload: bytes, offset: int) -> int:
    """Keys must be strictly increasing: the canonical form, and no key twice."""
    previous: bytes | None = None
    while offset < len(payload):
        if offset + _KEY_LEN.size > len(payload):
            raise ValueError("merkle tree data truncated")
        (size,) = _KEY_LEN.unpack_from(payload, offset)
        start = offset + _KEY_LEN.size
        end = start + size + HASH_SIZE
        if end > len(payload):
            raise ValueError("merkle tree data truncated")
        key = payload[start : start + size]
        if previous is not None and key <= previous:
            raise ValueError(f"merkle tree keys out of order at {key!r}")
        tree.update(key, payload[start + size : end])
        previous, offset = key, end
    return offset


def rebuild(
    items: Iterable[tuple[bytes, bytes]],
    *,
    segments: int = DEFAULT_SEGMENTS,
    fanout: int = DEFAULT_FANOUT,
) -> MerkleTree:
    """A tree from a scan of (storage key, version hash) pairs (recovery); later pairs win."""
    tree = MerkleTree(segments, fanout)
    for key, vhash in items:
        tree.update(key, vhash)
    return tree


# The exchange (Riak hashtree.erl compare/4: the remote side is a function argument) ------


@dataclass(frozen=True)
class HashesQuery:
    """The remote hashes of nodes ``indexes`` at ``level``; answered by a tuple of bytes."""

    level: int
    indexes: tuple[int, ...]


@dataclass(frozen=True)
class BucketsQuery:
    """The remote key -> version hash entries of ``buckets``; answered by a tuple of dicts."""

    buckets: tuple[int, ...]


Query = HashesQuery | BucketsQuery
Answer = tuple[bytes, ...] | tuple[dict[bytes, bytes], ...]


def answer(tree: MerkleTree, query: Query) -> Answer:
    """Serve a peer's query from the local tree (the remote end of ``diff``)."""
    if isinstance(query, HashesQuery):
        return tuple(tree.node_hash(query.level, i) for i in query.indexes)
    if isinstance(query, BucketsQuery):
        return tuple(tree.bucket_items(b) for b in query.buckets)
    raise ValueError(f"unknown merkle query {query!r}")


@dataclass(frozen=True)
class DiffStats:
    queries: int  # round trips to the remote side
    hashes: int  # node hashes + bucket entries received
    bytes_transferred: int  # hash bytes + key bytes received


@dataclass(frozen=True)
class DiffResult:
    """Keys whose version hashes differ, in walk order ((bucket - start) mod segments, key).

    ``local_only``/``remote_only`` are the subsets present on one side. ``truncated``: more
    differing keys exist than ``budget``; ``resume_bucket`` is the ``start_bucket`` for the
    next exchange, so a budget cut never starves the same range twice in a row.
    """

    keys: tuple[bytes, ...]
    local_only: frozenset[bytes]
    remote_only: frozenset[bytes]
    truncated: bool
    resume_bucket: int | None
    stats: DiffStats


@dataclass
class _Walk:
    local: MerkleTree
    budget: int
    start: int
    queries: int = 0
    hashes: int = 0
    bytes_transferred: int = 0
    truncated: bool = False

    def rotated(self, level: int, indexes: Iterable[int]) -> list[int]:
        """Walk order at ``level``: starting from the ancestor of ``start``, wrapping."""
        pivot, width = self.local.ancestor(self.start, level), self.local.width(level)
        return sorted(indexes, key=lambda i: (i - pivot) % width)

    def cut(self, found: list[_T]) -> list[_T]:
        """Keep the first ``budget``: each differing node or bucket holds >= 1 differing key."""
        self.truncated |= len(found) > self.budget
        return found[: self.budget]

    def cut_nodes(self, level: int, found: list[int]) -> list[int]:
        """``cut``, but the pivot (first in walk order) is kept on top of the budget: it also
        holds the buckets just below ``start``, which come last in walk order. Then the first
        ``budget`` differing buckets in walk order always lie under the kept nodes."""
        pivot = found[0] == self.local.ancestor(self.start, level) if found else False
        self.truncated |= len(found) > self.budget
        return found[: self.budget + pivot]

    def differing(self, level: int, candidates: list[int], raw: Answer) -> list[int]:
        theirs = _hashes_answer(raw, len(candidates))
        self.queries += 1
        self.hashes += len(theirs)
        self.bytes_transferred += HASH_SIZE * len(theirs)
        return [
            i
            for i, h in zip(candidates, theirs, strict=True)
            if h != self.local.node_hash(level, i)
        ]

    def remote_buckets(self, buckets: list[int], raw: Answer) -> list[dict[bytes, bytes]]:
        answers = _buckets_answer(raw, buckets, self.local)
        self.queries += 1
        for entries in answers:
            self.hashes += len(entries)
            self.bytes_transferred += sum(len(k) + HASH_SIZE for k in entries)
        return answers


def diff(
    local: MerkleTree,
    ask_remote: Callable[[Query], Answer],
    budget: int,
    start_bucket: int = 0,
) -> DiffResult:
    """Top-down comparison asking the remote side only for children of differing nodes.

    Cost: at most depth + 2 queries and 1 + F * depth * min(d, budget + 1) node hashes for d
    differing keys, plus the entries of at most min(d, budget + 1) buckets: it grows with d,
    not with the number of keys. Both trees must have the same shape (segments, fanout): the
    shell checks it when the exchange starts.
    """
    steps = diff_steps(local, budget, start_bucket)
    try:
        query = next(steps)
        while True:
            query = steps.send(ask_remote(query))
    except StopIteration as stop:
        result: DiffResult = stop.value
        return result


def diff_steps(
    local: MerkleTree, budget: int, start_bucket: int = 0
) -> Generator[Query, Answer, DiffResult]:
    """`diff` as a sans-I/O generator: it yields each query and is sent the peer's answer, so
    an asyncio shell can await the network between steps (the same walk as `diff`)."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be an int >= 1, got {budget!r}")
    local.ancestor(start_bucket, 0)  # raises ValueError unless 0 <= start_bucket < segments
    walk = _Walk(local, budget, start_bucket)
    frontier = walk.differing(0, [0], (yield HashesQuery(0, (0,))))
    for level in range(1, local.depth + 1):
        if not frontier:
            break
        candidates = walk.rotated(
            level, (c for p in frontier for c in local.children(level - 1, p))
        )
        answer_ = yield HashesQuery(level, tuple(candidates))
        frontier = walk.cut_nodes(level, walk.differing(level, candidates, answer_))
    theirs = (
        walk.remote_buckets(frontier, (yield BucketsQuery(tuple(frontier)))) if frontier else []
    )
    return _compare_buckets(walk, frontier, theirs)


def _compare_buckets(
    walk: _Walk, buckets: list[int], theirs_all: list[dict[bytes, bytes]]
) -> DiffResult:
    keys: list[tuple[int, bytes]] = []
    local_only: set[bytes] = set()
    remote_only: set[bytes] = set()
    for bucket, theirs in zip(buckets, theirs_all, strict=True):
        ours = walk.local.bucket_items(bucket)
        for key in sorted(ours.keys() | theirs.keys()):
            if ours.get(key) != theirs.get(key):
                keys.append((bucket, key))
        local_only |= ours.keys() - theirs.keys()
        remote_only |= theirs.keys() - ours.keys()
    reported = walk.cut(keys)
    chosen = tuple(key for _, key in reported)
    resume = (reported[-1][0] + 1) % walk.local.segments if walk.truncated else None
    stats = DiffStats(walk.queries, walk.hashes, walk.bytes_transferred)
    kept = frozenset(chosen)
    return DiffResult(chosen, kept & local_only, kept & remote_only, walk.truncated, resume, stats)


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _hashes_answer(raw: object, expected: int) -> tuple[bytes, ...]:
    """The trust boundary for a peer's hashes answer."""
    if not isinstance(raw, tuple | list) or len(raw) != expected:
        raise ValueError(f"remote hashes answer must hold {expected} hashes")
    if not all(_is_hash(h) for h in raw):
        raise ValueError(f"remote hashes must be {HASH_SIZE} bytes each")
    return tuple(raw)


def _buckets_answer(raw: object, buckets: list[int], local: MerkleTree) -> list[dict[bytes, bytes]]:
    """The trust boundary for a peer's buckets answer: every key in the bucket it was asked."""
    if not isinstance(raw, tuple | list) or len(raw) != len(buckets):
        raise ValueError(f"remote buckets answer must hold {len(buckets)} buckets")
    for bucket, entries in zip(buckets, raw, strict=True):
        if not isinstance(entries, dict):
            raise ValueError("remote bucket entries must be a dict of key -> version hash")
        for key, vhash in entries.items():
            if not isinstance(key, bytes) or not _is_hash(vhash):
                raise ValueError(f"remote bucket entry {key!r} is malformed")
            if local.bucket_of(key) != bucket:
                raise ValueError(f"remote key {key!r} is not in bucket {bucket}")
    return list(raw)
