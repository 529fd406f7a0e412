"""Quorum accounting for GET (Dynamo §4.5, read repair §5; Riak riak_kv_get_core); PUTs are
counted by hints.SloppyWrite (tests/unit/test_hints.py)."""

from __future__ import annotations

import pytest

from dynamo_mode.quorum import ReadQuorum, more_reads
from dynamo_mode.siblings import join_context, make_version

NODES = ("a", "b", "c")
OLD = make_version(("a", 1), {}, "old")
NEW = make_version(("b", 1), join_context([OLD]), "new")
OTHER = make_version(("c", 1), {}, "concurrent")


def test_read_is_ok_after_r_replies_and_reconciles_them() -> None:
    q = ReadQuorum(NODES, 2)
    q.add_reply("a", [OLD])
    assert q.status() == "pending"
    q.add_reply("b", [NEW])
    assert q.status() == "ok"
    assert q.result() == (NEW,)


def test_read_repair_sends_the_result_to_stale_and_empty_replicas() -> None:
    # Dynamo §4.5: replicas that answered with dominated or missing versions are repaired.
    q = ReadQuorum(NODES, 2)
    q.add_reply("a", [OLD])
    q.add_reply("b", [NEW, OTHER])
    q.add_reply("c", [])
    assert q.result() == (NEW, OTHER)
    assert q.repairs() == {"a": (NEW, OTHER), "c": (NEW, OTHER)}


def test_no_repair_when_replicas_agree() -> None:
    q = ReadQuorum(NODES, 2)
    q.add_reply("a", [NEW])
    q.add_reply("b", [NEW])
    assert q.repairs() == {}


def test_repair_is_due_only_while_an_asked_replica_is_out_or_a_replier_differs() -> None:
    q = ReadQuorum(NODES, 2)
    q.add_reply("a", [NEW])
    q.add_reply("b", [NEW])
    assert not q.repair_due(["a", "b"])  # "c" was not asked: nothing to wait for
    assert q.repair_due(["a", "b", "c"])  # "c" was asked and may answer with less
    q.add_error("c", "timeout")
    assert not q.repair_due(["a", "b", "c"])  # an error repairs nothing
    q = ReadQuorum(NODES, 2)
    q.add_reply("a", [OLD])
    q.add_reply("b", [NEW])
    assert q.repair_due(["a", "b"])  # "a" needs NEW


def test_read_fails_once_r_is_unreachable() -> None:
    q = ReadQuorum(NODES, 2)
    q.add_error("a", "timeout")
    assert q.status() == "pending"
    q.add_error("b", "refused")
    assert q.status() == "failed"
    assert q.errors == {"a": "timeout", "b": "refused"}
    assert q.waiting == frozenset({"c"})


def test_each_replica_answers_once_and_strays_are_ignored() -> None:
    q = ReadQuorum(NODES, 2)
    q.add_reply("a", [OLD])
    q.add_reply("a", [NEW])
    q.add_error("a", "late error")
    q.add_reply("zz", [NEW])
    assert q.status() == "pending"
    assert q.replied == {"a": (OLD,)}
    assert q.errors == {}
    assert q.strays == 1


@pytest.mark.parametrize("n", [0, 4])
def test_quorum_sizes_are_validated(n: int) -> None:
    with pytest.raises(ValueError, match=f"r={n}"):
        ReadQuorum(NODES, n)


def test_replicas_must_be_distinct() -> None:
    with pytest.raises(ValueError, match="distinct"):
        ReadQuorum(("a", "a"), 1)


@pytest.mark.parametrize(
    ("replies", "outstanding", "spares", "slow", "missed", "ask"),
    [
        (0, 2, 1, False, False, 0),  # R=2 asked, waiting: nobody else yet
        (1, 0, 1, False, False, 1),  # one errored: the spare can still complete R
        (0, 0, 3, False, False, 2),  # both asked errored: as many as R still needs
        (1, 1, 1, True, False, 1),  # past the hedge delay: every spare
        (2, 0, 1, False, True, 1),  # decided, but every reply empty: confirm with the rest
        (2, 0, 1, False, False, 0),  # decided with data: no more
        (0, 0, 0, True, True, 0),  # nobody left to ask
    ],
)
def test_more_reads_asks_spares_only_on_error_slowness_or_a_miss(
    replies: int, outstanding: int, spares: int, slow: bool, missed: bool, ask: int
) -> None:
    assert more_reads(2, replies, outstanding, spares, slow, missed) == ask
