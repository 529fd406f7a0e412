"""Ring and token unit tests: recorded vectors, validation, the API surface.

References: Dynamo §4.2 (ring, preference list), §6.2 strategy 3 (Q equal
partitions); Riak riak_core_apl (primaries, then fallbacks).
"""

from __future__ import annotations

import json

import pytest

from kv.hashing import SEED, token, vnode_token
from kv.ring import Ring

# Recorded once; a change means every key moves. Never "fix" by updating.
RECORDED_TOKENS = [
    ("default", "a", 15278850519726138656),
    ("users", "alice", 12868855988309233409),
    ("", "", 7541360195050559371),
    ("ks", "ключ", 16573837180599952362),
]

RECORDED_VNODE_TOKENS = [
    ("n1", 0, 8321058658801923417),
    ("node-a", 7, 4674172289229121282),
]

# Ring(("a", "b", "c", "d"), partitions=8, vnodes=4).walk(p) for p in 0..7.
RECORDED_WALKS = [
    ("c", "d", "a", "b"),
    ("b", "c", "d", "a"),
    ("c", "d", "a", "b"),
    ("a", "b", "d", "c"),
    ("b", "d", "c", "a"),
    ("d", "c", "a", "b"),
    ("c", "a", "d", "b"),
    ("c", "a", "d", "b"),
]

SMALL = Ring(("a", "b", "c", "d"), partitions=8, vnodes=4)


def test_seed_is_fixed() -> None:
    assert SEED == 0x6B76


@pytest.mark.parametrize(("keyspace", "key", "expected"), RECORDED_TOKENS)
def test_recorded_token(keyspace: str, key: str, expected: int) -> None:
    assert token(keyspace, key) == expected


@pytest.mark.parametrize(("node", "index", "expected"), RECORDED_VNODE_TOKENS)
def test_recorded_vnode_token(node: str, index: int, expected: int) -> None:
    assert vnode_token(node, index) == expected


def test_recorded_walks() -> None:
    assert [SMALL.walk(p) for p in range(8)] == RECORDED_WALKS


def test_keyspace_with_nul_is_rejected() -> None:
    with pytest.raises(ValueError, match="keyspace"):
        token("a\0b", "c")


def test_keyspace_and_key_are_separated() -> None:
    assert token("ab", "c") != token("a", "bc")


# -- validation (STYLE.md rule 6: messages name field and value) -------------------


@pytest.mark.parametrize("partitions", [0, 3, 12, 2**17, -4, True, 2.0])
def test_bad_partitions(partitions: object) -> None:
    with pytest.raises(ValueError, match=rf"partitions.*{partitions!r}"):
        Ring(("a",), partitions=partitions)  # type: ignore[arg-type]


@pytest.mark.parametrize("partitions", [1, 2, 64, 2**16])
def test_good_partitions(partitions: int) -> None:
    assert Ring(("a",), partitions=partitions, vnodes=1).partitions == partitions


@pytest.mark.parametrize("vnodes", [0, 4097, -1, False])
def test_bad_vnodes(vnodes: object) -> None:
    with pytest.raises(ValueError, match=rf"vnodes.*{vnodes!r}"):
        Ring(("a",), vnodes=vnodes)  # type: ignore[arg-type]


def test_duplicate_nodes() -> None:
    with pytest.raises(ValueError, match=r"nodes.*'a'"):
        Ring(("a", "b", "a"))


@pytest.mark.parametrize("node", ["", 3, None])
def test_bad_node(node: object) -> None:
    with pytest.raises(ValueError, match="nodes"):
        Ring(("a", node))  # type: ignore[arg-type]


def test_nodes_must_be_tuple() -> None:
    with pytest.raises(ValueError, match="nodes"):
        Ring(["a"])  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [0, -1])
def test_bad_n(n: int) -> None:
    with pytest.raises(ValueError, match=rf"n .*{n}"):
        SMALL.preference_list(0, n)


@pytest.mark.parametrize("partition", [-1, 8])
def test_bad_partition(partition: int) -> None:
    with pytest.raises(ValueError, match=rf"partition.*{partition}"):
        SMALL.walk(partition)


@pytest.mark.parametrize("tok", [-1, 2**64])
def test_bad_token(tok: int) -> None:
    with pytest.raises(ValueError, match="token"):
        SMALL.partition_of(tok)


# -- key space -----------------------------------------------------------------


def test_partition_boundaries() -> None:
    ring = Ring(("a",), partitions=64, vnodes=1)
    width = 2**64 // 64
    assert ring.partition_of(0) == 0
    assert ring.partition_of(width - 1) == 0
    assert ring.partition_of(width) == 1
    assert ring.partition_of(2**64 - 1) == 63


def test_single_partition_holds_everything() -> None:
    ring = Ring(("a", "b"), partitions=1, vnodes=2)
    assert ring.partition_of(2**64 - 1) == 0
    assert set(ring.walk(0)) == {"a", "b"}


def test_key_partition_uses_token() -> None:
    assert SMALL.key_partition("users", "alice") == SMALL.partition_of(token("users", "alice"))


# -- preference lists ------------------------------------------------------------


def test_empty_ring_walks_are_empty() -> None:
    ring = Ring(())
    assert ring.walk(0) == ()
    assert ring.preference_list(5, 3) == ()
    assert ring.fallbacks(5, 3) == ()
    assert ring.annotated(5, 3) == []
    assert ring.partitions_of("a", 3) == []


def test_primaries_then_fallbacks() -> None:
    walk = SMALL.walk(0)
    assert SMALL.preference_list(0, 2) == walk[:2]
    assert SMALL.fallbacks(0, 2) == walk[2:]
    assert SMALL.annotated(0, 2) == [
        (walk[0], "primary"),
        (walk[1], "primary"),
        (walk[2], "fallback"),
        (walk[3], "fallback"),
    ]


def test_n_larger_than_cluster_gives_all_nodes() -> None:
    assert SMALL.preference_list(3, 10) == SMALL.walk(3)
    assert SMALL.fallbacks(3, 10) == ()


def test_partitions_of() -> None:
    expected = [p for p in range(8) if "a" in RECORDED_WALKS[p][:2]]
    assert SMALL.partitions_of("a", 2) == expected
    assert SMALL.partitions_of("zz", 2) == []


# -- membership and serialisation ------------------------------------------------


def test_with_and_without_node() -> None:
    bigger = SMALL.with_node("e")
    assert bigger.nodes == ("a", "b", "c", "d", "e")
    assert bigger.without_node("e") == SMALL
    with pytest.raises(ValueError, match="'a'"):
        SMALL.with_node("a")
    with pytest.raises(ValueError, match="'e'"):
        SMALL.without_node("e")


def test_node_order_does_not_change_placement() -> None:
    shuffled = Ring(("d", "b", "a", "c"), partitions=8, vnodes=4)
    assert [shuffled.walk(p) for p in range(8)] == RECORDED_WALKS


def test_ring_is_hashable_and_compared_by_config() -> None:
    same = Ring(("a", "b", "c", "d"), partitions=8, vnodes=4)
    assert same == SMALL
    assert hash(same) == hash(SMALL)
    assert SMALL != Ring(("a", "b", "c", "d"), partitions=8, vnodes=5)


def test_dict_round_trip_through_json() -> None:
    d = json.loads(json.dumps(SMALL.to_dict()))
    assert d == {"nodes": ["a", "b", "c", "d"], "partitions": 8, "vnodes": 4}
    assert Ring.from_dict(d) == SMALL


def test_from_dict_rejects_unknown_key() -> None:
    with pytest.raises(ValueError, match="'replicas'"):
        Ring.from_dict({**SMALL.to_dict(), "replicas": 3})


def test_from_dict_requires_every_key() -> None:
    with pytest.raises(ValueError, match="'partitions'"):
        Ring.from_dict({"nodes": ["a"], "vnodes": 4})


def test_from_dict_validates() -> None:
    with pytest.raises(ValueError, match="partitions.*6"):
        Ring.from_dict({"nodes": ["a"], "partitions": 6, "vnodes": 4})
    with pytest.raises(ValueError, match="nodes"):
        Ring.from_dict({"nodes": "ab", "partitions": 8, "vnodes": 4})
