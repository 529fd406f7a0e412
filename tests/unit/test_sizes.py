"""kv/sizes.py, pure: the key layouts sizes are counted by, the `part_sizes` wire form, which
owner is asked for each moving partition, and how the answers become each move's size."""

from __future__ import annotations

import asyncio
import json

import pytest

from dynamo_mode.replica import LAYOUT as EVENTUAL
from dynamo_mode.replica import KeyRef
from kv.errors import InvalidRequest
from kv.internode import OpTable
from kv.keyspace import KeyspaceConfig
from kv.meta import Metadata
from kv.meta_machine import apply
from kv.sizes import (
    PART_SIZES,
    ScopeSize,
    Size,
    SizesReply,
    SizesRequest,
    group_number,
    move_sizes,
    record,
    requests,
    sources,
)
from raft_groups import state_machine
from raft_groups.placement import GroupSpec
from raft_groups.state_machine import LAYOUT as RAFT
from tests.unit.test_plan import metadata


def test_the_layouts_locate_both_modes_keys() -> None:
    assert EVENTUAL.locate(KeyRef(513, 7, "k").storage_key()) == (513, 7)
    assert EVENTUAL.locate(b"g" + KeyRef(513, 7, "k").storage_key()) is None  # a GC marker
    assert EVENTUAL.locate(b"e\x02\x01") is None  # too short to hold a uid
    number = GroupSpec(9, 3, ("n1",)).number
    assert number == group_number(3, 9)
    data = state_machine.group_prefix(number) + (5).to_bytes(4, "big") + b"k"
    assert RAFT.locate(data) == (number, 5)
    start, stop = state_machine.group_range(number)
    assert RAFT.range(number) == (start, stop)
    assert RAFT.locate(start + b"\0\0\0\0applied") == (number, 0)  # bookkeeping: uid 0
    assert EVENTUAL.range(0xFFFF) == (b"e\xff\xff", b"f")


def test_record_counts_key_and_value() -> None:
    assert record(b"abc", b"12345") == Size(1, 8)
    assert record(b"abc", None) == Size()
    assert Size(2, 10) + Size(1, 5) - Size(3, 15) == Size()


def test_the_wire_form_round_trips_through_a_table() -> None:
    reply = SizesReply(
        (ScopeSize(4, {7: Size(3, 300)}),), (ScopeSize(group_number(3, 4), {0: Size(2, 40)}),)
    )
    request = SizesRequest((4, 2), (group_number(3, 4),), wait_s=1.5)
    table = OpTable()

    async def handler(req: SizesRequest) -> SizesReply:
        assert req == SizesRequest((2, 4), (group_number(3, 4),), 1.5)  # sorted, deduplicated
        return reply

    table.register(PART_SIZES, handler)
    wire = asyncio.run(table.dispatch("part_sizes", json.loads(json.dumps(request.to_wire()))))
    assert PART_SIZES.reply(json.loads(json.dumps(wire))) == reply


@pytest.mark.parametrize(
    "payload",
    [
        {"eventual": [1 << 16]},
        {"linearizable": [-1]},
        {"eventual": "all"},
        {"wait_s": 61},
        {"wait_s": True},
    ],
)
def test_bad_requests_are_refused_naming_the_field(payload: object) -> None:
    table = OpTable()

    async def handler(req: SizesRequest) -> SizesReply:
        raise AssertionError("never reached")

    table.register(PART_SIZES, handler)
    with pytest.raises(InvalidRequest):
        asyncio.run(table.dispatch("part_sizes", payload))


@pytest.mark.parametrize(
    "raw",
    [
        {"eventual": [[4, [[7, -1, 0]]]]},
        {"eventual": [[4]]},
        {"linearizable": [[1 << 24, []]]},
    ],
)
def test_bad_replies_do_not_decode(raw: object) -> None:
    with pytest.raises(ValueError):
        SizesReply.from_wire(raw)


# ---------------------------------------------------------------------- who is asked
def moving(md: Metadata) -> list[tuple[str, int, int]]:
    return [(mode, 3, p) for mode in ("eventual", "linearizable") for p in (0, 1, 2)]


def test_each_partition_asks_its_first_live_current_owner() -> None:
    md = metadata()
    first = {key: md.owners(*key)[0][0] for key in moving(md)}
    assert sources(md, moving(md), lambda n: True) == first
    down = first[("eventual", 3, 0)]
    asked = sources(md, moving(md), lambda n: n != down)
    assert asked[("eventual", 3, 0)] == md.owners("eventual", 3, 0)[0][1]
    assert sources(md, moving(md), lambda n: False) == {}  # nobody live: all unknown


def test_one_request_per_owner_names_its_partitions_and_groups() -> None:
    asked = {("eventual", 3, 5): "n1", ("linearizable", 3, 5): "n1", ("eventual", 3, 6): "n2"}
    assert requests(asked, wait_s=1.0) == {
        "n1": SizesRequest((5,), (group_number(3, 5),), 1.0),
        "n2": SizesRequest((6,), (), 1.0),
    }


# ---------------------------------------------------------------------- answers → moves
def with_keyspaces() -> Metadata:
    """Eventual keyspaces of replication 3 (two) and 1, a linearizable one of 3."""
    md = metadata()
    for ks in (
        KeyspaceConfig("ev2", "eventual", 3, read_quorum=2, write_quorum=2),
        KeyspaceConfig("ev1", "eventual", 1, read_quorum=1, write_quorum=1),
    ):
        md, _ = apply(md, {"type": "put_keyspace", "keyspace": ks.to_dict()})
    return md


def test_an_eventual_move_adds_the_keyspaces_of_its_replication() -> None:
    md = with_keyspaces()
    uid = {k.name: k.uid for k in md.keyspaces}
    held = {uid["ev"]: Size(2, 200), uid["ev2"]: Size(1, 50), uid["ev1"]: Size(9, 900)}
    held[999] = Size(5, 5000)  # an old incarnation: no keyspace copies it
    reply = SizesReply(eventual=(ScopeSize(4, held),))
    asked = {("eventual", 3, 4): "n1", ("eventual", 1, 4): "n1", ("eventual", 3, 5): "n1"}
    assert move_sizes(md, asked, {"n1": reply}) == {
        ("eventual", 3, 4): Size(3, 250),
        ("eventual", 1, 4): Size(9, 900),
        # partition 5 not in the reply: unknown, not 0
    }


def test_a_raft_move_counts_its_groups_whole_range_and_its_data_keys() -> None:
    md = with_keyspaces()
    number = group_number(3, 4)
    reply = SizesReply(linearizable=(ScopeSize(number, {0: Size(3, 120), 8: Size(2, 80)}),))
    asked = {("linearizable", 3, 4): "n2", ("linearizable", 3, 6): "n2"}
    assert move_sizes(md, asked, {"n2": reply}) == {("linearizable", 3, 4): Size(2, 200)}


def test_an_owner_that_did_not_answer_leaves_its_moves_unknown() -> None:
    md = with_keyspaces()
    asked = {("eventual", 3, 4): "n1", ("eventual", 3, 5): "n2"}
    reply = SizesReply(eventual=(ScopeSize(4, {}), ScopeSize(5, {})))
    assert move_sizes(md, asked, {"n1": reply}) == {("eventual", 3, 4): Size()}  # empty: 0
