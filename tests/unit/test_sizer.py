"""kv/sizer.py: a node answers `part_sizes` from its tallies (counting what it was not asked
before, for at most the caller's `wait_s`), shows the sizes of the pending moves it serves
in `/v1/cluster`, and the node serving a plan asks the partitions' owners, leaving the
partitions of an owner that fails unknown. kv/service.py fills the plan with them."""

from __future__ import annotations

import asyncio
from typing import Any

from dynamo_mode.replica import LAYOUT, DynamoReplica, KeyRef
from dynamo_mode.siblings import make_version
from kv.errors import PeerUnreachable
from kv.internode import Operation, OpTable
from kv.memory import MemoryEngine
from kv.meta import Metadata, MoveKey
from kv.service import Service
from kv.sizer import PlanSizer, SizeServer
from kv.sizes import Size, SizesRequest, group_number
from kv.tally import TalliedEngine
from raft_groups import state_machine
from raft_groups.commands import Command, encode
from tests.unit.test_meta_membership import ADD4, commit, metadata
from tests.unit.test_service_membership import FixedMeta

UID = metadata().keyspaces[0].uid


def node_store(
    node: str, partitions: dict[int, int]
) -> tuple[TalliedEngine, TalliedEngine, MemoryEngine]:
    """One node's engine with `count` eventual keys in each partition, and a Raft group
    (replication 2, partition 3) with one applied write."""
    base = MemoryEngine()
    eventual = TalliedEngine(base, LAYOUT)
    replica = DynamoReplica(eventual, node)
    for p, count in partitions.items():
        for i in range(count):
            replica.store(KeyRef(p, UID, f"k{i}"), (make_version((node, i + 1), {}, i),))
    groups = TalliedEngine(base, state_machine.LAYOUT)
    cmd = Command(op="put", uid=UID, key="x", value="v" * 50, request_id="r1")
    batch, _ = state_machine.apply(groups, group_number(2, 3), 1, encode(cmd))
    groups.write(batch)
    return eventual, groups, base


def server(node: str, partitions: dict[int, int]) -> SizeServer:
    eventual, groups, _ = node_store(node, partitions)
    return SizeServer(eventual, groups, lambda: [group_number(2, 3)])


def test_a_node_counts_what_it_is_asked_for_within_the_wait() -> None:
    srv = server("n1", {3: 4, 5: 0})
    asked = SizesRequest((3, 5), (group_number(2, 3), group_number(2, 9)), wait_s=5.0)
    reply = asyncio.run(srv.part_sizes(asked))
    (p3, p5) = reply.eventual
    assert (p3.scope, p3.by_uid[UID].keys) == (3, 4) and p3.by_uid[UID].bytes > 0
    assert (p5.scope, p5.by_uid) == (5, {})  # holds nothing there: a known 0
    (group,) = reply.linearizable  # group p9r2 is not run here: left out, unknown
    assert group.scope == group_number(2, 3) and group.by_uid[UID].keys == 1
    assert group.by_uid[0].keys >= 2  # applied index and the request id: bookkeeping


def test_without_waiting_a_node_answers_what_it_counted_and_counts_the_rest() -> None:
    srv = server("n1", {3: 4})

    async def twice() -> tuple[Any, Any]:
        first = await srv.part_sizes(SizesRequest((3,), (), wait_s=0.0))
        assert srv._counting is not None
        await srv._counting
        return first, await srv.part_sizes(SizesRequest((3,), (), wait_s=0.0))

    first, second = asyncio.run(twice())
    assert first.eventual == () and second.eventual[0].by_uid[UID].keys == 4


def test_cluster_view_lists_the_pending_moves_this_node_serves() -> None:
    md, _ = commit(metadata(), ADD4)
    assert isinstance(md, Metadata) and md.transition is not None
    key = next(k for k in sorted(md.transition.pending) if "n1" in md.owners(*k)[0])
    srv = server("n1", {key[2]: 3})

    async def look() -> list[dict[str, Any]]:
        srv.of_moves(md, "n1")  # the first look starts counting
        assert srv._counting is not None
        await srv._counting
        return srv.of_moves(md, "n1")

    shown = asyncio.run(look())
    mine = [k for k in sorted(md.transition.pending) if "n1" in md.owners(*k)[0]]
    assert [(s["mode"], s["replication"], s["partition"]) for s in shown] == mine
    entry = next(s for s in shown if s["partition"] == key[2])
    assert entry["keys"] == 3 and entry["bytes"] > 0


class Peers:
    """A transport to each node's own table; `down` nodes are unreachable."""

    def __init__(self, tables: dict[str, OpTable], down: set[str]) -> None:
        self.tables, self.down = tables, down
        self.asked: list[str] = []

    async def call(self, node: str, op: Operation[Any, Any], request: Any, timeout: float) -> Any:
        self.asked.append(node)
        if node in self.down:
            raise PeerUnreachable(f"{node} is down")
        return await self.tables[node].call_local(op, request)


def test_the_plan_asks_one_owner_per_partition_and_an_owner_down_leaves_them_unknown() -> None:
    md = metadata()
    tables = {}
    for n in ("n1", "n2", "n3"):
        tables[n] = OpTable()
        server(n, {p: 2 for p in range(md.partitions)}).register(tables[n])
    moving: list[MoveKey] = [("eventual", 2, p) for p in range(md.partitions)]
    peers = Peers(tables, down={"n2"})
    sizes = asyncio.run(PlanSizer(peers, lambda n: True, timeout=5.0)(md, moving))
    asked = {k: md.owners(*k)[0][0] for k in moving}
    assert sorted(peers.asked) == sorted(set(asked.values()))  # one call per owner asked
    assert set(sizes) == {k for k, n in asked.items() if n != "n2"}
    assert all(s.keys == 2 and s.bytes > 0 for s in sizes.values())


def test_the_service_fills_the_plan_and_marks_what_it_could_not_size() -> None:
    md = metadata()

    async def sizer(given: Metadata, moving: Any) -> dict[MoveKey, Size]:
        keys = sorted(moving)
        return {k: Size(1, 100) for k in keys[::2]}  # half of them: the rest unknown

    body = {"changes": [c.to_wire() for c in ADD4]}
    shown = asyncio.run(Service(FixedMeta(md), {}, dict, sizer).membership_plan(body))
    known = [m for m in shown["moves"] if m["bytes"] is not None]
    assert {m["bytes"] for m in known} == {100} and len(known) == (len(shown["moves"]) + 1) // 2
    assert shown["summary"]["bytes"] == 100 * len(known)
    assert shown["summary"]["bytes_unknown"] == len(shown["moves"]) - len(known)
    bare = asyncio.run(Service(FixedMeta(md), {}, dict).membership_plan(body))
    assert bare["plan_id"] == shown["plan_id"]  # sizes never enter the plan id
