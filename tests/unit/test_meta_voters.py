"""The meta voters driver (raft_groups/meta_voters.py) on a fake leader: each round takes the
one step kv/voters.py gives from the actual configuration — add (meta_join, compact, add,
catch up), remove a follower, or move leadership off itself — and nothing on a follower.
A candidate that does not answer meta_join is skipped for a while; a configured member that
is not live is asked to run the group again. No sleeps, no Raft: the group is a fake.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any

from kv import voters
from kv.errors import PeerUnreachable
from kv.meta import Member, Metadata, Transition
from kv.meta_ops import Role
from raft_groups.meta_voters import MetaVoters
from raft_groups.syncobj_adapter import Done, Moved, Refusal, Refused

MEMBERS = tuple(Member(f"n{i}", f"h{i}:1", f"h{i}:2") for i in range(1, 8))
RAFT = {m.id: m.raft for m in MEMBERS}


def md_of(*ids: str, leaving: tuple[str, ...] = ()) -> Metadata:
    members = tuple(m for m in MEMBERS if m.id in ids)
    md = Metadata(epoch=3, members=members)
    if leaving:
        staying = tuple(m for m in members if m.id not in leaving)
        md = replace(md, transition=Transition("p", (), staying, (), frozenset()))
    return md


@dataclass
class Settings:
    self_address: str


@dataclass
class Status:
    is_leader: bool
    commit_index: int


@dataclass
class FakeRaft:
    """The RaftGroup primitives the driver calls, recording them."""

    members: list[str]
    settings: Settings
    calls: list[tuple[str, str]] = field(default_factory=list)
    refuse: Refused | None = None

    async def add_member(self, address: str, timeout: float) -> Any:
        self.calls.append(("add", address))
        if self.refuse is not None:
            return self.refuse
        self.members.append(address)
        return Done(tuple(sorted(self.members)))

    async def remove_member(self, address: str, timeout: float) -> Any:
        self.calls.append(("remove", address))
        self.members.remove(address)
        return Done(tuple(sorted(self.members)))

    async def wait_caught_up(self, address: str, timeout: float) -> bool:
        self.calls.append(("caught_up", address))
        return True

    async def transfer_leadership(self, target: str | None, timeout: float) -> Any:
        self.calls.append(("transfer", self.settings.self_address))
        return Moved("h9:2", 0.01, 1)


class FakeMeta:
    def __init__(self, me: str, members: list[str], leader: bool = True) -> None:
        self.group = FakeRaft([RAFT.get(m, m) for m in members], Settings(RAFT[me]))
        self.leader = leader
        self.compactions = 0
        self.lagging: set[str] = set()
        self.commit_index = 10

    def status(self) -> Status:
        return Status(self.leader, self.commit_index)

    def raft_view(self) -> tuple[str | None, tuple[str, ...]]:
        return self.group.settings.self_address, tuple(sorted(self.group.members))

    async def live(self) -> frozenset[str]:
        return frozenset(self.group.members) - self.lagging

    async def compact(self, timeout: float) -> bool:
        self.compactions += 1
        return True


class Joins:
    def __init__(self) -> None:
        self.asked: list[tuple[str, tuple[str, ...]]] = []
        self.down: set[str] = set()

    async def __call__(self, member: Member, peers: tuple[str, ...]) -> Role:
        self.asked.append((member.id, peers))
        if member.id in self.down:
            raise PeerUnreachable(f"{member.id}: refused")
        return "joining"


def driver(meta: FakeMeta, md: Metadata, joins: Joins, now: list[float]) -> MetaVoters:
    return MetaVoters(
        lambda: meta,  # type: ignore[arg-type, return-value]
        "n1",
        lambda: md,
        joins,
        lambda node: True,
        lambda: now[0],
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_follower_does_nothing() -> None:
    meta = FakeMeta("n1", ["n1", "n2", "n3"], leader=False)
    d = driver(meta, md_of("n1", "n2", "n3", "n4", "n5"), Joins(), [0.0])
    assert run(d.round_once()) is None and meta.group.calls == []
    assert d.status()["state"] == "idle"


def test_a_member_is_added_after_meta_join_and_a_compaction_and_caught_up() -> None:
    meta, joins = FakeMeta("n1", ["n1", "n2", "n3"]), Joins()
    md = md_of("n1", "n2", "n3", "n4", "n5")
    d = driver(meta, md, joins, [0.0])
    step = run(d.round_once())
    first = voters.desired(md, ["n1", "n2", "n3"])
    assert step == voters.Step("add", [n for n in first if n not in ("n1", "n2", "n3")][0])
    assert joins.asked == [(step.node, tuple(sorted(RAFT[n] for n in ("n1", "n2", "n3"))))]
    assert meta.compactions == 1
    assert meta.group.calls == [("add", RAFT[step.node]), ("caught_up", RAFT[step.node])]
    run(d.round_once())
    assert run(d.round_once()) is None
    assert sorted(meta.group.members) == sorted(RAFT[n] for n in first)
    assert d.status() == {**d.state, "changes": 2} and d.state["state"] == "idle"


def test_a_leaving_follower_is_replaced_first_then_removed() -> None:
    five = ["n1", "n2", "n3", "n4", "n5"]
    meta, joins = FakeMeta("n1", five), Joins()
    d = driver(meta, md_of(*five, "n6", leaving=("n3",)), joins, [0.0])
    assert run(d.round_once()) == voters.Step("add", "n6")
    assert run(d.round_once()) == voters.Step("remove", "n3")
    assert meta.group.calls[-1] == ("remove", RAFT["n3"])
    assert run(d.round_once()) is None


def test_the_leader_moves_its_leadership_at_a_quiet_moment_instead_of_removing_itself() -> None:
    meta, now = FakeMeta("n1", ["n1", "n2", "n3", "n4"]), [0.0]
    d = driver(meta, md_of("n1", "n2", "n3", "n4", leaving=("n1",)), Joins(), now)
    assert run(d.round_once()) == voters.Step("remove", "n1")
    assert meta.group.calls == [] and "stays" in d.state["outcome"]  # first look
    run(d.round_once())  # nothing committed since: a quiet moment
    assert meta.group.calls == [("transfer", RAFT["n1"])]
    assert "leadership moved" in d.state["outcome"]


def test_busy_metadata_delays_a_hand_over_for_at_most_its_patience() -> None:
    meta, now = FakeMeta("n1", ["n1", "n2", "n3", "n4"]), [0.0]
    d = driver(meta, md_of("n1", "n2", "n3", "n4", leaving=("n1",)), Joins(), now)
    while now[0] < d.handover_patience:
        run(d.round_once())
        assert meta.group.calls == []
        meta.commit_index += 3  # a change committed every round
        now[0] += 1.0
    run(d.round_once())
    assert meta.group.calls == [("transfer", RAFT["n1"])]


def test_a_voter_the_metadata_no_longer_lists_is_removed_by_address() -> None:
    meta = FakeMeta("n1", ["n1", "n2", "n3", "h9:2"])
    d = driver(meta, md_of("n1", "n2", "n3"), Joins(), [0.0])
    assert run(d.round_once()) == voters.Step("remove", "h9:2")
    assert meta.group.calls == [("remove", "h9:2")]


def test_a_removed_leader_hands_over_when_it_is_the_stranger() -> None:
    meta = FakeMeta("n1", ["n1", "n2", "n3", "n4"])
    d = driver(meta, md_of("n2", "n3", "n4"), Joins(), [0.0])  # n1 left the metadata
    assert run(d.round_once()) == voters.Step("remove", RAFT["n1"])
    assert run(d.round_once()) == voters.Step("remove", RAFT["n1"])
    assert meta.group.calls == [("transfer", RAFT["n1"])]


def test_a_candidate_that_does_not_answer_is_skipped_for_a_while() -> None:
    meta, joins, now = FakeMeta("n1", ["n1", "n2", "n3"]), Joins(), [0.0]
    md = md_of("n1", "n2", "n3", "n4", "n5", "n6")
    d = driver(meta, md, joins, now)
    first = run(d.round_once())
    assert first is not None and first.kind == "add"
    joins.down.add(first.node)
    meta.group.members.remove(RAFT[first.node])  # as if it never joined
    assert run(d.round_once()) == first and "did not take meta_join" in d.state["outcome"]
    second = run(d.round_once())
    assert second is not None and second.node != first.node
    now[0] += d.backoff + 1
    joins.down.clear()
    run(d.round_once())
    assert RAFT[first.node] in meta.group.members


def test_a_refused_add_is_reported_and_tried_again_next_round() -> None:
    meta = FakeMeta("n1", ["n1", "n2", "n3"])
    meta.group.refuse = Refused(Refusal.NO_LIVE_QUORUM, "2 of 4 live")
    d = driver(meta, md_of("n1", "n2", "n3", "n4", "n5"), Joins(), [0.0])
    step = run(d.round_once())
    assert "not added" in d.state["outcome"] and run(d.round_once()) == step
    assert d.changes == 0


def test_a_configured_member_that_is_not_live_is_asked_to_run_the_group() -> None:
    meta, joins, now = FakeMeta("n1", ["n1", "n2", "n3"]), Joins(), [0.0]
    meta.lagging = {RAFT["n3"]}
    d = driver(meta, md_of("n1", "n2", "n3"), joins, now)
    run(d.round_once())
    assert joins.asked == [("n3", tuple(sorted(meta.group.members)))]
    run(d.round_once())
    assert len(joins.asked) == 1  # at most every heal_every seconds
    now[0] += d.heal_every
    run(d.round_once())
    assert len(joins.asked) == 2


def test_a_leaving_voter_that_is_down_goes_before_its_replacement_comes() -> None:
    meta = FakeMeta("n1", ["n1", "n2", "n3"])
    meta.lagging = {RAFT["n3"]}  # stopped once its plan finished, still a voter
    d = driver(meta, md_of("n1", "n2", "n3", "n4", leaving=("n3",)), Joins(), [0.0])
    assert run(d.round_once()) == voters.Step("remove", "n3")  # 3 → 4 would need n3 live
    assert run(d.round_once()) == voters.Step("add", "n4")
    assert sorted(meta.group.members) == sorted(RAFT[n] for n in ("n1", "n2", "n4"))
