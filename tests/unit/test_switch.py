"""A consistency switch's record and meta changes (kv/switch.py, kv/meta_machine.py;
docs/mode_switch.md): refusals leave the metadata unchanged, partitions finish one by one,
cancel turns the switch around, and no membership plan commits while a keyspace switches."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from kv import switch
from kv.keyspace import KeyspaceConfig
from kv.meta import Metadata
from kv.meta_machine import apply
from tests.unit.test_meta_membership import ADD4, commit, metadata

Q = 16  # partitions of test_meta_membership.metadata()
LIN = KeyspaceConfig("ev", "linearizable", 3)


def start(md: Metadata, target: KeyspaceConfig = LIN, policy: str = "lww") -> Any:
    return apply(md, {"type": "start_switch", "target": target.to_dict(), "policy": policy})


def report(md: Metadata, partition: int, uid: int | None = None, back: bool = False) -> Any:
    ks = md.keyspace("ev")
    assert ks is not None
    change = {"keyspace": "ev", "uid": uid or ks.uid, "partition": partition, "cancelling": back}
    return apply(md, {"type": "switch_partition_done", **change})


def finish(md: Metadata) -> Any:
    ks = md.keyspace("ev")
    assert ks is not None
    return apply(md, {"type": "finish_switch", "keyspace": "ev", "uid": ks.uid})


def test_a_started_switch_keeps_the_uid_and_the_source_mode_until_it_finishes() -> None:
    md = metadata()
    switching, outcome = start(md)
    assert outcome == {"status": "switching"}
    ks, record = switching.keyspace("ev"), switching.switch("ev")
    assert ks is not None and record is not None
    assert ks == md.keyspace("ev")  # still eventual while partitions move
    assert record.target == replace(LIN, uid=ks.uid) and record.since == switching.epoch
    assert record.progress(Q)["state"] == "switching"
    for p in range(Q - 1):
        switching, outcome = report(switching, p)
        assert outcome["status"] == "done"
    unchanged, outcome = finish(switching)
    assert outcome == {"status": "unchanged"} and unchanged is switching  # one to go
    switching, _ = report(switching, Q - 1)
    done, outcome = finish(switching)
    assert outcome == {"status": "switched"}
    assert done.keyspace("ev") == replace(LIN, uid=ks.uid) and done.switches == ()


@pytest.mark.parametrize(
    ("target", "policy", "code"),
    [
        (KeyspaceConfig("ev", "eventual", 2), "lww", "invalid_request"),  # the same mode
        (LIN, "newest", "invalid_request"),  # an unknown policy
        (KeyspaceConfig("ev", "linearizable", 5), "lww", "invalid_request"),  # 3 members
        (KeyspaceConfig("nope", "linearizable", 3), "lww", "keyspace_not_found"),
    ],
)
def test_a_switch_that_cannot_start_changes_nothing(
    target: KeyspaceConfig, policy: str, code: str
) -> None:
    md = metadata()
    after, outcome = start(md, target, policy)
    assert outcome["status"] == "refused" and outcome["code"] == code, outcome
    assert after is md


def test_one_switch_per_keyspace() -> None:
    switching, _ = start(metadata())
    after, outcome = start(switching)
    assert outcome["code"] == "keyspace_conflict" and after is switching


def test_no_switch_during_a_plan_and_no_plan_during_a_switch() -> None:
    moving, outcome = commit(metadata(), ADD4)
    assert outcome["status"] == "committed"
    after, outcome = start(moving)
    assert (outcome["code"], outcome["reason"]) == ("plan_conflict", "plan_in_flight")
    assert after is moving
    switching, _ = start(metadata())
    after, outcome = commit(switching, ADD4)
    assert (outcome["code"], outcome["reason"]) == ("plan_conflict", "switch_in_flight")
    assert after is switching


def test_reports_are_idempotent_and_stale_ones_ignored() -> None:
    switching, _ = start(metadata())
    once, _ = report(switching, 3)
    twice, outcome = report(once, 3)
    assert outcome == {"status": "unchanged"} and twice is once
    for stale in ({"partition": Q}, {"partition": 1, "uid": 999}):
        after, outcome = report(once, stale["partition"], stale.get("uid"))
        assert outcome == {"status": "unchanged"} and after is once


def test_cancel_moves_every_partition_back_and_ends_in_the_source_mode() -> None:
    """Every partition goes back through its frozen Raft group (a node on older metadata
    may still migrate one not yet migrated: kv/switch.py `cancel`), then the source mode."""
    md = metadata()
    switching, _ = start(md)
    for p in (0, 5):
        switching, _ = report(switching, p)
    ks = md.keyspace("ev")
    assert ks is not None
    cancel = {"type": "cancel_switch", "keyspace": "ev", "uid": ks.uid}
    back, outcome = apply(switching, cancel)
    record = back.switch("ev")
    assert outcome == {"status": "cancelling"} and record is not None and record.cancelling
    assert record.done == frozenset()
    assert switch.serves_target(record, 3) and not switch.serves_target(
        replace(record, done=frozenset({3})), 3
    )
    again, outcome = apply(back, cancel)
    assert outcome["code"] == "keyspace_conflict" and again is back
    # the forward migration's report arriving after the cancel says nothing of the way back
    late, outcome = report(back, 3)
    assert outcome == {"status": "unchanged"} and late is back
    for p in range(Q - 1):
        back, _ = report(back, p, back=True)
    unchanged, outcome = finish(back)
    assert outcome == {"status": "unchanged"} and unchanged is back
    back, _ = report(back, Q - 1, back=True)
    over, outcome = finish(back)
    assert outcome == {"status": "cancelled"} and over.keyspace("ev") == ks
    assert over.switches == ()


def test_a_cancelled_switch_to_eventual_copies_on_then_switches_back() -> None:
    md, _ = start(metadata(), LIN)
    md, _ = finish_all(md)
    ks = md.keyspace("ev")
    assert ks is not None and ks.consistency == "linearizable"
    to_eventual, _ = start(md, KeyspaceConfig("ev", "eventual", 3), "refuse")
    record = to_eventual.switch("ev")
    assert record is not None
    half, _ = report(to_eventual, 0)
    cancel = {"type": "cancel_switch", "keyspace": "ev", "uid": ks.uid}
    bad, outcome = apply(half, {**cancel, "policy": "refuse"})
    assert outcome["code"] == "invalid_request" and bad is half
    turned, outcome = apply(half, cancel)
    back_record = turned.switch("ev")
    assert outcome == {"status": "cancelling"} and back_record is not None
    assert back_record.cancelling and back_record.policy == "lww"
    assert back_record.done == frozenset({0})  # the copy goes on
    assert switch.serves_target(back_record, 0) and not switch.unwinds(back_record)
    for p in range(1, Q):
        turned, _ = report(turned, p)
    over, outcome = finish(turned)
    assert outcome == {"status": "switching back"}
    eventual = over.keyspace("ev")
    assert eventual is not None and eventual.consistency == "eventual"
    again = over.switch("ev")
    assert again is not None and not again.cancelling and again.policy == "lww"
    assert again.uid == eventual.uid == record.target.uid  # the switch back keeps its uid
    assert again.target.consistency == "linearizable" and again.target.replication == 3
    assert again.since == over.epoch


def test_a_policy_is_refused_when_cancelling_a_switch_to_linearizable() -> None:
    switching, _ = start(metadata())
    ks = metadata().keyspace("ev")
    assert ks is not None
    cancel = {"type": "cancel_switch", "keyspace": "ev", "uid": ks.uid, "policy": "lww"}
    after, outcome = apply(switching, cancel)
    assert outcome["code"] == "invalid_request" and after is switching


def test_cancel_without_a_switch_is_refused() -> None:
    md = metadata()
    ks = md.keyspace("ev")
    assert ks is not None
    after, outcome = apply(md, {"type": "cancel_switch", "keyspace": "ev", "uid": ks.uid})
    assert outcome["code"] == "keyspace_conflict" and after is md


def finish_all(md: Metadata) -> Any:
    for p in range(Q):
        md, _ = report(md, p)
    return finish(md)


def test_deleting_a_switching_keyspace_ends_its_switch() -> None:
    switching, _ = start(metadata())
    gone, outcome = apply(switching, {"type": "delete_keyspace", "name": "ev"})
    assert outcome["status"] == "deleted" and gone.switches == ()


def test_the_record_survives_a_metadata_round_trip() -> None:
    switching, _ = start(metadata())
    switching, _ = report(switching, 2)
    assert Metadata.from_dict(switching.to_dict()).switches == switching.switches


def test_progress_counts_the_keys_of_the_partitions_done() -> None:
    switching, _ = start(metadata())
    ks = metadata().keyspace("ev")
    assert ks is not None
    change = {"type": "switch_partition_done", "keyspace": "ev", "uid": ks.uid}
    one, _ = apply(switching, {**change, "partition": 1, "keys": 40})
    twice, outcome = apply(one, {**change, "partition": 1, "keys": 40})  # a duplicate
    assert outcome == {"status": "unchanged"} and twice is one
    two, _ = apply(one, {**change, "partition": 2, "keys": 2})
    record = two.switch("ev")
    assert record is not None
    shown = record.progress(Q)
    assert (shown["partitions_done"], shown["keys"]) == (2, 42)
    assert switch.Switch.from_dict(record.to_dict()) == record


def test_kvctl_shows_partitions_keys_rate_and_eta() -> None:
    from kvctl.cli_keyspace import _progress

    shown = {"state": "switching", "to": "linearizable", "partitions_done": 4}
    line = _progress({**shown, "partitions": 16, "keys": 400}, 2.0)
    assert line == "4/16 partitions done, 400 keys (2.0 partitions/s, 200 keys/s, about 6s left)"
