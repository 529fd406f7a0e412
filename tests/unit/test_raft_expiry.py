"""Key expiry (TTL) in the linearizable state machine (docs/ttl.md, raft_groups/expiry.py).

Each scenario drives `state_machine.apply` as the Raft driver does (tests/unit/
test_raft_state_machine.py `Group`). No clock anywhere: a put's expiry is its command's
`now + ttl_ms`, and a key is absent once an `expire` command moves the group's horizon to
or past it — so the same log gives the same state on every replica.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from kv.memory import MemoryEngine
from raft_groups import expirer, expiry
from raft_groups import state_machine as sm
from raft_groups.commands import Command, decode, encode, fingerprint
from raft_groups.manager import LinearizableMachine
from tests.unit.test_raft_state_machine import UID, Group

T0 = 1_700_000_000_000  # a leader's clock, ms since the epoch


def put_ttl(group: Group, key: str, value: Any, ttl_ms: int, now: int = T0, **kw: Any) -> Any:
    return group.put(key, value, ttl_ms=ttl_ms, now=now, **kw)


def expire(group: Group, now: int) -> dict[str, Any]:
    result = group.submit(Command("expire", 0, "", now=now))
    assert result is not None and result["ok"], result
    return result


def stored_keys(group: Group) -> list[bytes]:
    start, stop = sm.group_range(group.partition)
    return [k for k, _ in group.engine.iterate(start, stop)]


def index_entries(group: Group) -> list[bytes]:
    prefix = sm.group_prefix(group.partition) + b"\0\0\0\0" + expiry.INDEX
    return [k for k, _ in group.engine.iterate_prefix(prefix)]


@pytest.fixture
def group() -> Group:
    return Group()


# --- the command ---------------------------------------------------------------------------


def test_a_ttl_put_and_an_expire_round_trip_through_the_codec() -> None:
    put = Command("put", UID, "k", "v", ttl_ms=1000, now=T0, request_id="r1")
    assert decode(encode(put)) == put
    assert put.expires_at() == T0 + 1000
    tick = Command("expire", 0, "", now=T0)
    assert decode(encode(tick)) == tick
    assert json.loads(encode(tick)[1:]) == {"op": "expire", "now": T0}


@pytest.mark.parametrize(
    "build",
    [
        lambda: Command("put", UID, "k", 1, ttl_ms=1000),  # no leader clock
        lambda: Command("put", UID, "k", 1, ttl_ms=0, now=T0),
        lambda: Command("put", UID, "k", 1, now=T0),  # a stamp without a TTL
        lambda: Command("delete", UID, "k", ttl_ms=1000, now=T0),
        lambda: Command("expire", 0, ""),  # no clock
        lambda: Command("expire", UID, "", now=T0),
        lambda: Command("expire", 0, "", now=T0, request_id="r"),
        lambda: Command("migrate", UID, "", items=(("a", 1, 0),)),
    ],
)
def test_invalid_expiry_fields_are_refused(build: Any) -> None:
    with pytest.raises(ValueError):
        build()


def test_the_fingerprint_covers_the_ttl_but_not_the_leaders_clock() -> None:
    first = Command("put", UID, "k", "v", ttl_ms=1000, now=T0, request_id="r")
    retry = Command("put", UID, "k", "v", ttl_ms=1000, now=T0 + 5000, request_id="r")
    longer = Command("put", UID, "k", "v", ttl_ms=2000, now=T0, request_id="r")
    plain = Command("put", UID, "k", "v", request_id="r")
    assert fingerprint(first) == fingerprint(retry)
    assert len({fingerprint(first), fingerprint(longer), fingerprint(plain)}) == 3


def test_a_put_without_ttl_digests_as_before_ttls_existed() -> None:
    cmd = Command("put", UID, "k", {"b": 1, "a": 2}, if_version=3, request_id="r")
    fields = {"op": "put", "uid": UID, "key": "k", "if_version": 3, "value": cmd.value}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    assert fingerprint(cmd) == hashlib.sha256(text.encode()).hexdigest()[:32]


# --- expiry through the log ----------------------------------------------------------------


def test_a_key_is_present_until_an_expire_reaches_its_expiry(group: Group) -> None:
    put_ttl(group, "k", "v", ttl_ms=1000)
    record = sm.read_record(group.engine, 0, UID, "k")
    assert record is not None and record.expires_at == T0 + 1000
    assert expiry.next_expiry(group.engine, 0) == T0 + 1000
    expire(group, T0 + 999)
    assert group.read("k") == ("v", 1)
    result = expire(group, T0 + 1000)
    assert result == {"ok": True, "horizon": T0 + 1000, "expired": 1, "more": False}
    assert group.read("k") is None
    assert index_entries(group) == [] and expiry.next_expiry(group.engine, 0) is None
    assert sm.records(group.engine, 0, UID) == []


def test_the_horizon_never_moves_back(group: Group) -> None:
    """A new leader whose clock is behind cannot make an expired key readable again."""
    put_ttl(group, "k", "v", ttl_ms=1000)
    expire(group, T0 + 5000)
    assert expire(group, T0)["horizon"] == T0 + 5000
    assert expiry.horizon(group.engine, 0) == T0 + 5000
    put_ttl(group, "late", "v", ttl_ms=1000, now=T0 + 1000)  # stamped by a slow clock
    assert group.read("late") is None  # expired on arrival: its expiry is under the horizon


def test_an_expired_key_not_yet_deleted_is_absent_in_every_respect(group: Group) -> None:
    expire(group, T0 + 5000)
    put_ttl(group, "k", "old", ttl_ms=1000)  # expires at T0 + 1000, under the horizon
    assert len(index_entries(group)) == 1  # stored until an expire deletes it
    assert sm.keys(group.engine, 0, UID, "", None, 10) == []
    assert sm.records(group.engine, 0, UID) == []
    assert group.put("k", "new", if_version=0) == {"ok": True, "version": 1}  # create-only
    assert index_entries(group) == []  # the plain put took its expiry away
    put_ttl(group, "gone", "x", ttl_ms=1000)
    assert group.delete("gone") == {"ok": True, "version": 0, "existed": False}
    assert index_entries(group) == []


def test_a_write_replaces_the_expiry(group: Group) -> None:
    put_ttl(group, "k", "a", ttl_ms=1000)
    put_ttl(group, "k", "b", ttl_ms=9000)
    assert len(index_entries(group)) == 1
    expire(group, T0 + 1000)
    assert group.read("k") == ("b", 2)
    group.put("k", "c")  # no TTL: it never expires now
    assert index_entries(group) == []
    expire(group, T0 + 10_000_000)
    assert group.read("k") == ("c", 3)


def test_an_expire_deletes_a_bounded_batch_and_reports_more(
    group: Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(expiry, "EXPIRE_BATCH", 2)
    for i in range(5):
        put_ttl(group, f"k{i}", i, ttl_ms=100 + i)
    put_ttl(group, "later", "x", ttl_ms=10_000)
    first = expire(group, T0 + 1000)
    assert (first["expired"], first["more"]) == (2, True)
    assert all(group.read(f"k{i}") is None for i in range(5))  # absent before deleted
    assert (expire(group, T0 + 1000)["more"], expire(group, T0 + 1000)["more"]) == (True, False)
    assert [key for key, *_ in sm.records(group.engine, 0, UID)] == ["later"]
    assert len(index_entries(group)) == 1


def test_expiry_is_per_group_and_the_same_log_gives_the_same_state() -> None:
    a, b = Group(), Group()
    for g in (a, b):
        put_ttl(g, "k", "v", ttl_ms=10)
        g.put("keep", 1)
        expire(g, T0 + 10)
    assert dict(a.engine.iterate()) == dict(b.engine.iterate())
    other = Group(partition=1)
    put_ttl(other, "k", "v", ttl_ms=10)
    expire(Group(other.engine, partition=0), T0 + 10)  # another group's horizon
    assert other.read("k") == ("v", 1)


def test_migrated_items_keep_their_expiry(group: Group) -> None:
    items = (("a", 1, T0 + 100), ("b", 2))
    group.submit(Command("migrate", UID, "", items=items, mark=True))
    assert sm.read_record(group.engine, 0, UID, "a") == sm.Record(1, 1, T0 + 100)
    expire(group, T0 + 100)
    assert [key for key, *_ in sm.records(group.engine, 0, UID)] == ["b"]
    assert decode(encode(Command("migrate", UID, "", items=items))).items == items


def test_a_keyspace_purge_takes_the_index_entries_with_it(group: Group) -> None:
    put_ttl(group, "k", "v", ttl_ms=1000)
    group.submit(Command("freeze", UID, ""))
    assert group.submit(Command("purge", UID, ""))["done"]  # type: ignore[index]
    assert index_entries(group) == []


def test_a_snapshot_carries_expiries_and_the_horizon(group: Group) -> None:
    put_ttl(group, "k", "v", ttl_ms=1000)
    expire(group, T0 + 10)
    copy = MemoryEngine()
    LinearizableMachine(copy, 0).restore(LinearizableMachine(group.engine, 0).snapshot())
    assert sm.read_record(copy, 0, UID, "k") == sm.Record("v", 1, T0 + 1000)
    assert expiry.horizon(copy, 0) == T0 + 10
    assert stored_keys(Group(copy)) == stored_keys(group)


# --- the leader's expirer decides only when to propose ------------------------------------


def test_the_expirer_proposes_for_groups_with_a_key_due() -> None:
    hosted: list[Any] = ["g0", "g1", "g2"]
    leading = [(hosted[0], None), (hosted[1], T0), (hosted[2], T0 + 1)]
    assert expirer.due(leading, T0) == ["g1"]
