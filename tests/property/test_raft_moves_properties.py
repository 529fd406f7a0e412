"""raft_groups/moves.py `next_step` driven to the end against a naive model of a Raft group
(STYLE.md rule 7): a configuration, a leader, dead members, and the adapter's refusals
(docs/raft.md "Membership changes": a change needs a live quorum of the configuration it
makes — except a lone leader's add — and the leader never removes itself).

Properties, from any start (owners, target, a configuration anywhere between them, dead
members outside the target): every step is one member change; a refused step is never
proposed by a well-behaved decision when the target's members are live; the group never
holds more than max(start, target + 1) members; the leader is never removed; the walk
ends at the target — reported if it is a move, idle if not — within 2 × (members moved)
+ 2 steps.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raft_groups.moves import Add, Idle, MoveState, Remove, Report, TransferLeadership, next_step

NODES = "abcdefgh"


@st.composite
def starts(draw: st.DrawFn) -> tuple[MoveState, frozenset[str]]:
    n = draw(st.integers(1, 5))
    owners = tuple(draw(st.permutations(NODES))[:n])
    target = tuple(draw(st.permutations(NODES))[:n])
    between = set(owners) | set(target)
    members = frozenset(draw(st.sets(st.sampled_from(sorted(between)), min_size=1)))
    # dead: only members leaving (a dead member that stays blocks any safe move)
    leaving = sorted(members - set(target))
    dead = frozenset(draw(st.sets(st.sampled_from(leaving)))) if leaving else frozenset()
    live_members = sorted(members - dead)
    leader = draw(st.sampled_from(live_members)) if live_members else None
    if leader is None or len(members - dead) < len(members) // 2 + 1:
        leader = None  # no live quorum at all: nothing can be decided; skip
    state = MoveState(members, owners, target, leader or "", frozenset(members - dead))
    return state, dead


def quorum(size: int) -> int:
    return size // 2 + 1


def allowed(state: MoveState, after: frozenset[str]) -> bool:
    """The adapter's check: the live members of the new configuration are a quorum of it
    (a new member does not count as live)."""
    live = state.live & after & state.members
    return len(state.members) == 1 or len(live) >= quorum(len(after))


@settings(max_examples=500)
@given(starts())
def test_next_step_walks_any_start_to_the_target(start: tuple[MoveState, frozenset[str]]) -> None:
    state, dead = start
    if not state.leader:
        return
    cap = max(len(state.members), len(state.target) + 1)
    moved = len(state.members ^ set(state.target))
    for _ in range(2 * moved + 2):
        step = next_step(state)
        if isinstance(step, Report | Idle):
            assert state.members == set(state.target)
            assert isinstance(step, Report) == (set(state.target) != set(state.owners))
            return
        state = perform(state, step, dead)
        assert len(state.members) <= cap
        assert state.leader in state.members
    raise AssertionError(f"not at the target after {2 * moved + 2} steps: {state}")


def perform(state: MoveState, step: object, dead: frozenset[str]) -> MoveState:
    """The model of the adapter: apply the change (or the transfer) if it is allowed."""
    members, leader = set(state.members), state.leader
    if isinstance(step, Add):
        assert step.member not in members and step.member in state.target
        members.add(step.member)
    elif isinstance(step, Remove):
        assert step.member != leader and step.member in members
        assert step.member not in state.target
        assert leader not in step.catch_up
        members.discard(step.member)
    else:
        assert isinstance(step, TransferLeadership) and leader in step.exclude
        stays = sorted(m for m in members - step.exclude if m not in dead)
        leader = stays[0]
    after = frozenset(members)
    assert allowed(state, after), f"{step} would leave no live quorum: {state}"
    live = frozenset(m for m in after if m not in dead)
    return MoveState(after, state.owners, state.target, leader, live)
