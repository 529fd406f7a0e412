"""The meta state machine's membership changes (kv/meta_machine.py): commit is a
compare-and-set on the plan, one plan at a time, moves flip one by one, abort goes back."""

from __future__ import annotations

from typing import Any

from kv import claim
from kv.keyspace import KeyspaceConfig
from kv.meta import Member, Metadata
from kv.meta_machine import apply
from kv.plan import Change, make_plan


def member(i: int) -> Member:
    return Member(f"n{i}", f"h{i}:1", f"h{i}:2")


def metadata() -> Metadata:
    boot = {
        "type": "bootstrap",
        "members": [member(i).to_dict() for i in (1, 2, 3)],
        "partitions": 16,
        "vnodes": 8,
        "claim": "chains",
    }
    md, _ = apply(Metadata(), boot)
    ks = KeyspaceConfig("ev", "eventual", 2, read_quorum=1, write_quorum=1)
    md, _ = apply(md, {"type": "put_keyspace", "keyspace": ks.to_dict()})
    return md


ADD4 = [Change("add", "n4", member(4))]


def commit(md: Metadata, changes: list[Change], plan_id: str | None = None) -> Any:
    pid = plan_id or make_plan(md, changes).plan_id
    wire = [c.to_wire() for c in changes]
    return apply(md, {"type": "commit_plan", "plan_id": pid, "changes": wire})


def done(md: Metadata, key: tuple[str, int, int]) -> Metadata:
    assert md.transition is not None
    mode, n, p = key
    change = {
        "type": "move_done",
        "plan_id": md.transition.plan_id,
        "mode": mode,
        "replication": n,
        "partition": p,
    }
    for node in md.owners(mode, n, p)[1]:
        md, outcome = apply(md, {**change, "node": node})
    assert outcome["status"] == "flipped"
    return md


def test_commit_starts_a_transition_with_the_old_owners_serving() -> None:
    md = metadata()
    moving, outcome = commit(md, ADD4)
    assert outcome["status"] == "committed"
    t = moving.transition
    assert t is not None and t.pending and moving.chains == md.chains
    assert [m.id for m in moving.members] == ["n1", "n2", "n3", "n4"]  # addresses known
    mode, n, p = sorted(t.pending)[0]
    owners, incoming = moving.owners(mode, n, p)
    assert owners == md.ring().preference_list(p, n) and incoming == ("n4",)


def test_moves_flip_one_by_one_and_the_plan_finishes() -> None:
    md = metadata()
    moving, _ = commit(md, ADD4)
    assert moving.transition is not None
    target = moving.transition.chains
    keys = sorted(moving.transition.pending)
    flipped = done(moving, keys[0])
    assert flipped.owners(*keys[0])[0] == target[keys[0][2]][: keys[0][1]]
    for key in keys[1:]:
        flipped = done(flipped, key)
    assert flipped.transition is None and flipped.chains == target
    assert claim.members_of(flipped.chains) == ["n1", "n2", "n3", "n4"]


def test_commit_is_a_compare_and_set_and_one_plan_at_a_time() -> None:
    md = metadata()
    stale, outcome = commit(md, ADD4, plan_id="0" * 16)
    assert outcome["code"] == "plan_conflict" and outcome["reason"] == "plan_changed"
    assert stale == md
    moving, _ = commit(md, ADD4)
    again, outcome = commit(moving, [Change("add", "n5", member(5))])
    assert outcome["reason"] == "plan_in_flight" and again == moving


def test_abort_before_any_flip_returns_to_the_old_placement_at_once() -> None:
    md = metadata()
    moving, _ = commit(md, ADD4)
    assert moving.transition is not None
    back, outcome = apply(moving, {"type": "abort_plan", "plan_id": moving.transition.plan_id})
    assert outcome["status"] == "aborting" and back.transition is None
    assert back.chains == md.chains and back.members == md.members


def test_abort_after_flips_moves_those_back_first() -> None:
    md = metadata()
    moving, _ = commit(md, ADD4)
    assert moving.transition is not None
    key = sorted(moving.transition.pending)[0]
    flipped = done(moving, key)
    back, _ = apply(flipped, {"type": "abort_plan", "plan_id": moving.transition.plan_id})
    t = back.transition
    assert t is not None and t.reverting and t.pending == {key}
    mode, n, p = key
    owners, incoming = back.owners(mode, n, p)
    assert "n4" in owners  # the new owner still serves what it holds ...
    assert incoming  # ... and the old owner it goes back to takes writes
    done_back = done(back, key)
    assert done_back.transition is None and done_back.chains == md.chains
    assert done_back.members == md.members


def test_stale_and_duplicate_move_reports_change_nothing() -> None:
    md = metadata()
    moving, _ = commit(md, ADD4)
    assert moving.transition is not None
    key = sorted(moving.transition.pending)[0]
    flipped = done(moving, key)
    wire = {"type": "move_done", "plan_id": "other", "mode": key[0], "replication": key[1]}
    assert apply(flipped, {**wire, "partition": key[2], "node": "n4"})[1]["status"] == "unchanged"
    assert moving.transition is not None
    twice = {**wire, "plan_id": moving.transition.plan_id, "partition": key[2], "node": "n4"}
    assert apply(flipped, twice)[1]["status"] == "unchanged"  # already flipped
    other = sorted(moving.transition.pending)[1]
    not_incoming = {**twice, "partition": other[2], "replication": other[1], "node": "n1"}
    assert apply(moving, not_incoming)[1]["status"] == "unchanged"  # n1 is not incoming


def test_metadata_with_a_transition_round_trips() -> None:
    moving, _ = commit(metadata(), ADD4)
    assert Metadata.from_dict(moving.to_dict()) == moving


def test_a_plan_moving_linearizable_replicas_commits_and_flips_group_by_group() -> None:
    """Raft groups move by reconfiguration (raft_groups/mover.py): each moving group is a
    pending move like an eventual partition, flipped once its incoming owner reports."""
    md = metadata()
    ks = KeyspaceConfig("lin", "linearizable", 3)
    md, _ = apply(md, {"type": "put_keyspace", "keyspace": ks.to_dict()})
    moving, outcome = commit(md, ADD4)
    assert outcome["status"] == "committed" and moving.transition is not None
    lin = sorted(k for k in moving.transition.pending if k[0] == "linearizable")
    assert lin and all(k[1] == 3 for k in lin)
    assert all(moving.owners(*k)[1] == ("n4",) for k in lin)
    flipped = done(moving, lin[0])
    assert "n4" in flipped.owners(*lin[0])[0]
    for key in sorted(moving.transition.pending - {lin[0]}):
        flipped = done(flipped, key)
    assert flipped.transition is None
