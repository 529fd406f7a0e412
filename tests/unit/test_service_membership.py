"""`GET /v1/membership` (kv/service.py `membership_status`): each pending move names the
owners serving it now, the owners it moves to, and the incoming owners that reported it —
what `kvctl status` shows as from → to."""

from __future__ import annotations

from typing import Any

from kv.meta import Metadata
from kv.meta_machine import apply
from kv.plan import Change
from kv.service import Service
from tests.unit.test_meta_membership import ADD4, commit, member, metadata


class FixedMeta:
    def __init__(self, md: Metadata) -> None:
        self.metadata = md

    async def change(self, change: dict[str, Any], timeout: float) -> dict[str, Any]:
        raise AssertionError("no change in these tests")

    async def sync(self, timeout: float) -> None:
        raise AssertionError("no barrier in these tests")


def status(md: Metadata) -> dict[str, Any]:
    return Service(FixedMeta(md), {}, dict).membership_status()


def test_idle_lists_the_members() -> None:
    assert status(metadata()) == {"status": "idle", "epoch": 2, "members": ["n1", "n2", "n3"]}


def test_each_pending_move_names_its_owners_now_and_after() -> None:
    md, _ = commit(metadata(), ADD4)
    shown = status(md)
    assert shown["status"] == "moving" and shown["moves_pending"] == len(shown["pending"]) > 0
    for move in shown["pending"]:
        serving, incoming = md.owners(move["mode"], move["replication"], move["partition"])
        assert move["from"] == list(serving) and len(move["to"]) == 2
        assert [n for n in move["to"] if n not in move["from"]] == list(incoming) == ["n4"]
        assert move["ready"] == []


def test_an_incoming_owner_that_reported_is_ready() -> None:
    md, _ = commit(metadata(), [*ADD4, Change("add", "n5", member(5))])
    assert md.transition is not None
    both = next(m for m in status(md)["pending"] if len(set(m["to"]) - set(m["from"])) == 2)
    key = {k: both[k] for k in ("mode", "replication", "partition")}
    report = {"type": "move_done", "plan_id": md.transition.plan_id, **key, "node": "n4"}
    md, outcome = apply(md, report)
    assert outcome["status"] == "ready"
    again = next(m for m in status(md)["pending"] if m["partition"] == both["partition"])
    assert again["ready"] == ["n4"] and again["from"] == both["from"]
