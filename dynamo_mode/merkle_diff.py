"""The Riak-style top-down comparison of two partitions' hash trees, one level at a time.

Pure and sans-I/O: the local tree (dynamo_mode/merkle.py) is an argument, the remote one is
reached only through queries. ``diff_steps`` yields each query (``HashesQuery``: node hashes
of one level; ``BucketsQuery``: the entries of leaf buckets) and is sent the peer's answer,
which the peer computes with ``answer`` on its own tree; the I/O shell
(dynamo_mode/anti_entropy.py) carries them (Dynamo §4.7; Riak ``hashtree.erl`` compare/4,
where the remote side is a function argument too).

Invariants:
- only children of differing nodes are asked for, so the cost grows with the number of
  differing keys, not with the number of keys (bounds on ``diff``);
- the diff never reports a key whose hashes are equal on both sides, and with no budget
  cut reports every key whose hashes differ (tested against a dict comparison);
- a peer's answer is checked at the trust boundary (``_hashes_answer``, ``_buckets_answer``)
  before it is compared: wrong counts, sizes or a key outside its bucket raise ValueError.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import TypeVar

from dynamo_mode.merkle import HASH_SIZE, MerkleTree, is_hash

_T = TypeVar("_T")


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
    not with the number of keys. Both trees must have the same shape (segments, fanout);
    nothing checks it at run time: every replica builds its trees with the same fixed shape
    (`DynamoReplica`'s `tree_segments` default and the default fanout).
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


def _hashes_answer(raw: object, expected: int) -> tuple[bytes, ...]:
    """The trust boundary for a peer's hashes answer."""
    if not isinstance(raw, tuple | list) or len(raw) != expected:
        raise ValueError(f"remote hashes answer must hold {expected} hashes")
    if not all(is_hash(h) for h in raw):
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
            if not isinstance(key, bytes) or not is_hash(vhash):
                raise ValueError(f"remote bucket entry {key!r} is malformed")
            if local.bucket_of(key) != bucket:
                raise ValueError(f"remote key {key!r} is not in bucket {bucket}")
    return list(raw)
