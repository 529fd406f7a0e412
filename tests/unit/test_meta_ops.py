"""Metadata for non-voters, the pure part (kv/meta_ops.py): the `meta_get` / `meta_change`
messages round-trip and refuse malformed payloads naming the field, and the reader's
decisions — whom to poll, when to poll again, which metadata to take, whether this node is
a member — are plain functions (DESIGN.md §2: the meta group keeps at most 5 voters; other
members read the metadata without voting)."""

from __future__ import annotations

from typing import Any

import pytest

from kv.meta import Member, Metadata
from kv.meta_machine import apply
from kv.meta_ops import (
    META_CHANGE,
    META_GET,
    MetaChange,
    MetaChangeReply,
    MetaGet,
    MetaReply,
    membership_of,
    metadata_from_wire,
    newer,
    next_delay,
    poll_targets,
    voter_addresses,
)

MEMBERS = [Member(f"n{i}", f"10.0.0.{i}:7001", f"10.0.0.{i}:7101") for i in (1, 2, 3)]


def metadata(*changes: dict[str, Any]) -> Metadata:
    md, _ = apply(
        Metadata(),
        {
            "type": "bootstrap",
            "members": [m.to_dict() for m in MEMBERS],
            "partitions": 8,
            "vnodes": 4,
            "claim": "chains",
        },
    )
    for change in changes:
        md, _ = apply(md, change)
    return md


KS = {
    "type": "put_keyspace",
    "keyspace": {"name": "a", "consistency": "linearizable", "replication": 3},
}


# ---------------------------------------------------------------------- messages
def test_meta_get_round_trips_and_checks_the_epoch() -> None:
    assert META_GET.request(MetaGet(7).to_wire()) == MetaGet(7)
    for bad in ({}, {"known_epoch": -1}, {"known_epoch": "3"}, {"known_epoch": True}, []):
        with pytest.raises(ValueError):
            META_GET.request(bad)


def test_meta_reply_round_trips_with_and_without_metadata() -> None:
    md = metadata(KS)
    full = MetaReply(md.epoch, ("n1", "n2", "n3"), md)
    decoded = META_GET.reply(full.to_wire())
    assert decoded == full and decoded.metadata is not None
    assert decoded.metadata.keyspace("a") == md.keyspace("a")
    assert decoded.metadata.chains == md.chains
    empty = MetaReply(md.epoch, ("n1",))
    assert META_GET.reply(empty.to_wire()) == empty


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"voters": "n1"}, "voters"),
        ({"voters": ["n 1"]}, "voters"),
        ({"voters": [f"n{i}" for i in range(12)]}, "voters"),
        ({"leader": "nohost"}, "leader"),
        ({"members": ["a:1", 7]}, "members"),
        ({"epoch": -1}, "epoch"),
        ({"metadata": {"epoch": 3}}, "metadata"),
        ({"metadata": {**metadata().to_dict(), "epoch": 0}}, "metadata"),
        ({"metadata": "x"}, "metadata"),
    ],
)
def test_a_malformed_meta_reply_names_the_field(change: dict[str, Any], needle: str) -> None:
    good = MetaReply(1, ("n1",), metadata()).to_wire()
    with pytest.raises(ValueError, match=needle):
        META_GET.reply({**good, **change})


def test_meta_change_round_trips_and_bounds_the_timeout() -> None:
    req = MetaChange(KS, 2.5)
    assert META_CHANGE.request(req.to_wire()) == req
    assert META_CHANGE.request({"change": KS, "timeout_s": 1e9}).timeout_s == 60.0
    assert META_CHANGE.request({"change": KS, "timeout_s": 0}).timeout_s == 0.001
    for bad in ({"change": "x", "timeout_s": 1}, {"change": KS}, {"timeout_s": 1}):
        with pytest.raises(ValueError):
            META_CHANGE.request(bad)


def test_meta_change_reply_carries_the_voters_metadata() -> None:
    reply = MetaChangeReply({"status": "created"}, metadata(KS))
    assert META_CHANGE.reply(reply.to_wire()) == reply
    with pytest.raises(ValueError, match="outcome"):
        META_CHANGE.reply({**reply.to_wire(), "outcome": None})


def test_metadata_from_wire_refuses_an_unbootstrapped_value() -> None:
    with pytest.raises(ValueError, match="epoch"):
        metadata_from_wire(Metadata().to_dict())


# ---------------------------------------------------------------------- decisions
def test_membership_of_a_founder_a_joiner_and_an_impostor() -> None:
    md = metadata()
    assert membership_of(md, MEMBERS[0]) == "member"
    assert membership_of(md, Member("n4", "10.0.0.4:7001", "10.0.0.4:7101")) == "joining"
    impostor = Member("n2", "10.0.0.9:7001", MEMBERS[1].raft)
    assert membership_of(md, impostor) == "id_conflict"
    assert membership_of(Metadata(), MEMBERS[0]) == "joining"  # nothing read yet


def test_only_a_higher_epoch_is_newer() -> None:
    one, two = metadata(), metadata(KS)
    assert newer(one, two) and not newer(two, one) and not newer(two, two)
    assert not newer(one, None) and newer(Metadata(), one)


def test_a_joiner_with_nothing_read_polls_its_seeds() -> None:
    seeds = ("10.0.0.1:7001", "10.0.0.2:7001")
    assert poll_targets(Metadata(), (), seeds, "10.0.0.4:7001", 0) == list(seeds)
    assert poll_targets(Metadata(), (), seeds, "10.0.0.4:7001", 1) == list(reversed(seeds))
    assert poll_targets(Metadata(), (), (), "10.0.0.4:7001", 0) == []


def test_poll_targets_voters_first_then_members_then_seeds_never_itself() -> None:
    md = metadata()
    seeds = ("10.0.0.9:7001", "10.0.0.2:7001")
    targets = poll_targets(md, ("n3",), seeds, "10.0.0.1:7001", 0)
    assert targets == ["10.0.0.3:7001", "10.0.0.2:7001", "10.0.0.9:7001"]
    rotated = poll_targets(md, ("n3",), seeds, "10.0.0.1:7001", 4)
    assert rotated == ["10.0.0.2:7001", "10.0.0.9:7001", "10.0.0.3:7001"]


def test_voter_addresses_are_those_the_metadata_lists() -> None:
    assert voter_addresses(metadata(), ("n2", "n7", "n1")) == ["10.0.0.2:7001", "10.0.0.1:7001"]
    assert voter_addresses(Metadata(), ("n1",)) == []


def test_polls_back_off_while_nobody_answers_and_reset_on_an_answer() -> None:
    delays, delay = [], 0.5
    for _ in range(6):
        delay = next_delay(delay, False, 0.5, 5.0)
        delays.append(delay)
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert next_delay(5.0, True, 0.5, 5.0) == 0.5
