"""Hypothesis properties of the anti-entropy hash tree against a naive oracle: a plain dict
comparison (Dynamo §4.7; Riak hashtree.erl; Merkle 1987).

Small shapes (1..64 buckets, fan-out 2..8) and short keys make buckets hold several keys and
exercise partial roots and one-level trees. Hypothesis prints the failing example and its
reproduction blob.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace

from hypothesis import example, given, settings
from hypothesis import strategies as st

from dynamo_mode.canonical import canonical_form
from dynamo_mode.merkle import HASH_SIZE, MerkleTree, rebuild, version_hash
from dynamo_mode.merkle_diff import Answer, DiffResult, Query, answer, diff
from dynamo_mode.siblings import Version, make_version

PROPS = settings(max_examples=150, deadline=None, print_blob=True)
UNBOUNDED = 1 << 30
NODES = ("A", "B", "C")

Items = dict[bytes, bytes]

shapes = st.tuples(st.sampled_from([1, 2, 4, 8, 16, 64]), st.sampled_from([2, 4, 8]))
keys = st.binary(max_size=3)
hashes = st.sampled_from(
    [hashlib.blake2b(bytes([i]), digest_size=HASH_SIZE).digest() for i in range(4)]
)
items = st.dictionaries(keys, hashes, max_size=40)
edits = st.dictionaries(keys, st.none() | hashes, max_size=12)


@st.composite
def diverged(draw: st.DrawFn) -> tuple[Items, Items]:
    """Two replicas sharing a base, each with its own edits (None deletes)."""
    base = draw(items)
    return _edited(base, draw(edits)), _edited(base, draw(edits))


def _edited(base: Items, changes: dict[bytes, bytes | None]) -> Items:
    out = dict(base)
    for key, vhash in changes.items():
        if vhash is None:
            out.pop(key, None)
        else:
            out[key] = vhash
    return out


# Naive oracles ------------------------------------------------------------------------


def naive_diff(a: Items, b: Items) -> set[bytes]:
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def naive_walk_order(tree: MerkleTree, found: set[bytes], start: int) -> list[bytes]:
    return sorted(found, key=lambda k: ((tree.bucket_of(k) - start) % tree.segments, k))


def all_nodes(tree: MerkleTree) -> list[bytes]:
    return [tree.node_hash(lv, i) for lv in range(tree.depth + 1) for i in range(tree.width(lv))]


def build(shape: tuple[int, int], contents: Items) -> MerkleTree:
    return rebuild(contents.items(), segments=shape[0], fanout=shape[1])


def run_diff(
    shape: tuple[int, int], a: Items, b: Items, budget: int = UNBOUNDED, start: int = 0
) -> tuple[MerkleTree, MerkleTree, DiffResult]:
    local, remote = build(shape, a), build(shape, b)
    ask: Callable[[Query], Answer] = lambda query: answer(remote, query)  # noqa: E731
    return local, remote, diff(local, ask, budget, start % shape[0])


# The diff equals a dict comparison ----------------------------------------------------


@PROPS
@given(shapes, diverged())
def test_unbounded_diff_reports_exactly_the_differing_keys(
    shape: tuple[int, int], pair: tuple[Items, Items]
) -> None:
    a, b = pair
    local, _, result = run_diff(shape, a, b)
    expected = naive_diff(a, b)
    assert sorted(result.keys) == sorted(expected)
    assert result.local_only == {k for k in expected if k not in b}
    assert result.remote_only == {k for k in expected if k not in a}
    assert not result.truncated and result.resume_bucket is None
    assert result.stats.queries == (1 if not expected else local.depth + 2)


@PROPS
@given(shapes, items)
def test_identical_trees_cost_one_root_query(shape: tuple[int, int], a: Items) -> None:
    _, _, result = run_diff(shape, a, dict(reversed(list(a.items()))))
    assert result.keys == ()
    assert (result.stats.queries, result.stats.hashes) == (1, 1)


@PROPS
@given(shapes, diverged(), st.integers(1, 8), st.integers(0, 63))
def test_budget_reports_the_first_keys_in_walk_order(
    shape: tuple[int, int], pair: tuple[Items, Items], budget: int, start: int
) -> None:
    a, b = pair
    local, _, result = run_diff(shape, a, b, budget, start)
    expected = naive_walk_order(local, naive_diff(a, b), start % shape[0])
    assert list(result.keys) == expected[:budget]
    assert result.truncated == (len(expected) > budget)
    if result.truncated:
        assert result.resume_bucket == (local.bucket_of(result.keys[-1]) + 1) % shape[0]


@PROPS
@given(shapes, diverged(), st.integers(1, 8))
def test_exchange_cost_is_bounded_by_the_differences(
    shape: tuple[int, int], pair: tuple[Items, Items], budget: int
) -> None:
    a, b = pair
    local, remote, result = run_diff(shape, a, b, budget)
    m = min(len(naive_diff(a, b)), budget + 1)  # + 1: the pivot node, see _Walk.cut_nodes
    biggest = max((len(remote.bucket_items(i)) for i in range(shape[0])), default=0)
    assert result.stats.queries <= local.depth + 2
    assert result.stats.hashes <= 1 + shape[1] * local.depth * m + m * biggest


@PROPS
@given(shapes, diverged())
def test_diff_is_symmetric(shape: tuple[int, int], pair: tuple[Items, Items]) -> None:
    a, b = pair
    _, _, forth = run_diff(shape, a, b)
    _, _, back = run_diff(shape, b, a)
    assert set(forth.keys) == set(back.keys)
    assert (forth.local_only, forth.remote_only) == (back.remote_only, back.local_only)


# Incremental maintenance equals a rebuild ---------------------------------------------

operations = st.lists(
    st.tuples(keys, st.none() | hashes, st.booleans(), st.integers(0, 1 << 16)), max_size=60
)


@PROPS
@given(shapes, items, operations)
def test_incremental_updates_equal_a_rebuild_of_the_final_items(
    shape: tuple[int, int], initial: Items, ops: list[tuple[bytes, bytes | None, bool, int]]
) -> None:
    tree = build(shape, initial)
    final = dict(initial)
    for key, vhash, probe, where in ops:
        tree.update(key, vhash)
        _edited_in_place(final, key, vhash)
        if probe:  # clean part of the tree between updates: the lazy path must stay right
            level = where % (tree.depth + 1)
            tree.node_hash(level, where % tree.width(level))
    fresh = build(shape, final)
    assert dict(tree.items()) == final and len(tree) == len(final)
    assert all_nodes(tree) == all_nodes(fresh)


def _edited_in_place(target: Items, key: bytes, vhash: bytes | None) -> None:
    if vhash is None:
        target.pop(key, None)
    else:
        target[key] = vhash


@PROPS
@given(shapes, items.flatmap(lambda a: st.tuples(st.just(a), st.permutations(list(a.items())))))
def test_the_root_does_not_depend_on_update_order(
    shape: tuple[int, int], pair: tuple[Items, list[tuple[bytes, bytes]]]
) -> None:
    final, shuffled = pair
    other = rebuild(shuffled, segments=shape[0], fanout=shape[1])
    assert all_nodes(build(shape, final)) == all_nodes(other)


@PROPS
@given(shapes, items, edits)
def test_update_then_revert_restores_the_tree(
    shape: tuple[int, int], initial: Items, changes: dict[bytes, bytes | None]
) -> None:
    tree = build(shape, initial)
    before = all_nodes(tree)
    for key, vhash in changes.items():
        tree.update(key, vhash)
    tree.root()
    for key in reversed(list(changes)):
        tree.update(key, initial.get(key))
    assert all_nodes(tree) == before and dict(tree.items()) == initial


# version_hash -------------------------------------------------------------------------

json_values = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["x", "y"])


@st.composite
def versions(draw: st.DrawFn) -> Version:
    node = draw(st.sampled_from(NODES))
    others = st.sampled_from([n for n in NODES if n != node])
    context = draw(st.dictionaries(others, st.integers(1, 3), max_size=2))
    return make_version(
        (node, draw(st.integers(1, 3))), context, draw(json_values), draw(st.booleans())
    )


def canonical(vs: list[Version]) -> list[str]:
    return sorted(json.dumps(v.to_wire(), sort_keys=True) for v in vs)


@PROPS
@given(
    st.lists(versions(), min_size=1, max_size=5).flatmap(
        lambda v: st.tuples(st.just(v), st.permutations(v))
    )
)
def test_version_hash_is_order_independent(pair: tuple[list[Version], list[Version]]) -> None:
    vs, permuted = pair
    assert version_hash(vs) == version_hash(permuted)


@PROPS
@given(st.lists(versions(), min_size=1, max_size=3), st.lists(versions(), min_size=1, max_size=3))
def test_version_hash_separates_different_version_sets(a: list[Version], b: list[Version]) -> None:
    assert (version_hash(a) == version_hash(b)) == (canonical(a) == canonical(b))


# Any JSON a client may store: text of any code point but lone surrogates (kv.routing refuses
# them), finite floats, integers in orjson's range, nested containers — with the characters
# and floats whose stdlib form differs from orjson's drawn often (DEL, non-ASCII, controls,
# floats the stdlib writes with a negative exponent).
EDGES = "\x7f\x00\x1fé\u2028😀a"
any_text = st.text(st.sampled_from(EDGES), max_size=4) | st.text(
    st.characters(blacklist_categories=("Cs",)), max_size=4
)
any_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.sampled_from([1e-7, 9.763169972120654e-05, 1e16, 1e22, 5e-324, -0.0])
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)


@PROPS
@given(versions(), any_json, st.integers(0, 2**41), st.none() | st.integers(1, 2**41))
@example(make_version(("A", 1), {}, None), "\x7f", 0, None)
@example(make_version(("A", 1), {}, None), "é", 0, None)
@example(make_version(("A", 1), {}, None), 1e-7, 0, None)
@example(make_version(("A", 1), {}, None), {"k": [9.763169972120654e-05]}, 0, None)
def test_canonical_form_is_the_stdlib_sorted_json_whatever_the_value(
    v: Version, value: object, ts: int, expires_at: int | None
) -> None:
    """Merkle leaves must hash alike on every build: the fast path gives the stdlib's bytes."""
    v = replace(v, value=value, ts=ts, expires_at=None if v.deleted else expires_at)
    stdlib = json.dumps(v.to_wire(), sort_keys=True, separators=(",", ":")).encode()
    assert canonical_form(v) == stdlib
