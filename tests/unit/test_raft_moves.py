"""The decision of linearizable moves (raft_groups/moves.py): one membership step at a time,
from the leader's configuration, the owners and the target (docs/raft.md "Linearizable
moves"; notes/membership.md rules 6-8), and the targets the metadata gives."""

from __future__ import annotations

from typing import Any

from kv.keyspace import KeyspaceConfig
from kv.meta import Member, Metadata
from kv.meta_machine import apply
from kv.plan import Change, make_plan
from raft_groups import moves
from raft_groups.moves import Add, Idle, MoveState, Remove, Report, TransferLeadership, next_step
from raft_groups.placement import hosted_groups


def state(members: str, owners: str, target: str, leader: str = "a", dead: str = "") -> MoveState:
    """Members are one letter each: state("abd", "abd", "abc") is {a, b, d} → {a, b, c}."""
    return MoveState(
        members=frozenset(members),
        owners=tuple(owners),
        target=tuple(target),
        leader=leader,
        live=frozenset(m for m in members if m not in dead) | {leader},
    )


# ---------------------------------------------------------------------- one move, step by step
def test_a_move_adds_the_incoming_member_first() -> None:
    assert next_step(state("abd", "abd", "abc")) == Add("c")


def test_then_removes_the_outgoing_member_once_the_incoming_one_caught_up() -> None:
    assert next_step(state("abcd", "abd", "abc")) == Remove("d", catch_up=("c",))


def test_then_reports_the_incoming_owner() -> None:
    assert next_step(state("abc", "abd", "abc")) == Report(catch_up=("c",))


def test_a_group_that_is_its_owners_is_idle() -> None:
    assert next_step(state("abc", "abc", "abc")) == Idle()


def test_an_outgoing_leader_hands_leadership_to_a_member_that_stays() -> None:
    step = next_step(state("abcd", "abd", "abc", leader="d"))
    assert step == TransferLeadership(exclude=frozenset("d"), catch_up=("c",))


def test_an_outgoing_leader_adds_first_then_goes_last() -> None:
    assert next_step(state("abd", "abd", "abc", leader="d")) == Add("c")
    # two leave: the one that does not lead goes first
    assert next_step(state("abcde", "ade", "abc", leader="d")) == Remove("e", ("b", "c"))


def test_a_dead_outgoing_member_is_removed_before_the_add() -> None:
    """3 → 4 members with one dead needs all three others live: remove it first (3 → 2
    needs the two live ones), then add (2 → 3)."""
    assert next_step(state("abd", "abd", "abc", dead="d")) == Remove("d")
    assert next_step(state("ab", "abd", "abc", dead="d")) == Add("c")
    assert next_step(state("abc", "abd", "abc")) == Report(("c",))


def test_a_dead_member_that_stays_blocks_nothing_here() -> None:
    """The add is decided; the adapter refuses it (no live quorum) until b is back."""
    assert next_step(state("abd", "abd", "abc", dead="b")) == Add("c")


def test_two_members_replaced_never_grow_the_group_beyond_target_plus_one() -> None:
    seen = [state("abc", "abc", "ade")]
    while not isinstance(step := next_step(seen[-1]), Report):
        members = set(seen[-1].members)
        if isinstance(step, Add):
            members.add(step.member)
        elif isinstance(step, Remove):
            members.discard(step.member)
        seen.append(state("".join(sorted(members)), "abc", "ade"))
        assert len(members) <= 4 and len(seen) < 10
    assert [sorted(s.members) for s in seen] == [
        ["a", "b", "c"],
        ["a", "b", "c", "d"],
        ["a", "c", "d"],
        ["a", "c", "d", "e"],
        ["a", "d", "e"],
    ]
    assert step == Report(("d", "e"))


def test_an_unknown_outcome_is_settled_by_the_actual_configuration() -> None:
    """The same inputs give the same step: after `Unknown` the next round reads the
    members after a barrier — the add took effect, or it is proposed again."""
    assert next_step(state("abd", "abd", "abc")) == Add("c")  # not in effect: again
    assert next_step(state("abcd", "abd", "abc")) == Remove("d", ("c",))  # in effect: on


def test_a_view_without_the_leader_decides_nothing() -> None:
    assert next_step(state("bc", "abc", "abc", leader="a")) == Idle()


def test_an_abort_after_the_flip_moves_the_member_back() -> None:
    """Reverting: the owners are the plan's, the target the old placement."""
    assert next_step(state("abc", "abc", "abd")) == Add("d")
    assert next_step(state("abcd", "abc", "abd")) == Remove("c", ("d",))
    assert next_step(state("abd", "abc", "abd")) == Report(("d",))


def test_an_abort_before_the_flip_brings_the_group_back_to_its_owners() -> None:
    """The abort drops an unflipped move, whatever the group already did: the target is
    the owners, the extra member goes, a removed one comes back; nothing is reported."""
    assert next_step(state("abcd", "abd", "abd")) == Remove("c")
    assert next_step(state("abc", "abd", "abd")) == Add("d")
    assert next_step(state("abd", "abd", "abd")) == Idle()


# ---------------------------------------------------------------------- from the metadata
def member(i: int) -> Member:
    return Member(f"n{i}", f"h{i}:1", f"h{i}:2")


def cluster() -> Metadata:
    boot = {
        "type": "bootstrap",
        "members": [member(i).to_dict() for i in (1, 2, 3, 4)],
        "partitions": 8,
        "vnodes": 8,
        "claim": "chains",
    }
    md, _ = apply(Metadata(), boot)
    for ks in (
        KeyspaceConfig("lin", "linearizable", 3),
        KeyspaceConfig("ev", "eventual", 3, read_quorum=2, write_quorum=2),
    ):
        md, _ = apply(md, {"type": "put_keyspace", "keyspace": ks.to_dict()})
    return md


REMOVE4 = [Change("remove", "n4")]


def committed(md: Metadata) -> Metadata:
    plan = make_plan(md, REMOVE4)
    wire = [c.to_wire() for c in REMOVE4]
    after, outcome = apply(md, {"type": "commit_plan", "plan_id": plan.plan_id, "changes": wire})
    assert outcome["status"] == "committed", outcome
    return after


def lin_moves(md: Metadata) -> list[tuple[str, int, int]]:
    assert md.transition is not None
    return sorted(k for k in md.transition.pending if k[0] == "linearizable")


def report_all(md: Metadata, n: int, p: int) -> tuple[Metadata, Any]:
    outcome: Any = None
    for node in moves.unreported(md, n, p):
        md, outcome = apply(md, moves.move_done(md, n, p, node))
    return md, outcome


def test_a_pending_group_moves_to_the_plan_and_flips_once_reported() -> None:
    md = committed(cluster())
    _, n, p = lin_moves(md)[0]
    owners, target = moves.group_target(md, n, p)
    assert "n4" in owners and "n4" not in target and len(target) == 3
    assert moves.unreported(md, n, p) == tuple(x for x in target if x not in owners)
    flipped, outcome = report_all(md, n, p)
    assert outcome["status"] == "flipped"
    assert moves.group_target(flipped, n, p) == (target, target)
    assert moves.unreported(flipped, n, p) == ()


def test_an_abort_after_the_flip_targets_the_old_owners() -> None:
    md = committed(cluster())
    _, n, p = lin_moves(md)[0]
    before, after = moves.group_target(md, n, p)
    flipped, _ = report_all(md, n, p)
    assert flipped.transition is not None
    back, _ = apply(flipped, {"type": "abort_plan", "plan_id": flipped.transition.plan_id})
    assert moves.group_target(back, n, p) == (after, before)
    assert moves.unreported(back, n, p) == ("n4",)
    done, outcome = report_all(back, n, p)
    assert outcome["status"] == "flipped" and moves.group_target(done, n, p) == (before, before)


def test_incoming_owners_host_the_group_as_joining_members() -> None:
    md = committed(cluster())
    _, n, p = lin_moves(md)[0]
    owners, target = moves.group_target(md, n, p)
    (new,) = [x for x in target if x not in owners]
    spec = hosted_groups(md, new)[f"p{p}r{n}"]
    assert spec.joining(new) and spec.members == owners
    assert set(spec.peers(new)) == set(owners)  # the group as it stands
    owner = owners[0]
    assert not spec.joining(owner) and spec.peers(owner) == owners[1:]
    flipped, _ = report_all(md, n, p)
    assert f"p{p}r{n}" not in hosted_groups(flipped, "n4")
    assert not hosted_groups(flipped, new)[f"p{p}r{n}"].joining(new)


def test_an_incoming_member_that_leads_waits_for_no_catch_up_of_its_own() -> None:
    """A transfer may hand leadership to the incoming member: the leader's match index for
    itself is not tracked, so waiting for it would never end."""
    assert next_step(state("abcd", "abd", "abc", leader="c")) == Remove("d", catch_up=())
    assert next_step(state("abc", "abd", "abc", leader="c")) == Report(catch_up=())
