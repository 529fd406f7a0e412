"""Tombstone purge decisions and the replica's compare-and-delete (DESIGN.md §4)."""

from __future__ import annotations

import asyncio

from dynamo_mode import siblings
from dynamo_mode.replica import DynamoReplica, KeyRef
from dynamo_mode.replica_server import serve
from dynamo_mode.tombstones import TombstoneReaper, purgeable
from kv.errors import InvalidRequest
from kv.internode import Operation, Req, Resp
from kv.keyspace import KeyspaceConfig
from kv.memory import MemoryEngine
from kv.meta import Member, Metadata

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


# -- the reaper skips and reports what it cannot purge (issue 11 item 6) ---------------------


class Refusing:
    """A transport over three replicas; `n3` refuses the fetch of the keys in `refuse`."""

    def __init__(self, replicas: dict[str, DynamoReplica], refuse: set[str]) -> None:
        self.replicas = replicas
        self.refuse = refuse

    async def call(self, node: str, op: Operation[Req, Resp], request: Req, timeout: float) -> Resp:
        ref = getattr(request, "ref", None)
        if node == "n3" and ref is not None and ref.key in self.refuse:
            raise InvalidRequest("ref", "refused")
        return await serve(self.replicas[node]).call_local(op, request)


def test_the_reaper_skips_and_reports_a_tombstone_it_cannot_purge() -> None:
    ks = KeyspaceConfig("ks", "eventual", 3, 2, 2, uid=7)
    members = tuple(
        Member(n, f"127.0.0.1:{i}", f"127.0.0.1:{i + 10}") for i, n in enumerate(REPLICAS)
    )
    md = Metadata(epoch=1, members=members, partitions=4, vnodes=4, keyspaces=(ks,))
    replicas = {n: DynamoReplica(MemoryEngine(), n, clock=lambda: 1.0) for n in REPLICAS}
    keys = ("a-refused", "b-fine", "c-fine")
    for key in keys:
        for rep in replicas.values():
            rep.store(KeyRef(0, 7, key), (T,))
    reaper = TombstoneReaper(
        replicas["n1"],
        Refusing(replicas, {"a-refused"}),
        lambda: md,
        lambda: 10.0,
        grace=1.0,
        batch=1,
    )
    for _ in range(4):  # one tombstone per sweep: the refused one must not hold back the rest
        asyncio.run(reaper.sweep_once())
    assert reaper.purged == 2 and reaper.skipped >= 1
    assert [r.key for r, _ in replicas["n1"].tombstones(1e9, 10)] == ["a-refused"]
    assert all(rep.fetch(KeyRef(0, 7, "c-fine")) == () for rep in replicas.values())
