"""Membership changes of a real pysyncobj group on loopback, in one process (docs/raft.md
"Membership changes"; notes/membership.md rules 6-8).

Each member has its own RaftMux (port from the OS), RaftDriver thread and LevelDB, and runs
the real `LinearizableMachine`. Every mux knows every node's address from the start, as a
node's mux does in a cluster, so the new member's node is connected before it is added and
a removed member's node stays connected: the group-level filters are what keep them out.
All waits are polls with a deadline; every group is closed in the fixture's `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.node import TCPNode

from kv.errors import KvError
from kv.leveldb import LevelDBEngine
from raft_groups import commands, state_machine
from raft_groups.manager import LinearizableMachine
from raft_groups.placement import GroupSpec
from raft_groups.syncobj_adapter import (
    Done,
    GroupSettings,
    Moved,
    NodeLog,
    RaftDriver,
    RaftGroup,
    RaftMux,
    RaftNodeSettings,
    Refusal,
    Refused,
)
from raft_groups.syncobj_adapter.reconfig import ChangePolicy
from tests.ports import free_port

SECRET = "s" * 32
SPEC = GroupSpec(partition=0, replication=3, members=("a", "b", "c"))
GROUP = SPEC.number
UID = 1
DEADLINE_S = 30.0
ELECTION = (0.6, 1.5)  # election timeouts (GroupSettings' defaults)


@dataclass
class Member:
    name: str
    address: str
    nodes: tuple[str, ...]  # every node's Raft address: the mux's peers
    data: Path
    engine: LevelDBEngine | None = None
    driver: RaftDriver | None = None
    group: RaftGroup | None = None
    machine: LinearizableMachine | None = None

    def start(
        self, peers: tuple[str, ...], joining: bool = False, compaction: int = 50, run: bool = True
    ) -> None:
        """Start this member's node (mux, driver) and its group with these members; with
        `run` False the driver thread is not started (no tick, no message delivered yet)."""
        self.engine = self.engine or LevelDBEngine(self.data / "db")
        others = tuple(a for a in self.nodes if a != self.address)
        self.driver = RaftDriver(
            RaftMux(RaftNodeSettings(self.address, self.address, SECRET, others)),
            NodeLog(str(self.data / "raft_log")),
        )
        settings = GroupSettings(
            gid=SPEC.gid,
            self_address=self.address,
            peers=tuple(p for p in peers if p != self.address),
            data_dir=str(self.data / "raft"),
            log_compaction_min_entries=compaction,
            joining=joining,
            election_timeout_min=ELECTION[0],
            election_timeout_max=ELECTION[1],
        )
        self.machine = LinearizableMachine(self.engine, GROUP)
        self.group = RaftGroup(self.driver, settings, self.machine)
        if run:
            self.driver.start()

    def close_group(self, delete_data: bool = False) -> None:
        if self.group is not None and self.driver is not None:
            group = self.group
            self.driver.call(lambda: group.close(delete_data=delete_data))
            self.group = None

    def stop(self) -> None:
        if self.driver is not None:
            self.driver.stop()
            self.driver = self.group = None
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def read(self, key: str) -> tuple[Any, int] | None:
        assert self.engine is not None
        return state_machine.read(self.engine, GROUP, UID, key)

    def dump(self) -> list[tuple[bytes, bytes]]:
        assert self.engine is not None
        start, stop = state_machine.group_range(GROUP)
        return list(self.engine.iterate(start, stop))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[Member]]:
    """a, b, c running as the group; d created but not started."""
    addresses = tuple(f"127.0.0.1:{free_port()}" for _ in range(4))
    members = []
    for name, address in zip("abcd", addresses, strict=True):
        os.makedirs(tmp_path / name)
        members.append(Member(name, address, addresses, tmp_path / name))
    try:
        for m in members[:3]:
            m.start(peers=addresses[:3])
        yield members
    finally:
        for m in members:
            m.stop()


def _poll(pred: Any, what: str, deadline_s: float = DEADLINE_S) -> Any:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def _apoll(pred: Any, what: str, deadline_s: float = DEADLINE_S) -> Any:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _leader_now(members: list[Member]) -> Member | None:
    for m in members:
        if m.group is not None and m.group.status().is_leader:
            return m
    return None


def _leader(members: list[Member]) -> Member:
    leader: Member = _poll(lambda: _leader_now(members), "a leader")
    return leader


def _put(key: str, value: Any) -> bytes:
    cmd = commands.Command(op="put", uid=UID, key=key, value=value, request_id=f"rid-{key}")
    return commands.encode(cmd)


@dataclass
class Writer:
    """A client writing distinct keys one after another to whichever member leads, retrying
    a command of unknown outcome with the same request_id (deduplicated by the machine)."""

    members: list[Member]
    acked: list[str] = field(default_factory=list)
    retries: int = 0
    stop: bool = False

    async def run(self) -> None:
        i = 0
        while not self.stop:
            key = f"w{i:05d}"
            await self._write(key)
            self.acked.append(key)
            i += 1

    async def _write(self, key: str) -> None:
        end = time.monotonic() + DEADLINE_S
        while time.monotonic() < end:
            leader = _leader_now(self.members)
            if leader is not None and leader.group is not None:
                fut = leader.group.propose(_put(key, key), asyncio.get_running_loop())
                with contextlib.suppress(KvError, TimeoutError):
                    result = await asyncio.wait_for(fut, 2.0)
                    assert result["ok"], result
                    return
                self.retries += 1
            await asyncio.sleep(0.01)
        raise AssertionError(f"write {key} not acknowledged within {DEADLINE_S}s")


async def _fill(leader: Member, count: int) -> None:
    assert leader.group is not None
    loop = asyncio.get_running_loop()
    for i in range(count):
        result = await asyncio.wait_for(leader.group.propose(_put(f"f{i}", i), loop), 10)
        assert result["ok"], result


def _same_state(members: list[Member]) -> bool:
    applied = {m.group.status().last_applied for m in members if m.group is not None}
    return len(applied) == 1 and len({tuple(m.dump()) for m in members}) == 1


def test_move_a_member_while_a_client_writes(cluster: list[Member]) -> None:
    """3 → 4 → 3: add d (caught up from a snapshot), then remove the leader, an original
    member, after moving leadership off it. Every acknowledged write is on every final
    member exactly once (version 1), and their states are identical."""
    a, b, c, d = cluster
    originals = cluster[:3]
    timings: dict[str, float] = {}
    acked: list[str] = []

    async def scenario() -> None:
        leader = _leader(originals)
        await _fill(leader, 200)  # compaction=50: the log no longer starts at index 1
        assert leader.group is not None
        await _apoll(lambda: leader.group.log_size() < 100, "log compaction on the leader")
        term_before = leader.group.status().term
        writer = Writer(originals)
        writing = asyncio.create_task(writer.run())
        await _apoll(lambda: len(writer.acked) > 20, "the writer to start")

        d.start(peers=tuple(m.address for m in originals), joining=True)
        t0 = time.monotonic()
        added = await leader.group.add_member(d.address)
        assert isinstance(added, Done), added
        assert d.address in added.members and len(added.members) == 4
        writer.members = cluster
        assert await leader.group.wait_caught_up(d.address, DEADLINE_S)
        timings["add+catch-up s"] = time.monotonic() - t0
        assert leader.group.status().term == term_before, "the joining member caused an election"

        old, old_group = leader, leader.group  # remove the leader: an original member
        refused = await old_group.remove_member(old.address)
        assert isinstance(refused, Refused) and refused.reason is Refusal.IS_LEADER
        t0 = time.monotonic()
        moved = await old_group.transfer_leadership()
        assert isinstance(moved, Moved), moved
        timings["leadership move s"] = time.monotonic() - t0
        new_leader = next(m for m in cluster if m.address == moved.leader)
        assert new_leader is not old and new_leader.group is not None
        assert not old_group.status().is_leader
        removed = await new_leader.group.remove_member(old.address)
        assert isinstance(removed, Done), removed
        assert old.address not in removed.members and len(removed.members) == 3
        writer.members = [m for m in cluster if m is not old]
        await _apoll(lambda: len(writer.acked) > 20 + 50, "writes after the move")
        writer.stop = True
        await writing
        print(f"\ntimings: {timings}; acked {len(writer.acked)}, retries {writer.retries}")
        acked.extend(writer.acked)
        old.close_group(delete_data=True)
        assert not (old.data / "raft").exists()

    asyncio.run(scenario())
    final = [m for m in cluster if m.group is not None]
    assert len(final) == 3 and d in final
    want = tuple(sorted(m.address for m in final))
    for m in final:  # a follower applies the removal a moment after the leader's commit
        _poll(lambda m=m: m.group is not None and m.group.members() == want, f"{m.name}'s peers")
    _poll(lambda: _same_state(final), "the final members to converge")
    assert len(acked) > 70
    for m in final:  # every acknowledged write, applied exactly once (a 2nd apply: version 2)
        assert [m.read(key) for key in acked] == [(key, 1) for key in acked], m.name
    assert (d.data / "raft" / "raft.snapshot").exists(), "d caught up without a snapshot?"


def test_a_second_change_of_the_same_group_is_refused(cluster: list[Member]) -> None:
    a, b, c, d = cluster
    originals = cluster[:3]

    async def scenario() -> None:
        leader = _leader(originals)
        assert leader.group is not None
        d.start(peers=tuple(m.address for m in originals), joining=True)
        other = next(m for m in originals if m is not leader)
        adding = asyncio.create_task(leader.group.add_member(d.address))
        await asyncio.sleep(0)  # the add holds the group's serializer from its first step
        second = await leader.group.remove_member(other.address)
        assert isinstance(second, Refused) and second.reason is Refusal.CHANGE_IN_PROGRESS
        assert isinstance(await adding, Done)

    asyncio.run(scenario())


def _terms(members: list[Member]) -> dict[str, int]:
    return {m.name: m.group.status().term for m in members if m.group is not None}


def test_a_removed_follower_that_keeps_running_cannot_disrupt_the_group(
    cluster: list[Member],
) -> None:
    """The leader stops talking to a removed member when the entry is appended, so it
    campaigns; its node stays connected (other groups would share it), and only the mux's
    per-group sender filter keeps its higher-term vote requests from deposing the leader."""
    a, b, c, d = cluster
    originals = cluster[:3]

    async def scenario() -> None:
        leader = _leader(originals)
        assert leader.group is not None
        await _fill(leader, 10)
        x = next(m for m in originals if m is not leader)
        removed_from = leader.group.members()
        removed = await leader.group.remove_member(x.address)
        assert isinstance(removed, Done) and x.address not in removed.members
        rest = [m for m in originals if m is not x]
        terms = _terms(rest)
        assert x.group is not None
        term = x.group.status().term
        assert x.group.members() == removed_from  # x never hears of its own removal
        await _apoll(lambda: x.group.status().term > term + 1, "the removed member to campaign")
        assert _terms(rest) == terms, "the removed member's vote requests deposed the leader"
        assert sum(m.driver.mux.dropped for m in rest if m.driver is not None) > 0
        await _fill(leader, 10)  # the two remaining members still commit
        assert x.machine is not None
        x.close_group(delete_data=True)
        x.machine.drop()
        assert not (x.data / "raft").exists() and x.dump() == []

    asyncio.run(scenario())


def test_a_joining_member_does_not_campaign_before_the_leader_contacts_it(
    cluster: list[Member],
) -> None:
    """d's node is connected to the others (its group hears nothing: the leader does not
    know it yet). Were d to campaign, its term would outrun the group's and its first vote
    request after the add would depose the leader (measured: term 1 -> 5)."""
    a, b, c, d = cluster
    originals = cluster[:3]

    async def scenario() -> None:
        leader = _leader(originals)
        assert leader.group is not None
        term = leader.group.status().term
        d.start(peers=tuple(m.address for m in originals), joining=True)
        assert d.driver is not None and d.group is not None
        await _apoll(lambda: all(d.driver.mux.is_connected(m.address) for m in originals), "d")
        quiet_until = time.monotonic() + 2 * ELECTION[1]
        while time.monotonic() < quiet_until:  # two election timeouts: d stays a follower
            assert d.group.status().term == 0, "the joining member campaigned"
            await asyncio.sleep(0.01)
        added = await leader.group.add_member(d.address)
        assert isinstance(added, Done), added
        assert await leader.group.wait_caught_up(d.address, DEADLINE_S)
        await _fill(leader, 5)
        assert _terms(cluster) == {m.name: term for m in cluster}

    asyncio.run(scenario())


def test_the_leader_denies_a_change_proposed_before_the_previous_one_applied(
    cluster: list[Member],
) -> None:
    """pysyncobj's own one-change-at-a-time guard, made to work (shim.MembershipGuard):
    two changes queued together (as two nodes could) — the second is denied, not appended.
    The raw primitives bypass our serializer and checks on purpose."""
    a, b, c, d = cluster
    originals = cluster[:3]
    ghosts = [f"127.0.0.1:{free_port()}" for _ in range(2)]  # nothing listens there

    async def scenario() -> None:
        leader = _leader(originals)
        assert leader.group is not None
        assert await leader.group.changes.barrier(10)
        outcomes = await asyncio.gather(
            *(leader.group.changes.propose_change("add", g, 10) for g in ghosts)
        )
        done = [o for o in outcomes if isinstance(o, Done)]
        denied = [o for o in outcomes if isinstance(o, Refused)]
        assert len(done) == 1 and len(denied) == 1, outcomes
        assert denied[0].reason is Refusal.DENIED
        members = leader.group.members()
        assert len(members) == 4 and sum(g in members for g in ghosts) == 1
        ghost = next(g for g in ghosts if g in members)
        removed = await leader.group.remove_member(ghost)
        assert isinstance(removed, Done) and len(removed.members) == 3

    asyncio.run(scenario())


def test_an_unreachable_member_is_not_added(cluster: list[Member]) -> None:
    originals = cluster[:3]

    async def scenario() -> None:
        leader = _leader(originals)
        assert leader.group is not None
        leader.group.reconfig.policy = ChangePolicy(reach_timeout=0.5)
        ghost = f"127.0.0.1:{free_port()}"
        refused = await leader.group.add_member(ghost)
        assert isinstance(refused, Refused) and refused.reason is Refusal.UNREACHABLE
        assert ghost not in leader.group.members()
        assert leader.driver is not None and not leader.driver.mux.knows(ghost)
        refused = await leader.group.remove_member(leader.address)
        assert isinstance(refused, Refused) and refused.reason is Refusal.IS_LEADER

    asyncio.run(scenario())


def _inject(member: Member, sender: Member, message: dict[str, Any]) -> None:
    """Hand `message` to `member`'s group as if `sender` had sent it (driver thread)."""
    assert member.driver is not None and member.group is not None
    transport = member.group.transport
    member.driver.call(lambda: transport.deliver(TCPNode(sender.address), message))


def _vote(term: int) -> dict[str, Any]:
    """A vote request whose log looks at least as long as anyone's (it would be granted)."""
    return {"type": "request_vote", "term": term, "last_log_index": 10**6, "last_log_term": 10**6}


def test_a_follower_that_hears_its_leader_ignores_another_members_vote_request(
    cluster: list[Member],
) -> None:
    """Leader lease (lease.py rule 1, Raft thesis §4.2.3). As a member still catching up
    names a member the leader already removed (its removal not applied here yet), a vote
    request with a higher term reaches a follower through the mux's filter; taking that
    term would make it drop its leader's appends (seen: a move stalled for good)."""
    originals = cluster[:3]

    async def scenario() -> None:
        leader = _leader(originals)
        assert leader.group is not None
        await _fill(leader, 5)
        y, x = (m for m in originals if m is not leader)
        assert y.group is not None
        await _apoll(lambda: y.group.status().leader == leader.address, "y to follow")
        await _fill(leader, 1)  # an append just reached y: it heard its leader
        term = leader.group.status().term
        _inject(y, x, _vote(term + 5))
        assert y.group.status().term == term, "the vote request took y's term"
        assert y.group.transport.votes.ignored == 1
        await _fill(leader, 5)
        assert _terms(originals) == {m.name: term for m in originals}

    asyncio.run(scenario())
    _poll(lambda: _same_state(originals), "the members to converge")


def test_a_follower_pushed_past_its_leaders_term_brings_the_group_to_its_term(
    cluster: list[Member],
) -> None:
    """Stale leader notice (lease.py rule 2). y took a higher term from x's vote request
    (marked as a transfer's, to get past the lease: as if y had not heard its leader yet),
    and x keeps campaigning as a removed member that never learned of it would, with a log
    as long as y's: y grants every vote, so its own election timer never runs out, and
    pysyncobj drops the leader's appends from the older term without a word. The notice y
    sends back makes the leader step down; the members elect one at a higher term, y
    follows it and applies what is written next."""
    originals = cluster[:3]

    async def scenario() -> None:
        leader = _leader(originals)
        assert leader.group is not None
        await _fill(leader, 5)
        y, x = (m for m in originals if m is not leader)
        assert y.group is not None
        term = leader.group.status().term
        _inject(y, x, {**_vote(term + 3), "transfer": True})
        assert y.group.status().term == term + 3
        campaigning, zombie_term = True, term + 3

        async def zombie() -> None:
            nonlocal zombie_term
            while campaigning:
                await asyncio.sleep(0.5)
                zombie_term += 1
                _inject(y, x, _vote(zombie_term))

        task = asyncio.create_task(zombie())
        try:

            def elected() -> Member | None:
                lead = _leader_now(originals)
                if lead is None or lead.group is None:
                    return None
                return lead if lead.group.status().term > term + 3 else None

            await _apoll(elected, "a leader at a higher term")
            writer = Writer(originals)  # to whichever member leads, retried
            for i in range(5):
                await writer._write(f"after{i}")
            await _apoll(lambda: _same_state(originals), "y to apply the new writes")
        finally:
            campaigning = False
            await task
        assert y.group.transport.votes.notices >= 1

    asyncio.run(scenario())
