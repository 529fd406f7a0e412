"""raft_groups/frontend.py with its I/O replaced by twins: which requests are proposed here,
which are forwarded (`lin_forward`) and to whom, and what each transport outcome becomes.

Five members, replication 1 (each key's group is one node): from any node, 4/5 of keys are
forwarded. The transport twin serves `lin_forward` with the target node's frontend, or
refuses (PeerUnreachable) or loses the reply (PeerTimeout) for chosen nodes; the Raft
groups twin applies commands to a dict, or fails them as chosen.
"""

from __future__ import annotations

import asyncio
from functools import partial
from types import SimpleNamespace
from typing import Any, cast

import pytest

from kv import routing
from kv.errors import (
    ConditionFailed,
    KeyNotFound,
    NoLeader,
    PeerTimeout,
    PeerUnreachable,
    Retryable,
    UnknownOutcome,
)
from kv.internode import Operation, OpTable, Req, Resp
from kv.keyspace import KeyspaceConfig
from kv.meta import Metadata
from kv.meta_machine import apply
from kv.routing import Options
from raft_groups import commands
from raft_groups.forwarding import Forwarded
from raft_groups.frontend import LinearizableKeys
from raft_groups.layout import Record
from raft_groups.manager import RaftGroups
from raft_groups.placement import GroupSpec
from raft_groups.syncobj_adapter import RaftStatus

NODES = [f"n{i}" for i in range(1, 6)]


def metadata(replication: int) -> Metadata:
    members = [{"id": n, "http": f"{n}:1", "raft": f"{n}:2"} for n in NODES]
    boot = {"type": "bootstrap", "members": members, "partitions": 16, "vnodes": 8}
    md, _ = apply(Metadata(), boot)
    ks = KeyspaceConfig("lin", "linearizable", replication)
    md, outcome = apply(md, {"type": "put_keyspace", "keyspace": ks.to_dict()})
    assert outcome["status"] == "created", outcome
    return md


class Groups:
    """RaftGroups' twin: one dict per node, every proposal committed at once."""

    def __init__(self, me: str = "") -> None:
        self.data: dict[str, tuple[Any, int]] = {}
        self.fail: Exception | None = None
        self.proposed: list[commands.Command] = []
        self.me = me  # this node's Raft address
        self.leader: str | None = None  # the Raft address of the leader it knows

    def hosted(self, spec: GroupSpec) -> Any:
        mine = self.leader is not None and self.leader == self.me
        status = RaftStatus(self.leader, mine, 1, 0, 0, True)
        return SimpleNamespace(group=SimpleNamespace(status=lambda: status))

    async def propose(
        self, spec: GroupSpec, command: commands.Command, timeout: float
    ) -> dict[str, Any]:
        self.proposed.append(command)
        if self.fail is not None:
            raise self.fail
        _, version = self.data.get(command.key, (None, 0))
        if command.if_version is not None and command.if_version != version:
            return {"ok": False, "code": "condition_failed", "current_version": version}
        self.data[command.key] = (command.value, version + 1)
        return {"ok": True, "version": version + 1}

    async def read(
        self, spec: GroupSpec, uid: int, key: str, timeout: float, stale: bool, guard: bool = False
    ) -> Record | None:
        found = self.data.get(key)
        return None if found is None else Record(*found)


class Net:
    def __init__(self) -> None:
        self.tables: dict[str, OpTable] = {}
        self.refuse: set[str] = set()
        self.lose_reply: set[str] = set()
        self.sent: list[tuple[str, str]] = []

    def transport(self, src: str) -> Any:
        net = self

        class Transport:
            async def call(
                self, node: str, op: Operation[Req, Resp], request: Req, timeout: float
            ) -> Resp:
                net.sent.append((src, node))
                if node in net.refuse:
                    raise PeerUnreachable(f"{node} refused")
                reply = await net.tables[node].dispatch(op.name, request.to_wire())
                if node in net.lose_reply:
                    raise PeerTimeout(f"{node} did not answer")
                return op.reply(reply)

        return Transport()


class Cluster:
    def __init__(self, replication: int = 1) -> None:
        self.md = metadata(replication)
        self.net = Net()
        self.groups = {n: Groups(f"{n}:2") for n in NODES}
        self.clocks = {n: 1000.0 * i for i, n in enumerate(NODES, 1)}  # skewed on purpose
        self.keys: dict[str, LinearizableKeys] = {}
        for n in NODES:
            groups = cast(RaftGroups, self.groups[n])
            transport = self.net.transport(n)
            clock = partial(self.clocks.__getitem__, n)
            self.keys[n] = LinearizableKeys(groups, n, transport, lambda: self.md, clock)
            self.net.tables[n] = OpTable()
            self.keys[n].register(self.net.tables[n])

    def key_owned_by(self, owner: str) -> str:
        for i in range(10_000):
            key = f"k{i}"
            if routing.place(self.md, self.ks, key).replicas[0] == owner:
                return key
        raise AssertionError(owner)

    @property
    def ks(self) -> KeyspaceConfig:
        ks = self.md.keyspace("lin")
        assert ks is not None
        return ks

    async def put(self, via: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
        req = routing.put_request(self.md, "lin", key, body, Options(timeout_s=1.0))
        return await self.keys[via].put(req)

    async def get(self, via: str, key: str) -> dict[str, Any]:
        req = routing.get_request(self.md, "lin", key, Options(timeout_s=1.0))
        return await self.keys[via].get(req)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_member_proposes_locally_and_others_forward_to_it() -> None:
    async def scenario() -> None:
        c = Cluster()
        key = c.key_owned_by("n3")
        assert await c.put("n3", key, {"value": "a"}) == {"version": 1}
        assert c.net.sent == []  # the member itself: no network
        assert await c.put("n1", key, {"value": "b"}) == {"version": 2}
        assert c.net.sent == [("n1", "n3")]
        assert c.groups["n3"].data[key] == ("b", 2) and not c.groups["n1"].data
        assert await c.get("n5", key) == {"key": key, "value": "b", "version": 2}

    run(scenario())


def test_errors_come_back_typed_through_the_forward() -> None:
    async def scenario() -> None:
        c = Cluster()
        key = c.key_owned_by("n2")
        with pytest.raises(KeyNotFound):
            await c.get("n1", key)
        await c.put("n1", key, {"value": 1, "if_version": 0})
        with pytest.raises(ConditionFailed) as info:
            await c.put("n1", key, {"value": 2, "if_version": 0})
        assert info.value.details == {"current_version": 1}

    run(scenario())


def test_a_forwarded_write_always_carries_a_request_id() -> None:
    async def scenario() -> None:
        c = Cluster()
        key = c.key_owned_by("n4")
        await c.put("n1", key, {"value": 1})
        await c.put("n1", key, {"value": 2, "request_id": "mine"})
        ids = [cmd.request_id for cmd in c.groups["n4"].proposed]
        assert ids[0] and ids[1] == "mine"

    run(scenario())


def test_a_forwarded_write_without_a_reply_is_an_unknown_outcome_with_its_request_id() -> None:
    async def scenario() -> None:
        c = Cluster()
        key = c.key_owned_by("n2")
        c.net.lose_reply.add("n2")
        with pytest.raises(UnknownOutcome) as info:
            await c.put("n1", key, {"value": 1, "request_id": "r-1"})
        assert info.value.code == "timeout" and info.value.details["request_id"] == "r-1"
        assert c.groups["n2"].data[key] == (1, 1)  # it was applied: "may have been"

    run(scenario())


def test_a_forwarded_read_without_a_reply_is_retryable() -> None:
    async def scenario() -> None:
        c = Cluster()
        key = c.key_owned_by("n2")
        await c.put("n2", key, {"value": 1})
        c.net.lose_reply.add("n2")
        with pytest.raises(Retryable):
            await c.get("n1", key)

    run(scenario())


def test_unreachable_members_are_skipped_and_none_reachable_is_no_leader() -> None:
    async def scenario() -> None:
        c = Cluster(replication=3)
        key = next(f"k{i}" for i in range(1000) if "n1" not in c_route(c, f"k{i}"))
        members = c_route(c, key)
        c.net.refuse.add(members[0])
        assert await c.put("n1", key, {"value": 1}) == {"version": 1}
        assert [dst for _, dst in c.net.sent] == list(members[:2])
        c.net.refuse.update(members)
        with pytest.raises(NoLeader):
            await c.put("n1", key, {"value": 2})

    run(scenario())


def c_route(c: Cluster, key: str) -> tuple[str, ...]:
    return routing.place(c.md, c.ks, key).replicas


def test_a_local_unknown_outcome_names_the_request_id() -> None:
    async def scenario() -> None:
        c = Cluster()
        key = c.key_owned_by("n1")
        c.groups["n1"].fail = UnknownOutcome("the Raft leader changed")
        with pytest.raises(UnknownOutcome) as info:
            await c.put("n1", key, {"value": 1, "request_id": "r-9"})
        assert info.value.details["request_id"] == "r-9"

    run(scenario())


def test_a_node_outside_the_group_refuses_to_serve_a_forward() -> None:
    async def scenario() -> None:
        c = Cluster()
        key = c.key_owned_by("n2")
        req = routing.put_request(c.md, "lin", key, {"value": 1}, Options(timeout_s=1.0))
        # n3 is not a member: it must not propose (its metadata says so)
        with pytest.raises(Retryable):
            await c.keys["n3"].serve_forwarded(Forwarded.of_put(req, "r"))
        assert c.groups["n3"].proposed == []

    run(scenario())


def test_a_ttl_write_is_stamped_by_the_leaders_clock() -> None:
    """docs/ttl.md: a member that is not the leader sends a TTL write to the leader, which
    stamps `now`; a node outside the group reaches it through a member (two hops)."""

    async def scenario() -> None:
        c = Cluster(replication=3)
        key = c.key_owned_by("n1")
        members = routing.place(c.md, c.ks, key).replicas
        follower, leader = members[0], members[1]
        outsider = next(n for n in NODES if n not in members)
        for n in members:
            c.groups[n].leader = f"{leader}:2"
        assert await c.put(follower, key, {"value": "a", "ttl_s": 1.5}) == {"version": 1}
        assert await c.put(outsider, key, {"value": "b", "ttl_s": 2}) == {"version": 2}
        assert c.net.sent == [(follower, leader), (outsider, follower), (follower, leader)]
        stamped = [(cmd.ttl_ms, cmd.now) for cmd in c.groups[leader].proposed]
        assert stamped == [(1500, c.clocks[leader] * 1000), (2000, c.clocks[leader] * 1000)]
        assert c.groups[follower].proposed == []

    run(scenario())


def test_a_ttl_write_is_stamped_here_when_the_leader_is_unknown_or_unreachable() -> None:
    async def scenario() -> None:
        c = Cluster(replication=3)
        key = c.key_owned_by("n1")
        follower, leader = routing.place(c.md, c.ks, key).replicas[:2]
        await c.put(follower, key, {"value": "a", "ttl_s": 1})  # no leader known
        c.groups[follower].leader = f"{leader}:2"
        c.net.refuse.add(leader)
        await c.put(follower, key, {"value": "b", "ttl_s": 1})
        now = c.clocks[follower] * 1000
        assert [cmd.now for cmd in c.groups[follower].proposed] == [now, now]
        await c.put(follower, key, {"value": "c"})  # no TTL: never sent to the leader
        assert c.groups[follower].proposed[-1].now == 0
        assert c.net.sent == [(follower, leader)]

    run(scenario())
