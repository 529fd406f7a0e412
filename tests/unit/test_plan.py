"""kv/plan.py: staged membership changes → a deterministic plan, or a 4xx naming the problem."""

from __future__ import annotations

import pytest

from kv import claim
from kv.errors import InvalidRequest, KeyspaceConflict
from kv.keyspace import KeyspaceConfig
from kv.meta import Member, Metadata, MoveKey
from kv.meta_machine import apply
from kv.plan import Change, Plan, PlannedMove, make_plan
from kv.sizes import Size


def member(i: int) -> Member:
    return Member(f"n{i}", f"10.0.0.{i}:7001", f"10.0.0.{i}:7101")


def metadata(nodes: int = 3, claimed: bool = True) -> Metadata:
    boot = {
        "type": "bootstrap",
        "members": [member(i).to_dict() for i in range(1, nodes + 1)],
        "partitions": 64,
        "vnodes": 64,
    }
    if claimed:
        boot["claim"] = "chains"
    md, _ = apply(Metadata(), boot)
    for ks in (
        KeyspaceConfig("ev", "eventual", 3, read_quorum=2, write_quorum=2),
        KeyspaceConfig("lin", "linearizable", 3),
    ):
        md, _ = apply(md, {"type": "put_keyspace", "keyspace": ks.to_dict()})
    return md


def add(i: int) -> Change:
    return Change("add", f"n{i}", member(i))


def test_adding_a_node_moves_its_share_in_each_mode() -> None:
    md = metadata()
    plan = make_plan(md, [add(4)])
    assert [m.id for m in plan.members] == ["n1", "n2", "n3", "n4"]
    assert plan.chains == claim.add(md.chains, "n4")
    by_mode = plan.summary()["by_mode"]
    assert by_mode == {"eventual": 48, "linearizable": 48}  # 64·3/4 each: the ideal
    assert all(m.target == "n4" for m in plan.moves)


def sizes_of(plan: Plan, every: int = 1) -> dict[MoveKey, Size]:
    """A size for every `every`-th move: partition p holds p keys of 100 bytes."""
    return {m.key: Size(m.partition, 100 * m.partition) for m in plan.moves[::every]}


def test_each_move_carries_its_partitions_size_and_the_summary_adds_them() -> None:
    md = metadata()
    sizes = sizes_of(make_plan(md, [add(4)]))
    plan = make_plan(md, [add(4)], sizes)
    assert all(m.size == sizes[m.key] for m in plan.moves)
    summary = plan.summary()
    assert summary["bytes"] == sum(s.bytes for s in sizes.values()) > 0
    assert summary["keys"] == sum(s.keys for s in sizes.values())
    assert summary["bytes_unknown"] == 0
    wire = plan.to_wire()["moves"][1]
    assert (wire["bytes"], wire["keys"]) == (
        sizes[plan.moves[1].key].bytes,
        plan.moves[1].partition,
    )


def test_sizes_never_change_the_plan_id() -> None:
    md = metadata()
    bare = make_plan(md, [add(4)])
    sized = make_plan(md, [add(4)], sizes_of(bare))
    assert sized.plan_id == bare.plan_id == bare.sized(sizes_of(bare, 3)).plan_id
    assert sized.to_wire()["plan_id"] == bare.plan_id
    # a commit recomputes the plan without sizes and compares ids: it is accepted
    wire = [c.to_wire() for c in sized.changes]
    _, outcome = apply(md, {"type": "commit_plan", "plan_id": sized.plan_id, "changes": wire})
    assert outcome["status"] == "committed"


def test_a_move_whose_size_is_unknown_is_null_never_zero() -> None:
    md = metadata()
    bare = make_plan(md, [add(4)])
    plan = bare.sized(sizes_of(bare, every=2))  # every other owner did not answer
    unknown = [m for m in plan.to_wire()["moves"] if m["bytes"] is None]
    assert len(unknown) == len(plan.moves) // 2 and all(m["keys"] is None for m in unknown)
    summary = plan.summary()
    assert summary["bytes_unknown"] == len(unknown)
    assert summary["bytes"] == sum(m.bytes or 0 for m in plan.moves)
    nothing = bare.summary()  # no sizes at all (the meta group's own recomputation)
    assert nothing["bytes_unknown"] == len(bare.moves) and nothing["bytes"] == 0


def test_a_dropped_replica_copies_nothing() -> None:
    """A move without a target (the replica list shrinks) has a known size: none."""
    move = PlannedMove("eventual", 3, 5, "n2", None)
    assert move.sized({}).size == Size() and move.sized({}).to_wire()["bytes"] == 0
    assert PlannedMove("eventual", 3, 5, "n2", "n4").sized({}).bytes is None


def test_the_same_inputs_give_the_same_plan_and_the_id_names_the_epoch() -> None:
    md = metadata()
    one, two = make_plan(md, [add(4)]), make_plan(md, [add(4)])
    assert one == two and one.plan_id == two.plan_id
    later, _ = apply(md, {"type": "delete_keyspace", "name": "lin"})
    assert make_plan(later, [add(4)]).plan_id != one.plan_id


def test_replace_moves_exactly_the_old_nodes_replicas() -> None:
    md = metadata()
    plan = make_plan(md, [Change("replace", "n2", member(9))])
    assert {(m.source, m.target) for m in plan.moves} == {("n2", "n9")}
    assert len(plan.moves) == 2 * 64  # every partition, both modes (N=3 of 3 nodes)


def test_changes_apply_in_order_within_one_plan() -> None:
    md = metadata()
    plan = make_plan(md, [add(4), Change("remove", "n1")])
    assert [m.id for m in plan.members] == ["n2", "n3", "n4"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ([Change("remove", "n7")], "node"),
        ([Change("add", "n1", member(1))], "member"),
        ([Change("add", "n8", Member("n8", "10.0.0.1:7001", "x:1"))], "member"),
        ([Change("remove", "n3")], "changes"),  # 2 members < replication 3
        ([], "changes"),
    ],
)
def test_bad_changes_are_refused_naming_the_problem(changes: list[Change], field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        make_plan(metadata(), changes)
    assert info.value.details["field"] == field


def test_a_vnode_placed_cluster_cannot_plan() -> None:
    with pytest.raises(KeyspaceConflict):
        make_plan(metadata(claimed=False), [add(4)])


@pytest.mark.parametrize(
    ("wire", "field"),
    [
        ({"kind": "grow", "node": "n4"}, "kind"),
        ({"kind": "add", "node": "n4"}, "member"),
        ({"kind": "remove", "node": ""}, "node"),
        ({"kind": "add", "node": "n4", "member": {"id": "n4"}}, "member"),
        ([1], "changes"),
    ],
)
def test_wire_changes_are_validated(wire: object, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        Change.from_wire(wire)
    assert info.value.details["field"] == field


def test_wire_round_trip() -> None:
    change = Change("remove", "n2", force=True)
    assert Change.from_wire(change.to_wire()) == change
    assert Change.from_wire(add(4).to_wire()) == add(4)
