"""Merkle trees for anti-entropy (Dynamo §4.7; Riak hashtree.erl; Merkle 1987).

The remote side of every diff is a second local tree behind ``answer``, as in Riak's
``hashtree:compare/4`` tests: no HTTP, no sockets, no clocks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import cast

import pytest

from dynamo_mode.merkle import (
    DEFAULT_FANOUT,
    DEFAULT_SEGMENTS,
    HASH_SIZE,
    MerkleTree,
    rebuild,
    version_hash,
)
from dynamo_mode.merkle_diff import (
    Answer,
    BucketsQuery,
    DiffResult,
    DiffStats,
    HashesQuery,
    Query,
    answer,
    diff,
)
from dynamo_mode.replica import KeyRef
from dynamo_mode.siblings import make_version

UNBOUNDED = 1 << 30


def h(label: object) -> bytes:
    return hashlib.blake2b(repr(label).encode(), digest_size=HASH_SIZE).digest()


def skey(key: str, partition: int = 7, uid: int = 1) -> bytes:
    return KeyRef(partition, uid, key).storage_key()


def remote(tree: MerkleTree) -> Callable[[Query], Answer]:
    return lambda query: answer(tree, query)


def diff_trees(local: MerkleTree, other: MerkleTree, budget: int = UNBOUNDED) -> DiffResult:
    return diff(local, remote(other), budget)


# Frozen encodings: a change here silently breaks exchanges with replicas running older code,
# so it must fail CI instead (as the ring's recorded tokens do, docs/ring.md).


def test_recorded_shape_buckets_and_hashes() -> None:
    tree = MerkleTree()
    assert (tree.segments, tree.fanout, tree.depth) == (DEFAULT_SEGMENTS, DEFAULT_FANOUT, 4)
    assert [tree.width(level) for level in range(5)] == [1, 16, 256, 4096, 65536]
    assert tree.root().hex() == "990c396ffe8e8bfb7aba886b8c41d32c"
    assert [tree.bucket_of(k) for k in (b"", b"a", skey("user:1", 3, 9))] == [4227, 60504, 64450]
    versions = [
        make_version(("A", 1), {}, {"x": [1, 2]}),
        make_version(("B", 2), {"A": 1}, None, deleted=True),
    ]
    assert version_hash(versions).hex() == "58e28f94b839c9463574d8132347a74c"
    tree.update(skey("user:1", 3, 9), version_hash(versions))
    assert tree.root().hex() == "db9e351f9d550d7ef6ffd82d05d19cbb"


# Shape ----------------------------------------------------------------------------------


def test_root_may_have_fewer_children_than_the_fanout() -> None:
    tree = MerkleTree(segments=1024, fanout=16)
    assert [tree.width(level) for level in range(tree.depth + 1)] == [1, 4, 64, 1024]
    assert tree.children(0, 0) == range(0, 4)
    assert tree.children(1, 3) == range(48, 64)
    assert tree.children(3, 5) == range(0)
    assert [tree.ancestor(1023, level) for level in range(4)] == [0, 3, 63, 1023]


def test_a_single_segment_tree_is_its_own_leaf() -> None:
    tree = rebuild([(b"k", h(1))], segments=1)
    assert tree.depth == 0 and tree.bucket_of(b"anything") == 0
    assert diff_trees(tree, MerkleTree(segments=1)).keys == (b"k",)


@pytest.mark.parametrize(
    ("segments", "fanout", "message"),
    [
        (1000, 16, "segments must be a power of two"),
        (0, 16, "segments must be a power of two"),
        (1 << 25, 16, "segments must be a power of two"),
        (1024, 1, "fanout must be a power of two"),
        (1024, 12, "fanout must be a power of two"),
        (True, 16, "segments must be a power of two"),
    ],
)
def test_shape_is_validated(segments: int, fanout: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MerkleTree(segments, fanout)


@pytest.mark.parametrize(("level", "index"), [(-1, 0), (5, 0), (0, 1), (4, 65536), (2, -1)])
def test_node_accessors_reject_nodes_outside_the_tree(level: int, index: int) -> None:
    with pytest.raises(ValueError, match="must be in"):
        MerkleTree().node_hash(level, index)


# Incremental maintenance ----------------------------------------------------------------


def test_update_and_removal_track_contents() -> None:
    tree = MerkleTree(segments=16, fanout=4)
    empty = tree.root()
    tree.update(b"a", h(1))
    tree.update(b"b", h(2))
    tree.update(b"a", h(3))
    assert len(tree) == 2 and tree.get(b"a") == h(3) and tree.get(b"zz") is None
    assert tree.bucket_of(b"a") != tree.bucket_of(b"b")
    assert tree.bucket_items(tree.bucket_of(b"b")) == {b"b": h(2)}
    tree.bucket_items(tree.bucket_of(b"b")).clear()  # a copy: the tree is unchanged
    assert tree.get(b"b") == h(2)
    tree.update(b"a", None)
    tree.update(b"b", None)
    tree.update(b"never", None)
    assert len(tree) == 0 and tree.root() == empty and list(tree.items()) == []


def test_update_then_revert_restores_every_node() -> None:
    tree = rebuild([(skey(f"k{i}"), h(i)) for i in range(200)], segments=64, fanout=4)
    before = [tree.node_hash(2, i) for i in range(tree.width(2))]
    before_root = tree.root()
    tree.update(skey("k5"), h("changed"))
    tree.update(skey("new"), h("new"))
    assert tree.root() != before_root
    tree.update(skey("k5"), h(5))
    tree.update(skey("new"), None)
    assert [tree.node_hash(2, i) for i in range(tree.width(2))] == before
    assert tree.root() == before_root


def test_a_leaf_read_between_updates_does_not_leave_a_stale_ancestor() -> None:
    # Cleaning a leaf must not clean its ancestors (dirty => ancestors dirty).
    tree = MerkleTree(segments=16, fanout=2)
    tree.update(b"a", h(1))
    bucket = tree.bucket_of(b"a")
    tree.node_hash(tree.depth, bucket)
    tree.node_hash(tree.depth - 1, bucket // 2)
    tree.update(b"a", h(2))
    assert tree.root() == rebuild([(b"a", h(2))], segments=16, fanout=2).root()


def test_update_rejects_malformed_arguments() -> None:
    tree = MerkleTree()
    with pytest.raises(ValueError, match="version_hash must be 16 bytes"):
        tree.update(b"k", b"short")
    with pytest.raises(ValueError, match="storage_key must be bytes"):
        tree.update("k", h(1))  # type: ignore[arg-type]


# version_hash ---------------------------------------------------------------------------


def test_version_hash_is_order_independent_and_covers_every_field() -> None:
    a = make_version(("A", 1), {}, "x")
    b = make_version(("B", 1), {}, {"k": [1, 2]})
    assert version_hash([a, b]) == version_hash([b, a]) == version_hash((b, a))
    variants = [
        [make_version(("A", 2), {}, "x"), b],
        [make_version(("A", 1), {}, "y"), b],
        [make_version(("A", 1), {}, "x", deleted=True), b],
        [make_version(("A", 1), {"C": 1}, "x"), b],
        [a],
    ]
    assert len({version_hash(v) for v in variants} | {version_hash([a, b])}) == 6


def test_version_hash_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="absent key"):
        version_hash([])


# The diff -------------------------------------------------------------------------------


def test_identical_trees_cost_exactly_one_root_query() -> None:
    items = [(skey(f"k{i}"), h(i)) for i in range(1000)]
    result = diff_trees(rebuild(items), rebuild(reversed(items)))
    assert result.keys == () and not result.truncated and result.resume_bucket is None
    assert (result.stats.queries, result.stats.hashes) == (1, 1)
    assert result.stats.bytes_transferred == HASH_SIZE


def test_two_empty_trees_do_not_differ() -> None:
    assert diff_trees(MerkleTree(), MerkleTree()).keys == ()


def test_one_sided_and_changed_keys_are_classified() -> None:
    common = [(skey(f"k{i}"), h(i)) for i in range(50)]
    local = rebuild([*common, (skey("mine"), h("m")), (skey("k1"), h("new"))])
    other = rebuild([*common, (skey("yours"), h("y"))])
    result = diff_trees(local, other)
    assert set(result.keys) == {skey("mine"), skey("yours"), skey("k1")}
    assert result.local_only == {skey("mine")} and result.remote_only == {skey("yours")}
    assert result.stats.queries == 2 + local.depth


def test_against_an_empty_tree_every_key_is_one_sided() -> None:
    local = rebuild([(skey(f"k{i}"), h(i)) for i in range(20)], segments=8, fanout=2)
    result = diff(MerkleTree(segments=8, fanout=2), remote(local), UNBOUNDED)
    assert set(result.keys) == set(result.remote_only) == {k for k, _ in local.items()}


def test_budget_truncates_and_resume_moves_past_the_reported_range() -> None:
    local = rebuild([(skey(f"k{i}"), h(i)) for i in range(100)], segments=256, fanout=4)
    behind = MerkleTree(segments=256, fanout=4)
    start, rounds = 0, 0
    while True:
        result = diff(local, remote(behind), budget=7, start_bucket=start)
        assert len(result.keys) == min(7, 100 - len(behind))
        for key in result.keys:  # the shell's repair
            behind.update(key, local.get(key))
        rounds += 1
        if not result.truncated:
            break
        assert result.resume_bucket == (local.bucket_of(result.keys[-1]) + 1) % 256
        start = result.resume_bucket
    assert dict(behind.items()) == dict(local.items()) and rounds == -(-100 // 7)


def test_budget_bounds_the_hashes_asked_per_level() -> None:
    local = rebuild([(skey(f"k{i}"), h(i)) for i in range(5000)])
    result = diff(local, remote(MerkleTree()), budget=3)
    assert result.truncated and len(result.keys) == 3
    assert result.stats.hashes <= 1 + DEFAULT_FANOUT * local.depth * 3 + 3 * 4


def test_diff_validates_its_arguments() -> None:
    tree = MerkleTree(segments=8, fanout=2)
    with pytest.raises(ValueError, match="budget must be"):
        diff(tree, remote(tree), 0)
    with pytest.raises(ValueError, match="must be in"):
        diff(tree, remote(tree), 1, start_bucket=8)


def forged(hashes: object, buckets: object) -> Callable[[Query], Answer]:
    """A peer answering hashes queries with ``hashes(query)`` and buckets queries with
    ``buckets``; None means "answer honestly as an empty tree"."""

    def ask(query: Query) -> Answer:
        honest = answer(MerkleTree(8, 2), query)
        if isinstance(query, HashesQuery):
            return honest if hashes is None else cast(Answer, hashes)
        return honest if buckets is None else cast(Answer, buckets)

    return ask


def test_malformed_remote_answers_are_rejected() -> None:
    local = rebuild([(b"a", h(1))], segments=8, fanout=2)
    bucket = local.bucket_of(b"a")
    elsewhere = next(bytes([c]) for c in range(256) if local.bucket_of(bytes([c])) != bucket)
    cases = [
        (forged((), None), "must hold 1 hashes"),
        (forged((b"x",), None), "must be 16 bytes"),
        (forged(None, ()), "must hold 1 buckets"),
        (forged(None, ([(b"a", h(2))],)), "must be a dict"),
        (forged(None, ({b"a": 1},)), "is malformed"),
        (forged(None, ({elsewhere: h(2)},)), "is not in bucket"),
    ]
    for ask, message in cases:
        with pytest.raises(ValueError, match=message):
            diff(local, ask, UNBOUNDED)


def test_answer_rejects_queries_outside_the_tree() -> None:
    tree = MerkleTree(segments=8, fanout=2)
    with pytest.raises(ValueError):
        answer(tree, HashesQuery(1, (2,)))
    with pytest.raises(ValueError):
        answer(tree, BucketsQuery((8,)))


# Cost grows with the difference, not with the data (DESIGN.md §4) ----------------------


def _diverge(base: dict[bytes, bytes], d: int) -> tuple[dict[bytes, bytes], list[bytes]]:
    """``base`` with d keys changed, deleted or added (a third each), and the touched keys."""
    other, touched = dict(base), []
    for j, key in enumerate(list(base)[:d]):
        if j % 3 == 0:
            other[key] = h(("changed", j))
        elif j % 3 == 1:
            del other[key]
        else:
            key = skey(f"new:{j}")
            other[key] = h(("new", j))
        touched.append(key)
    return other, touched


def _measured(local: MerkleTree, other: MerkleTree, d: int) -> DiffStats:
    result = diff_trees(local, other)
    assert len(result.keys) == d and not result.truncated
    return result.stats


def test_exchange_cost_grows_with_differences_not_with_keys() -> None:
    # Trees come from rebuild and answer(), never HTTP; the d=10 remote is the d=100 one with
    # 90 differences reverted incrementally. Measured numbers: docs/anti_entropy.md.
    costs: dict[tuple[int, int], DiffStats] = {}
    for n in (10_000, 100_000):
        base = {skey(f"user:{i}"): h(i) for i in range(n)}
        other, touched = _diverge(base, 100)
        local, remote = rebuild(base.items()), rebuild(other.items())
        costs[n, 100] = _measured(local, remote, 100)
        for key in touched[10:]:
            remote.update(key, base.get(key))
        costs[n, 10] = _measured(local, remote, 10)
    print(costs)
    assert costs[100_000, 100].hashes < 0.05 * 100_000
    for metric in ("hashes", "bytes_transferred"):
        ratio = getattr(costs[100_000, 100], metric) / getattr(costs[10_000, 100], metric)
        assert 0.75 < ratio < 1.33, (metric, ratio)
    assert costs[100_000, 10].hashes < costs[100_000, 100].hashes / 5
