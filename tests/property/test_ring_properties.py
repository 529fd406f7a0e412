"""Ring properties against a naive oracle (STYLE.md rule 7).

Dynamo §4.2: the preference list is the first N distinct nodes clockwise;
§6.2 strategy 3: Q equal partitions. Monotonicity (kv/ring.py docstring):
adding a node moves primaries only onto it, removing one only off it.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from kv.hashing import token, vnode_token
from kv.ring import Ring

SPACE = 2**64

node_ids = st.text(alphabet="abcdefgh0123456789-#", min_size=1, max_size=6)
node_sets = st.lists(node_ids, min_size=0, max_size=8, unique=True).map(tuple)
partition_counts = st.sampled_from([1, 2, 4, 8, 16, 32, 64])
vnode_counts = st.integers(min_value=1, max_value=16)
tokens = st.integers(min_value=0, max_value=SPACE - 1)
replicas = st.integers(min_value=1, max_value=5)


@st.composite
def rings(draw: st.DrawFn, min_nodes: int = 0) -> Ring:
    nodes = draw(node_sets.filter(lambda ns: len(ns) >= min_nodes))
    return Ring(nodes, draw(partition_counts), draw(vnode_counts))


def oracle_walk(ring: Ring, partition: int) -> tuple[str, ...]:
    """Brute force: rotate the sorted (token, node) list to the partition's end point."""
    points = sorted((vnode_token(n, i), n) for n in ring.nodes for i in range(ring.vnodes))
    end = (partition + 1) * SPACE // ring.partitions % SPACE
    clockwise = [n for t, n in points if t >= end] + [n for t, n in points if t < end]
    walk: list[str] = []
    for node in clockwise:
        if node not in walk:
            walk.append(node)
    return tuple(walk)


def primaries(ring: Ring, n: int) -> list[set[str]]:
    return [set(ring.preference_list(p, n)) for p in range(ring.partitions)]


@settings(print_blob=True)
@given(rings())
def test_walk_matches_oracle(ring: Ring) -> None:
    for p in range(ring.partitions):
        assert ring.walk(p) == oracle_walk(ring, p)


@settings(print_blob=True)
@given(rings(), replicas)
def test_preference_list_is_n_distinct_nodes(ring: Ring, n: int) -> None:
    for p in range(ring.partitions):
        prefs = ring.preference_list(p, n)
        assert len(prefs) == len(set(prefs)) == min(n, len(ring.nodes))
        assert set(prefs) <= set(ring.nodes)
        assert prefs + ring.fallbacks(p, n) == ring.walk(p)
        assert sorted(ring.walk(p)) == sorted(ring.nodes)


@settings(print_blob=True)
@given(rings(), replicas)
def test_annotated_tags_primaries_then_fallbacks(ring: Ring, n: int) -> None:
    for p in range(ring.partitions):
        expected = [(x, "primary") for x in ring.preference_list(p, n)]
        expected += [(x, "fallback") for x in ring.fallbacks(p, n)]
        assert ring.annotated(p, n) == expected


@settings(print_blob=True)
@given(rings(), node_ids)
def test_adding_a_node_moves_primaries_only_onto_it(ring: Ring, new: str) -> None:
    if new in ring.nodes:
        return
    bigger = ring.with_node(new)
    for n in range(1, 6):
        for old, now in zip(primaries(ring, n), primaries(bigger, n), strict=True):
            assert now - old <= {new}


@settings(print_blob=True)
@given(rings(min_nodes=1), st.data())
def test_removing_a_node_moves_primaries_only_off_it(ring: Ring, data: st.DataObject) -> None:
    gone = data.draw(st.sampled_from(ring.nodes))
    smaller = ring.without_node(gone)
    for n in range(1, 6):
        for old, now in zip(primaries(ring, n), primaries(smaller, n), strict=True):
            assert old - now <= {gone}


@settings(print_blob=True)
@given(rings(), node_ids)
def test_adding_a_node_only_inserts_it_into_walks(ring: Ring, new: str) -> None:
    if new in ring.nodes:
        return
    bigger = ring.with_node(new)
    for p in range(ring.partitions):
        assert tuple(x for x in bigger.walk(p) if x != new) == ring.walk(p)


@settings(print_blob=True)
@given(rings())
def test_dict_round_trip(ring: Ring) -> None:
    again = Ring.from_dict(json.loads(json.dumps(ring.to_dict())))
    assert again == ring
    assert [again.walk(p) for p in range(again.partitions)] == [
        ring.walk(p) for p in range(ring.partitions)
    ]


@settings(print_blob=True)
@given(partition_counts, tokens, tokens)
def test_partition_of_in_range_and_monotonic(q: int, a: int, b: int) -> None:
    ring = Ring((), partitions=q)
    lo, hi = sorted((a, b))
    assert 0 <= ring.partition_of(lo) <= ring.partition_of(hi) < q
    p = ring.partition_of(a)
    assert p * SPACE // q <= a < (p + 1) * SPACE // q


@settings(print_blob=True)
@given(rings(), replicas)
def test_partitions_of_matches_preference_lists(ring: Ring, n: int) -> None:
    for node in ring.nodes:
        expected = [p for p in range(ring.partitions) if node in ring.preference_list(p, n)]
        assert ring.partitions_of(node, n) == expected


@settings(print_blob=True)
# codec="utf-8": names and keys reach `token` as decoded UTF-8 (kv/http/app.py `key_of`),
# so never as lone surrogates, which `st.characters()` draws now and then
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0")), st.text())
def test_token_is_unsigned_64_bit(keyspace: str, key: str) -> None:
    assert 0 <= token(keyspace, key) < SPACE
