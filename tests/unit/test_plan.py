"""kv/plan.py: staged membership changes → a deterministic plan, or a 4xx naming the problem."""

from __future__ import annotations

import pytest

from kv import claim
from kv.errors import InvalidRequest, KeyspaceConflict
from kv.keyspace import KeyspaceConfig
from kv.meta import Member, Metadata
from kv.meta_machine import apply
from kv.plan import Change, make_plan


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
    plan = make_plan(md, [add(4)], {("eventual", 0): 1000})
    assert [m.id for m in plan.members] == ["n1", "n2", "n3", "n4"]
    assert plan.chains == claim.add(md.chains, "n4")
    by_mode = plan.summary()["by_mode"]
    assert by_mode == {"eventual": 48, "linearizable": 48}  # 64·3/4 each: the ideal
    assert all(m.target == "n4" for m in plan.moves)
    assert plan.summary()["bytes"] == sum(m.bytes for m in plan.moves if m.partition == 0)


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
