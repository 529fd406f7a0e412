"""Tombstone purge decisions and the replica's compare-and-delete (DESIGN.md §4)."""

from __future__ import annotations

from dynamo_mode import siblings
from dynamo_mode.replica import DynamoReplica, KeyRef
from dynamo_mode.tombstones import purgeable
from kv.memory import MemoryEngine

A = siblings.make_version(("n1", 1), {}, "a")
T = siblings.make_version(("n1", 2), {"n1": 1}, None, deleted=True)
T2 = siblings.make_version(("n2", 1), {"n1": 1}, None, deleted=True)
REPLICAS = ("n1", "n2", "n3")


def test_purge_needs_every_replica_with_the_same_tombstones() -> None:
    assert purgeable(REPLICAS, {n: (T,) for n in REPLICAS}) == {("n1", 2)}
    assert purgeable(REPLICAS, {"n1": (T,), "n2": (T,)}) is None  # n3 did not answer
    assert purgeable(REPLICAS, {"n1": (T,), "n2": (T,), "n3": (A,)}) is None  # a value remains
    assert purgeable(REPLICAS, {"n1": (T,), "n2": (T,), "n3": (T2,)}) is None  # not the same
    assert purgeable(REPLICAS, {"n1": (T,), "n2": (T,), "n3": ()}) is None
    assert purgeable((), {}) is None


def test_replica_marks_tombstones_and_purges_only_the_confirmed_set() -> None:
    now = [100.0]
    replica = DynamoReplica(MemoryEngine(), "n1", clock=lambda: now[0])
    ref = KeyRef(3, 7, "k")
    replica.store(ref, (A,))
    assert replica.tombstones(older_than=1e9, limit=10) == []
    replica.store(ref, (T,))
    now[0] = 200.0
    replica.store(KeyRef(3, 7, "other"), (T2,))
    assert [r.key for r, _ in replica.tombstones(older_than=150.0, limit=10)] == ["k"]
    assert not replica.purge(ref, {("n9", 1)})  # not the set it holds
    tree_before = replica.tree(3).root()
    assert replica.purge(ref, {("n1", 2)})
    assert replica.fetch(ref) == ()
    assert replica.tree(3).root() != tree_before
    assert [r.key for r, _ in replica.tombstones(older_than=1e9, limit=10)] == ["other"]


def test_a_value_written_after_the_tombstone_clears_the_marker() -> None:
    replica = DynamoReplica(MemoryEngine(), "n1", clock=lambda: 1.0)
    ref = KeyRef(0, 1, "k")
    replica.store(ref, (T,))
    newer = siblings.make_version(("n2", 5), {"n1": 2}, "back")
    replica.store(ref, (newer,))
    assert replica.tombstones(older_than=1e9, limit=10) == []
    assert not replica.purge(ref, {("n1", 2)})
    assert [v.value for v in replica.fetch(ref)] == ["back"]
