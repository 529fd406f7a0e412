"""The cluster metadata state machine (DESIGN.md §2: every change is a committed command with
a new epoch; kv/meta.py invariant: epoch +1 exactly when the metadata changes, and `apply`
refuses bad changes instead of raising, because it runs on every meta-group member)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kv.keyspace import KeyspaceConfig
from kv.meta import Member, Metadata
from kv.meta_machine import apply
from kv.ring import Ring

MEMBERS = [
    {"id": "n1", "http": "10.0.0.1:7001", "raft": "10.0.0.1:7101"},
    {"id": "n2", "http": "10.0.0.2:7001", "raft": "10.0.0.2:7101"},
    {"id": "n3", "http": "10.0.0.3:7001", "raft": "10.0.0.3:7101"},
]


def bootstrap(members: list[dict[str, str]] = MEMBERS, q: int = 16, v: int = 8) -> dict[str, Any]:
    return {"type": "bootstrap", "members": members, "partitions": q, "vnodes": v}


def put(name: str, consistency: str = "eventual", n: int = 3, **extra: Any) -> dict[str, Any]:
    ks = {"name": name, "consistency": consistency, "replication": n, **extra}
    if consistency == "eventual":
        ks = {"read_quorum": 2, "write_quorum": 2, **ks}
    return {"type": "put_keyspace", "keyspace": ks}


def delete(name: str) -> dict[str, Any]:
    return {"type": "delete_keyspace", "name": name}


def run(*changes: dict[str, Any], md: Metadata | None = None) -> tuple[Metadata, list[str]]:
    md = md if md is not None else Metadata()
    statuses = []
    for change in changes:
        md, outcome = apply(md, change)
        statuses.append(outcome["status"])
    return md, statuses


def keyspace(md: Metadata, name: str) -> KeyspaceConfig:
    ks = md.keyspace(name)
    assert ks is not None, f"keyspace {name!r} missing"
    return ks


@pytest.fixture
def booted() -> Metadata:
    return run(bootstrap())[0]


# -- bootstrap -----------------------------------------------------------------------------


def test_fresh_metadata_is_not_bootstrapped() -> None:
    assert Metadata().epoch == 0 and not Metadata().bootstrapped


def test_bootstrap_sets_epoch_one_members_and_ring_shape(booted: Metadata) -> None:
    assert booted.bootstrapped and booted.epoch == 1
    assert booted.members == tuple(Member.from_dict(m) for m in MEMBERS)
    assert (booted.partitions, booted.vnodes, booted.keyspaces) == (16, 8, ())
    assert booted.member("n2") == Member("n2", "10.0.0.2:7001", "10.0.0.2:7101")
    assert booted.member("n9") is None


def test_first_bootstrap_wins_second_is_unchanged(booted: Metadata) -> None:
    # Every founding node proposes a bootstrap; the first committed one wins.
    other = bootstrap(members=MEMBERS[:1], q=64, v=64)
    md, outcome = apply(booted, other)
    assert outcome == {"status": "unchanged"}
    assert md is booted


def test_bootstrap_after_keyspaces_does_not_reset_them(booted: Metadata) -> None:
    md, _ = run(put("ks"), bootstrap(), md=booted)
    assert md.epoch == 2 and md.keyspace("ks") is not None


# -- put_keyspace --------------------------------------------------------------------------


def test_put_creates_with_uid_equal_to_the_new_epoch(booted: Metadata) -> None:
    md, outcome = apply(booted, put("ks"))
    assert outcome == {"status": "created"}
    assert md.epoch == 2
    ks = keyspace(md, "ks")
    assert ks.uid == md.epoch == 2
    assert ks == KeyspaceConfig("ks", "eventual", 3, 2, 2, uid=2)


def test_put_ignores_a_uid_in_the_change(booted: Metadata) -> None:
    md, _ = apply(booted, put("ks", uid=77))
    assert keyspace(md, "ks").uid == 2


def test_put_same_settings_is_unchanged_and_keeps_epoch(booted: Metadata) -> None:
    md, _ = apply(booted, put("ks"))
    again, outcome = apply(md, put("ks"))
    assert outcome == {"status": "unchanged"}
    assert again is md and again.epoch == 2


def test_put_linearizable_twice_is_unchanged(booted: Metadata) -> None:
    md, statuses = run(put("lin", "linearizable"), put("lin", "linearizable"), md=booted)
    assert statuses == ["created", "unchanged"] and md.epoch == 2


def test_put_new_quorums_updates_and_preserves_uid(booted: Metadata) -> None:
    md, _ = run(put("a"), put("ks"), put("b"), md=booted)
    uid = keyspace(md, "ks").uid
    updated, outcome = apply(md, put("ks", read_quorum=1, write_quorum=3, max_siblings=5))
    assert outcome == {"status": "updated"}
    assert updated.epoch == md.epoch + 1
    assert updated.keyspace("ks") == KeyspaceConfig("ks", "eventual", 3, 1, 3, 5, uid=uid)
    # the keyspace keeps its place; the others are untouched
    assert [k.name for k in updated.keyspaces] == ["a", "ks", "b"]
    assert updated.keyspace("a") == md.keyspace("a")


@pytest.mark.parametrize(
    ("change", "field"),
    [(put("ks", "linearizable"), "consistency"), (put("ks", n=5), "replication")],
)
def test_put_refuses_changing_fixed_fields(
    booted: Metadata, change: dict[str, Any], field: str
) -> None:
    md, _ = apply(booted, put("ks"))
    after, outcome = apply(md, change)
    assert outcome["status"] == "refused"
    assert outcome["code"] == "keyspace_conflict"
    assert field in outcome["message"] and "'ks'" in outcome["message"]
    assert after is md


# -- delete_keyspace -----------------------------------------------------------------------


def test_delete_removes_and_bumps_epoch(booted: Metadata) -> None:
    md, statuses = run(put("a"), put("b"), delete("a"), md=booted)
    assert statuses == ["created", "created", "deleted"]
    assert md.epoch == 4
    assert [k.name for k in md.keyspaces] == ["b"]
    assert md.keyspace("a") is None


def test_delete_missing_is_refused_and_unchanged(booted: Metadata) -> None:
    md, outcome = apply(booted, delete("nope"))
    assert outcome["status"] == "refused" and outcome["code"] == "keyspace_not_found"
    assert "'nope'" in outcome["message"]
    assert md is booted


def test_recreated_keyspace_gets_a_new_uid(booted: Metadata) -> None:
    # kv/keyspace.py: the uid is the storage prefix, so a new incarnation never sees old data.
    md, _ = apply(booted, put("ks"))
    old_uid = keyspace(md, "ks").uid
    md, statuses = run(delete("ks"), put("ks", "linearizable", n=1), md=md)
    assert statuses == ["deleted", "created"]
    new = keyspace(md, "ks")
    assert new.uid == md.epoch and new.uid > old_uid
    assert new.consistency == "linearizable"  # a fresh incarnation may change fixed fields


# -- refusals never raise ----------------------------------------------------------------


@pytest.mark.parametrize("change", [{}, {"type": "nope"}, {"type": None}, {"type": 3}])
def test_unknown_change_type_is_refused_without_raising(
    booted: Metadata, change: dict[str, Any]
) -> None:
    md, outcome = apply(booted, change)
    assert outcome["status"] == "refused" and outcome["code"] == "invalid_request"
    assert repr(change.get("type")) in outcome["message"]
    assert md is booted


@pytest.mark.parametrize(
    ("booted_first", "change"),
    [
        (True, {"type": "put_keyspace"}),
        (True, {"type": "put_keyspace", "keyspace": {"name": "ks"}}),
        (True, {"type": "delete_keyspace"}),
        (False, {"type": "bootstrap"}),
        (False, {"type": "bootstrap", "members": [{"id": "n1"}], "partitions": 8, "vnodes": 8}),
    ],
)
def test_malformed_known_change_is_refused_without_raising(
    booted_first: bool, change: dict[str, Any]
) -> None:
    md = run(bootstrap())[0] if booted_first else Metadata()
    after, outcome = apply(md, change)
    assert outcome["status"] == "refused" and after is md


def test_keyspace_change_before_bootstrap_is_refused() -> None:
    md, statuses = run(put("ks"), bootstrap())
    assert statuses[0] == "refused"
    assert md.members


# -- serialisation and the ring ------------------------------------------------------------


def test_to_dict_from_dict_round_trip_through_json(booted: Metadata) -> None:
    md, _ = run(put("ev"), put("lin", "linearizable", n=1), md=booted)
    back = Metadata.from_dict(json.loads(json.dumps(md.to_dict())))
    assert back == md
    assert back.to_dict() == md.to_dict()


def test_ring_is_cached_and_equals_a_fresh_ring(booted: Metadata) -> None:
    ring = booted.ring()
    assert ring is booted.ring()
    assert ring == Ring(("n1", "n2", "n3"), 16, 8)
    assert ring.walk(0) == Ring(("n1", "n2", "n3"), 16, 8).walk(0)


def test_metadata_equality_ignores_the_ring_cache(booted: Metadata) -> None:
    cold = Metadata.from_dict(booted.to_dict())
    booted.ring()
    assert cold == booted


def test_keyspace_changes_keep_the_ring_equal(booted: Metadata) -> None:
    before = booted.ring()
    md, _ = apply(booted, put("ks"))
    assert md.ring() == before


def test_sync_changes_nothing_before_or_after_bootstrap(booted: Metadata) -> None:
    """`sync` is the meta group's read barrier (kv/barriers.py): applied, it changes nothing."""
    for md in (Metadata(), booted):
        assert apply(md, {"type": "sync"}) == (md, {"status": "unchanged"})
