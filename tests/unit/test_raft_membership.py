"""Membership changes without pysyncobj: the pure checks (syncobj_adapter/membership.py) and
the change flows (syncobj_adapter/reconfig.py) driven through a fake `ChangeTarget`.

The fake is a scripted leader: its view is a plain value the test edits, its barrier and
proposals answer what the test says, and it records the calls in order.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from raft_groups.syncobj_adapter.membership import (
    ChangeOutcome,
    Done,
    GroupView,
    Moved,
    NotMoved,
    OneChangeAtATime,
    Refusal,
    Refused,
    Unknown,
    caught_up,
    check_add,
    check_remove,
    live_members,
    quorum,
    transfer_target,
)
from raft_groups.syncobj_adapter.reconfig import ChangePolicy, Reconfigurator

A, B, C, D = "a:1", "b:1", "c:1", "d:1"


def view(
    self_address: str = A,
    members: tuple[str, ...] = (A, B, C),
    match: dict[str, int] | None = None,
    connected: frozenset[str] | None = None,
    is_leader: bool = True,
    commit: int = 100,
    last: int = 100,
) -> GroupView:
    others = [m for m in members if m != self_address]
    return GroupView(
        self_address=self_address,
        is_leader=is_leader,
        leader=self_address if is_leader else B,
        members=members,
        commit_index=commit,
        last_index=last,
        match=match if match is not None else {m: last for m in others},
        connected=connected if connected is not None else frozenset(others),
    )


# ---------------------------------------------------------------------- pure checks
def test_quorum_is_a_majority() -> None:
    assert [quorum(n) for n in range(1, 7)] == [1, 2, 2, 3, 3, 4]


def test_live_members_are_the_leader_and_connected_followers_within_the_lag() -> None:
    v = view(match={B: 95, C: 10}, connected=frozenset({B, C}))
    assert live_members(v, max_lag=5) == {A, B}
    assert live_members(v, max_lag=90) == {A, B, C}
    assert live_members(replace(v, connected=frozenset({C})), max_lag=90) == {A, C}


def test_an_add_needs_a_live_quorum_of_the_larger_group() -> None:
    assert check_add(view(), D, max_lag=0) is None
    # 3 → 4 needs 3 live: with one follower down, the 4-member group could not commit
    refused = check_add(view(connected=frozenset({B})), D, max_lag=0)
    assert isinstance(refused, Refused) and refused.reason is Refusal.NO_LIVE_QUORUM
    assert "2 of the 4" in refused.detail


def test_a_lone_leader_may_add_a_second_member() -> None:
    """1 → 2 is the only way a one-member group grows (a replication-1 group moving, a
    2-member group whose other member died): it has no quorum to protect."""
    assert check_add(view(members=(A,), connected=frozenset()), D, max_lag=0) is None


def test_an_add_is_refused_off_the_leader_with_the_leader_named() -> None:
    refused = check_add(view(self_address=C, is_leader=False), D, max_lag=0)
    assert refused == Refused(Refusal.NOT_LEADER, refused.detail if refused else "", B)
    refused = check_add(view(), B, max_lag=0)
    assert isinstance(refused, Refused) and refused.reason is Refusal.ALREADY_MEMBER


def test_a_remove_keeps_a_live_quorum_of_the_remaining_members() -> None:
    four = (A, B, C, D)
    assert check_remove(view(members=four), B, max_lag=0) is None
    # d has not caught up, c is down: removing b leaves {a, c, d} with only a live
    lagging = view(members=four, match={B: 100, C: 100, D: 3}, connected=frozenset({B, D}))
    refused = check_remove(lagging, B, max_lag=10)
    assert isinstance(refused, Refused) and refused.reason is Refusal.NO_LIVE_QUORUM
    assert check_remove(lagging, C, max_lag=10) is None  # {a, b, d}: a and b are live


@pytest.mark.parametrize(
    ("address", "members", "reason"),
    [
        (A, (A, B, C), Refusal.IS_LEADER),
        (D, (A, B, C), Refusal.NOT_MEMBER),
        (A, (A,), Refusal.IS_LEADER),
    ],
)
def test_a_remove_is_refused_for_the_leader_and_strangers(
    address: str, members: tuple[str, ...], reason: Refusal
) -> None:
    refused = check_remove(view(members=members), address, max_lag=0)
    assert isinstance(refused, Refused) and refused.reason is reason


def test_caught_up_compares_the_match_index_on_the_leader_only() -> None:
    v = view(match={B: 100, C: 99})
    assert caught_up(v, B, 100) and not caught_up(v, C, 100) and not caught_up(v, D, 1)
    assert not caught_up(replace(v, is_leader=False), B, 100)


def test_the_transfer_target_is_the_most_caught_up_connected_follower() -> None:
    v = view(match={B: 90, C: 99}, connected=frozenset({B, C}))
    assert transfer_target(v) == C
    assert transfer_target(v, exclude=frozenset({C})) == B
    assert transfer_target(replace(v, connected=frozenset({B}))) == B
    assert transfer_target(replace(v, connected=frozenset())) is None
    assert transfer_target(view(match={B: 100, C: 100})) == B  # ties: smallest address


def test_one_change_at_a_time() -> None:
    serializer = OneChangeAtATime()
    assert serializer.begin("adding d") and serializer.in_flight == "adding d"
    assert not serializer.begin("removing b")
    assert serializer.refusal().reason is Refusal.CHANGE_IN_PROGRESS
    assert "adding d" in serializer.refusal().detail
    serializer.end()
    assert serializer.begin("removing b")


# ---------------------------------------------------------------------- flows
@dataclass
class FakeLeader:
    """A scripted `ChangeTarget`: `views` are returned in turn (the last one repeats)."""

    views: list[GroupView] = field(default_factory=lambda: [view()])
    barrier_ok: bool = True
    reachable: bool = True
    outcome: ChangeOutcome = Done((A, B, C, D))
    transfer_ready_after: int = 0  # try_transfer answers None this many times first
    moved_view: GroupView | None = None  # the view after a TimeoutNow was sent
    calls: list[str] = field(default_factory=list)
    gate: asyncio.Event | None = None  # the proposal waits for it

    async def view(self) -> GroupView:
        return self.views.pop(0) if len(self.views) > 1 else self.views[0]

    async def barrier(self, timeout: float) -> bool:
        self.calls.append("barrier")
        return self.barrier_ok

    async def propose_change(self, kind: str, address: str, timeout: float) -> ChangeOutcome:
        self.calls.append(f"{kind} {address}")
        if self.gate is not None:
            await self.gate.wait()
        return self.outcome

    async def reach(self, address: str, timeout: float, poll: float) -> bool:
        self.calls.append(f"reach {address}")
        return self.reachable

    async def release(self, address: str) -> None:
        self.calls.append(f"release {address}")

    async def try_transfer(self, target: str | None, exclude: frozenset[str]) -> str | None:
        self.calls.append("try_transfer")
        if self.transfer_ready_after > 0:
            self.transfer_ready_after -= 1
            return None
        if self.moved_view is not None:
            self.views = [self.moved_view]
        return target or B


POLICY = ChangePolicy(poll=0.001, reach_timeout=0.01, step_down_wait=0.05)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_an_add_reaches_the_new_member_then_barriers_then_proposes() -> None:
    fake = FakeLeader()
    outcome = run(Reconfigurator(fake, POLICY).add_member(D, timeout=1))
    assert outcome == Done((A, B, C, D))
    assert fake.calls == [f"reach {D}", "barrier", f"add {D}", f"release {D}"]


def test_an_unreachable_member_is_not_added_and_its_pin_is_released() -> None:
    fake = FakeLeader(reachable=False)
    outcome = run(Reconfigurator(fake, POLICY).add_member(D, timeout=1))
    assert isinstance(outcome, Refused) and outcome.reason is Refusal.UNREACHABLE
    assert fake.calls == [f"reach {D}", f"release {D}"]


def test_no_change_is_proposed_without_a_committed_barrier() -> None:
    fake = FakeLeader(barrier_ok=False)
    outcome = run(Reconfigurator(fake, POLICY).remove_member(B, timeout=1))
    assert isinstance(outcome, Refused) and outcome.reason is Refusal.NO_BARRIER
    assert fake.calls == ["barrier"]


def test_the_check_is_repeated_after_the_barrier() -> None:
    """A follower that went away while the barrier committed stops the removal."""
    four = (A, B, C, D)
    fake = FakeLeader(views=[view(members=four), view(members=four, connected=frozenset())])
    outcome = run(Reconfigurator(fake, POLICY).remove_member(D, timeout=1))
    assert isinstance(outcome, Refused) and outcome.reason is Refusal.NO_LIVE_QUORUM
    assert fake.calls == ["barrier"]


def test_a_refused_check_proposes_nothing() -> None:
    fake = FakeLeader(views=[view(self_address=B, is_leader=False)])
    outcome = run(Reconfigurator(fake, POLICY).remove_member(C, timeout=1))
    assert isinstance(outcome, Refused) and outcome.reason is Refusal.NOT_LEADER
    assert fake.calls == []


def test_an_unknown_outcome_is_passed_on_and_frees_the_serializer() -> None:
    fake = FakeLeader(outcome=Unknown("leader changed"))
    reconfig = Reconfigurator(fake, POLICY)
    assert run(reconfig.remove_member(B, timeout=1)) == Unknown("leader changed")
    assert reconfig.serializer.in_flight is None


def test_a_second_change_while_one_is_in_flight_is_refused() -> None:
    async def scenario() -> tuple[ChangeOutcome, ChangeOutcome]:
        fake = FakeLeader(gate=asyncio.Event())
        reconfig = Reconfigurator(fake, POLICY)
        first = asyncio.create_task(reconfig.add_member(D, timeout=1))
        while f"add {D}" not in fake.calls:
            await asyncio.sleep(0)
        second = await reconfig.remove_member(B, timeout=1)
        assert fake.gate is not None
        fake.gate.set()
        return await first, second

    first, second = run(scenario())
    assert first == Done((A, B, C, D))
    assert isinstance(second, Refused) and second.reason is Refusal.CHANGE_IN_PROGRESS


def test_leadership_moves_once_the_target_holds_the_log() -> None:
    fake = FakeLeader(transfer_ready_after=3, moved_view=view(is_leader=False))
    outcome = run(Reconfigurator(fake, POLICY).transfer_leadership(timeout=1))
    assert isinstance(outcome, Moved) and outcome.leader == B and outcome.attempts == 1
    assert fake.calls.count("try_transfer") == 4


def test_a_transfer_off_a_follower_is_refused_at_once() -> None:
    fake = FakeLeader(views=[view(self_address=C, is_leader=False)])
    outcome = run(Reconfigurator(fake, POLICY).transfer_leadership(timeout=1))
    assert outcome == NotMoved("not_leader", B, 0) and fake.calls == []


@pytest.mark.parametrize("target", [A, D])
def test_a_transfer_to_itself_or_a_stranger_is_refused_at_once(target: str) -> None:
    fake = FakeLeader()
    outcome = run(Reconfigurator(fake, POLICY).transfer_leadership(timeout=1, target=target))
    assert outcome == NotMoved("bad_target", A, 0) and fake.calls == []


def test_a_transfer_that_never_takes_ends_in_not_moved() -> None:
    fake = FakeLeader()  # TimeoutNow is sent, but this member keeps leading
    outcome = run(Reconfigurator(fake, POLICY).transfer_leadership(timeout=0.2))
    assert isinstance(outcome, NotMoved) and outcome.reason == "timeout"
    assert outcome.leader == A and outcome.attempts >= 2
