"""A node's metadata source across role switches (kv/meta_role.py `MetaRole`), with a fake
meta group, a real `MetaReader` and an in-memory network: a founder votes and a joiner
reads; `meta_join` starts a joining group that serves once caught up; a voter leaves only
on the leader's own word; a join nobody followed up is dropped after its grace; the role
survives a restart; the metadata never moves backwards. No sleeps: the clock and the loops'
sleeps are injected, and `check()` is called by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kv.errors import NoLeader, PeerUnreachable
from kv.internode import Operation, Req, Resp
from kv.meta import Member, Metadata
from kv.meta_ops import META_GET, MetaJoin, MetaReply
from kv.meta_reader import MetaReader
from kv.meta_role import MetaRole, RoleFile, Saved, Timing

MEMBERS = tuple(Member(f"n{i}", f"10.0.0.{i}:7001", f"10.0.0.{i}:7101") for i in range(1, 6))
ME = MEMBERS[3]  # n4
RAFT = [m.raft for m in MEMBERS]


def md_at(epoch: int) -> Metadata:
    return Metadata(epoch=epoch, members=MEMBERS)


class FakeGroup:
    def __init__(self, peers: tuple[str, ...], joining: bool) -> None:
        self.peers, self.joining = peers, joining
        self.metadata = Metadata()
        self.leader: str | None = None
        self.connected_to_leader = True  # False: it names a leader it is cut off from
        self.members = (*peers, ME.raft)
        self.listeners: list[Callable[[Metadata], None]] = []
        self.changes: list[dict[str, Any]] = []
        self.syncs: list[float] = []  # timeouts of the read barriers asked for

    def subscribe(self, listener: Callable[[Metadata], None]) -> None:
        self.listeners.append(listener)

    def publish(self, md: Metadata) -> None:
        self.metadata = md
        for listener in self.listeners:
            listener(md)

    async def change(self, change: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.changes.append(change)
        return {"status": "from the group"}

    def summary(self) -> dict[str, Any]:
        return {"term": 1}

    def raft_view(self) -> tuple[str | None, tuple[str, ...]]:
        return self.leader, self.members

    async def in_contact(self) -> bool:
        return self.leader is not None and self.connected_to_leader

    async def sync(self, timeout: float) -> None:
        self.syncs.append(timeout)


class FakeGroups:
    def __init__(self) -> None:
        self.opened: list[FakeGroup] = []
        self.closed: list[tuple[FakeGroup, bool]] = []
        self.wiped = 0

    async def open(self, peers: tuple[str, ...], joining: bool) -> FakeGroup:
        self.opened.append(FakeGroup(peers, joining))
        return self.opened[-1]

    async def close(self, group: FakeGroup, delete_data: bool) -> None:
        self.closed.append((group, delete_data))

    def wipe(self) -> None:
        self.wiped += 1


class Net:
    """HTTP address → what its meta_get answers (a MetaReply, or an error raised)."""

    def __init__(self) -> None:
        self.replies: dict[str, MetaReply | Exception] = {}
        self.calls: list[str] = []

    async def call_at(
        self,
        address: str,
        op: Operation[Req, Resp],
        request: Req,
        timeout: float,
        peer: str | None = None,
    ) -> Resp:
        self.calls.append(address)
        reply = self.replies.get(address, PeerUnreachable(f"{address}: refused"))
        if isinstance(reply, Exception):
            raise reply
        assert op is META_GET
        return op.reply(reply.to_wire())  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def forever(_: float) -> None:
    await asyncio.Event().wait()


class Node:
    """A MetaRole with its fakes; `role.check()` is the test's to call."""

    def __init__(
        self,
        tmp: Path,
        net: Net | None = None,
        sleep: Callable[[float], Awaitable[None]] = forever,
    ) -> None:
        self.net, self.groups, self.clock = net or Net(), FakeGroups(), Clock()
        self.readers: list[MetaReader] = []
        self.path = str(tmp / "meta_role.json")
        self.role: MetaRole[FakeGroup] = MetaRole(
            ME, self.groups, self._reader, self.net, self.path, self.clock, Timing(), sleep
        )

    def _reader(self, seeds: Sequence[str]) -> MetaReader:
        reader = MetaReader(
            ME.http, seeds, self.net, interval=1, max_backoff=1, call_timeout=1, sleep=forever
        )
        self.readers.append(reader)
        return reader

    @property
    def group(self) -> FakeGroup:
        assert self.role.group is not None
        return self.role.group


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def leader_reply(members: Sequence[str], leader: str = RAFT[2]) -> MetaReply:
    ids = tuple(m.id for m in MEMBERS if m.raft in members)
    return MetaReply(9, ids, None, leader, tuple(members))


def test_a_founder_without_a_state_file_votes_and_a_joiner_reads(tmp_path: Path) -> None:
    founder, joiner = Node(tmp_path / "a"), Node(tmp_path / "b")
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()

    async def scenario() -> None:
        await founder.role.start((RAFT[0], RAFT[1], ME.raft), ["10.0.0.1:7001"])
        await joiner.role.start(None, ["10.0.0.1:7001"])
        assert founder.role.role == "voter" and founder.role.votes
        assert founder.group.peers == (RAFT[0], RAFT[1]) and not founder.group.joining
        assert founder.role.reader is None
        assert joiner.role.role == "reader" and joiner.role.group is None
        assert joiner.readers[0]._seeds == ("10.0.0.1:7001",)
        await founder.role.stop(), await joiner.role.stop()

    run(scenario())


def test_meta_join_starts_a_joining_group_that_serves_once_caught_up(tmp_path: Path) -> None:
    node = Node(tmp_path)

    async def scenario() -> None:
        await node.role.start(None, ["10.0.0.1:7001"])
        node.readers[0].adopt(md_at(7), "seed")
        reply = await node.role.join(MetaJoin((RAFT[0], RAFT[1], RAFT[2])))
        assert reply.role == "joining" and node.groups.wiped == 1
        assert node.group.joining and node.group.peers == (RAFT[0], RAFT[1], RAFT[2])
        assert RoleFile(node.path).load() == Saved(
            "joining", (RAFT[0], RAFT[1], RAFT[2]), node.role._seeds()
        )
        assert not node.role.votes and node.role.raft_view() == (None, ())
        assert (await node.role.join(MetaJoin((RAFT[0],)))).role == "joining"  # idempotent
        assert len(node.groups.opened) == 1

        await node.role.check()  # no leader yet: still joining
        node.group.leader = RAFT[2]
        node.group.publish(md_at(6))  # contacted, not caught up with what it reads
        await node.role.check()
        assert node.role.role == "joining" and node.role.metadata.epoch == 7
        node.group.publish(md_at(7))
        await node.role.check()
        assert node.role.role == "voter" and node.role.reader is None
        assert RoleFile(node.path).load() == Saved("voter", node.group.members)
        assert await node.role.change({"type": "x"}, 1.0) == {"status": "from the group"}
        assert node.role.voters == ("n1", "n2", "n3", "n4")
        await node.role.stop()

    run(scenario())


def voter(tmp_path: Path) -> Node:
    node = Node(tmp_path)
    RoleFile(node.path).save(Saved("voter", (RAFT[0], RAFT[1], RAFT[2], ME.raft)))
    return node


def test_a_leaderless_voter_leaves_only_on_the_leaders_word(tmp_path: Path) -> None:
    node = voter(tmp_path)
    without_me = (RAFT[0], RAFT[1], RAFT[2])

    async def scenario() -> None:
        await node.role.start(None, [])
        node.group.publish(md_at(9))
        node.group.leader = None  # removed: the old leader stopped talking to it
        await node.role.check()
        node.clock.now += 2.0  # an election's worth: not yet
        await node.role.check()
        assert node.net.calls == [] and node.role.role == "voter"

        node.net.replies[MEMBERS[0].http] = leader_reply(without_me)  # n1: a follower's view
        node.net.replies[MEMBERS[2].http] = leader_reply((*without_me, ME.raft))
        node.clock.now += 2.0
        await node.role.check()
        assert node.role.role == "voter"  # the leader (n3) still lists it
        assert node.net.calls[-1] == MEMBERS[2].http  # n1 named the leader; asked next

        node.net.replies[MEMBERS[2].http] = leader_reply(without_me)
        node.clock.now += 1.0
        await node.role.check()
        assert node.role.role == "voter", "asked again before probe_every passed"
        node.clock.now += 1.0
        await node.role.check()
        assert node.role.role == "reader" and node.role.group is None
        (closed, deleted), *_ = node.groups.closed
        assert deleted and RoleFile(node.path).load() == Saved("reader", (), node.role._seeds())
        assert node.role.metadata.epoch == 9 and node.readers[0].metadata.epoch == 9
        assert node.role.voters == ("n1", "n2", "n3")
        await node.role.stop()

    run(scenario())


def test_a_join_nobody_followed_up_is_dropped_after_its_grace(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.net.replies[MEMBERS[0].http] = leader_reply((RAFT[0], RAFT[1]), leader=RAFT[0])

    async def scenario() -> None:
        await node.role.start(None, [MEMBERS[0].http])
        node.readers[0].adopt(md_at(3), "seed")
        await node.role.join(MetaJoin((RAFT[0], RAFT[1])))
        node.clock.now += Timing().join_grace_s - 1
        await node.role.check()
        assert node.role.role == "joining"
        node.clock.now += 2
        await node.role.check()
        assert node.role.role == "reader" and node.groups.closed[0][1] is True
        assert node.readers == node.readers[:1]  # the reader kept running throughout
        await node.role.stop()

    run(scenario())


def test_meta_join_to_a_voter_the_leader_dropped_rejoins_it_fresh(tmp_path: Path) -> None:
    node = voter(tmp_path)

    async def scenario() -> None:
        await node.role.start(None, [])
        node.group.publish(md_at(4))
        stale = node.group
        stale.leader = RAFT[2]  # a voter with a leader stays as it is
        assert (await node.role.join(MetaJoin((RAFT[0], RAFT[1], RAFT[2])))).role == "voter"
        stale.leader = None  # leaderless, and the leader's configuration lacks it
        assert (await node.role.join(MetaJoin((RAFT[0], RAFT[1], RAFT[2])))).role == "joining"
        assert node.groups.closed == [(stale, True)] and node.groups.wiped == 1
        assert node.group is not stale and node.group.joining
        await node.role.stop()

    run(scenario())


def test_the_role_and_the_peers_survive_a_restart(tmp_path: Path) -> None:
    RoleFile(str(tmp_path / "meta_role.json")).save(Saved("joining", (RAFT[0],), ("s:1",)))
    node = Node(tmp_path)

    async def scenario() -> None:
        await node.role.start((RAFT[1],), ["10.0.0.1:7001"])  # the file wins over founding
        assert node.role.role == "joining" and node.group.peers == (RAFT[0],)
        assert node.group.joining and node.groups.wiped == 0  # its journal is kept
        assert node.readers[0]._seeds == ("10.0.0.1:7001", "s:1")
        await node.role.stop()

    run(scenario())


def test_metadata_never_moves_backwards_across_sources(tmp_path: Path) -> None:
    node = voter(tmp_path)
    seen: list[int] = []

    async def scenario() -> None:
        await node.role.start(None, [])
        node.role.subscribe(lambda md: seen.append(md.epoch))
        node.group.publish(md_at(5))
        node.group.publish(md_at(4))
        node.group.publish(replace(md_at(5), partitions=8))  # equal epoch: nothing new
        node.group.publish(md_at(6))
        await node.role.stop()

    run(scenario())
    assert seen == [5, 6] and node.role.metadata.partitions == 64


def test_a_voter_naming_a_leader_it_is_cut_off_from_asks_too(tmp_path: Path) -> None:
    """Removed, it keeps naming its old leader: every peer dropped its connection, and a
    member connected to nobody never campaigns (so pysyncobj never resets its leader)."""
    node = voter(tmp_path)
    node.net.replies[MEMBERS[2].http] = leader_reply((RAFT[0], RAFT[1], RAFT[2]))

    async def scenario() -> None:
        await node.role.start(None, [])
        node.group.publish(md_at(9))
        node.group.leader, node.group.connected_to_leader = RAFT[2], False
        with pytest.raises(NoLeader):  # a change it could not commit: the sender tries another
            await node.role.change({"type": "x"}, 1.0)
        await node.role.check()
        node.clock.now += Timing().leaderless_s
        await node.role.check()
        assert node.role.role == "reader"
        await node.role.stop()

    run(scenario())


def test_a_read_barrier_on_a_voter_waits_out_an_election_within_its_timeout(
    tmp_path: Path,
) -> None:
    """The leader died: the voter is out of contact until the survivors elect one (here
    after 0.5 s of the caller's 2 s); the barrier then runs with what is left of the 2 s.
    Without a leader within the timeout it is NoLeader (503), not a wait past it."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        if seconds != Timing().contact_poll:  # the role's periodic check: the test's to call
            await forever(seconds)
        slept.append(seconds)
        node.clock.now += seconds
        if sum(slept) >= 0.5:
            node.group.connected_to_leader = True

    node = Node(tmp_path, sleep=sleep)

    async def scenario() -> None:
        await node.role.start((RAFT[0], RAFT[1], ME.raft), ["10.0.0.1:7001"])
        node.group.leader, node.group.connected_to_leader = RAFT[0], False
        await node.role.sync(2.0)
        waited = sum(slept)  # polls until contact: 0.5 s and at most one poll more
        assert 0.5 <= waited <= 0.5 + 2 * Timing().contact_poll
        assert node.group.syncs == [pytest.approx(2.0 - waited)]
        node.group.connected_to_leader, node.group.leader = False, None
        with pytest.raises(NoLeader):
            await node.role.sync(0.2)
        assert len(node.group.syncs) == 1
        await node.role.stop()

    run(scenario())
