"""The wire and decisions for moving meta voters (kv/meta_ops.py): a voter's `meta_get`
reply carries its group's leader and configuration, `meta_join` asks a node to run the
group as a joining member, and only the leader's own word tells a voter it was removed."""

from __future__ import annotations

import pytest

from kv.meta import Member, Metadata
from kv.meta_ops import (
    META_GET,
    META_JOIN,
    MetaJoin,
    MetaJoinReply,
    MetaReply,
    leader_excludes,
    voter_ids,
)

MEMBERS = tuple(Member(f"n{i}", f"10.0.0.{i}:7001", f"10.0.0.{i}:7101") for i in (1, 2, 3, 4))
RAFT = {m.id: m.raft for m in MEMBERS}


def test_a_voters_reply_round_trips_with_leader_and_members() -> None:
    reply = MetaReply(3, ("n1", "n2"), None, RAFT["n1"], (RAFT["n1"], RAFT["n2"]))
    assert META_GET.reply(reply.to_wire()) == reply
    plain = MetaReply(3, ("n1",))
    wire = plain.to_wire()
    del wire["leader"], wire["members"]  # an older node's reply
    assert META_GET.reply(wire) == plain


def test_six_voters_fit_on_the_wire_while_one_is_replaced() -> None:
    six = tuple(f"n{i}" for i in range(6))
    assert META_GET.reply(MetaReply(1, six).to_wire()).voters == six


def test_meta_join_round_trips_and_refuses_bad_peers() -> None:
    req = MetaJoin((RAFT["n1"], RAFT["n2"]))
    assert META_JOIN.request(req.to_wire()) == req
    for bad in ({"peers": []}, {"peers": "a:1"}, {"peers": ["a"]}, {}):
        with pytest.raises(ValueError, match="peers"):
            META_JOIN.request(bad)
    assert META_JOIN.reply(MetaJoinReply("joining").to_wire()) == MetaJoinReply("joining")
    with pytest.raises(ValueError, match="role"):
        META_JOIN.reply({"role": "boss"})


def test_voter_ids_map_raft_addresses_through_the_metadata() -> None:
    md = Metadata(epoch=1, members=MEMBERS)
    assert voter_ids(md, (RAFT["n3"], "10.9.9.9:1", RAFT["n1"])) == ("n1", "n3")


def test_only_the_leader_saying_so_removes_a_voter() -> None:
    group = (RAFT["n2"], RAFT["n3"], RAFT["n4"])
    led = MetaReply(5, ("n2", "n3", "n4"), None, RAFT["n2"], group)
    assert leader_excludes(led, RAFT["n2"], RAFT["n1"])
    assert not leader_excludes(led, RAFT["n2"], RAFT["n3"])  # still a member
    assert not leader_excludes(led, RAFT["n3"], RAFT["n1"])  # a follower's view
    assert not leader_excludes(led, None, RAFT["n1"])  # we do not know who answered
    reader = MetaReply(5, ("n2", "n3", "n4"))
    assert not leader_excludes(reader, RAFT["n2"], RAFT["n1"])
