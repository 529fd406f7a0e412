"""Scenarios for the linearizable partition state machine (DESIGN.md §3, Raft §8).

Each test drives `state_machine.apply` the way the Raft driver does: apply the entry at the
next log index, write the returned batch, hand back the result.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kv.memory import MemoryEngine
from kv.storage import WriteBatch
from raft_groups import state_machine as sm
from raft_groups.commands import BARRIER, MAX_UID, Command, decode, encode

UID = 7


class Group:
    """One partition's state machine over a MemoryEngine, fed consecutive log indexes."""

    def __init__(self, engine: MemoryEngine | None = None, partition: int = 0) -> None:
        self.engine = engine if engine is not None else MemoryEngine()
        self.partition = partition
        self.index = 0

    def submit(self, cmd: Command | bytes, *, skip: int = 0) -> dict[str, Any] | None:
        self.index += 1 + skip
        return self.apply_at(self.index, cmd if isinstance(cmd, bytes) else encode(cmd))

    def apply_at(self, index: int, raw: bytes) -> dict[str, Any] | None:
        batch, result = sm.apply(self.engine, self.partition, index, raw)
        self.engine.write(batch)
        return result

    def put(self, key: str, value: Any, uid: int = UID, skip: int = 0, **kw: Any) -> Any:
        return self.submit(Command("put", uid, key, value, **kw), skip=skip)

    def delete(self, key: str, uid: int = UID, **kw: Any) -> Any:
        return self.submit(Command("delete", uid, key, **kw))

    def read(self, key: str, uid: int = UID) -> tuple[Any, int] | None:
        return sm.read(self.engine, self.partition, uid, key)

    def applied(self) -> int:
        return sm.applied_index(self.engine, self.partition)


@pytest.fixture
def group() -> Group:
    return Group()


# --- versions (DESIGN.md §3: 1 on creation, +1 per write, absent = 0) ---------------------


def test_create_starts_at_version_1(group: Group) -> None:
    assert group.read("a") is None
    assert group.put("a", {"x": 1}) == {"ok": True, "version": 1}
    assert group.read("a") == ({"x": 1}, 1)


def test_update_increments_version(group: Group) -> None:
    group.put("a", 1)
    assert group.put("a", 2) == {"ok": True, "version": 2}
    assert group.read("a") == (2, 2)


def test_null_is_a_value(group: Group) -> None:
    assert group.put("a", None) == {"ok": True, "version": 1}
    assert group.read("a") == (None, 1)


def test_cas_success(group: Group) -> None:
    group.put("a", "old")
    assert group.put("a", "new", if_version=1) == {"ok": True, "version": 2}
    assert group.read("a") == ("new", 2)


def test_cas_failure_writes_nothing_but_the_applied_index(group: Group) -> None:
    group.put("a", "old")
    before = dict(group.engine.iterate())
    result = group.put("a", "new", if_version=5)
    assert result == {"ok": False, "code": "condition_failed", "current_version": 1}
    assert group.read("a") == ("old", 1)
    changed = {k for k, v in group.engine.iterate() if before.get(k) != v}
    assert changed == {sm.group_prefix(0) + b"\0\0\0\0applied"}


def test_create_only_with_if_version_0(group: Group) -> None:
    assert group.put("a", 1, if_version=0) == {"ok": True, "version": 1}
    assert group.put("a", 2, if_version=0) == {
        "ok": False,
        "code": "condition_failed",
        "current_version": 1,
    }
    assert group.read("a") == (1, 1)


def test_cas_on_absent_key_reports_version_0(group: Group) -> None:
    assert group.put("a", 1, if_version=3) == {
        "ok": False,
        "code": "condition_failed",
        "current_version": 0,
    }
    assert group.read("a") is None


def test_delete_existing(group: Group) -> None:
    group.put("a", 1)
    assert group.delete("a") == {"ok": True, "version": 0, "existed": True}
    assert group.read("a") is None


def test_delete_absent_is_ok(group: Group) -> None:
    assert group.delete("a") == {"ok": True, "version": 0, "existed": False}


def test_conditional_delete(group: Group) -> None:
    group.put("a", 1)
    group.put("a", 2)
    assert group.delete("a", if_version=1) == {
        "ok": False,
        "code": "condition_failed",
        "current_version": 2,
    }
    assert group.delete("a", if_version=2) == {"ok": True, "version": 0, "existed": True}


def test_delete_then_recreate_starts_at_version_1(group: Group) -> None:
    group.put("a", 1)
    group.put("a", 2)
    group.delete("a")
    assert group.put("a", 3, if_version=0) == {"ok": True, "version": 1}
    assert group.read("a") == (3, 1)


def test_barrier_changes_no_data(group: Group) -> None:
    group.put("a", 1)
    assert group.submit(BARRIER) == {"ok": True}
    assert group.read("a") == (1, 1)
    assert group.applied() == 2


# --- idempotent apply (DESIGN.md §3) -------------------------------------------------------


def test_applied_index_is_written_with_every_entry(group: Group) -> None:
    assert group.applied() == 0
    group.put("a", 1)
    group.submit(b"garbage")
    group.submit(BARRIER, skip=3)  # pysyncobj's own entries leave gaps in our indexes
    assert group.applied() == 6


def test_replay_of_an_applied_index_is_skipped(group: Group) -> None:
    group.put("a", 1)
    cas = encode(Command("put", UID, "a", 2, if_version=1))
    delete = encode(Command("delete", UID, "a"))
    assert group.apply_at(2, cas) == {"ok": True, "version": 2}
    assert group.apply_at(3, delete) == {"ok": True, "version": 0, "existed": True}
    for index, raw in [(2, cas), (3, delete), (1, cas)]:
        batch, result = sm.apply(group.engine, 0, index, raw)
        assert (len(batch), result) == (0, None)
    assert group.read("a") is None


def test_restart_replays_the_journal_without_double_applying() -> None:
    journal = [
        encode(Command("put", UID, "a", 1)),
        encode(Command("put", UID, "a", 2, if_version=1)),
        encode(Command("delete", UID, "a", if_version=2)),
        encode(Command("put", UID, "a", 3, if_version=0)),
    ]
    group = Group()
    for raw in journal[:3]:
        group.submit(raw)
    results = [group.apply_at(i, raw) for i, raw in enumerate(journal, start=1)]
    assert results == [None, None, None, {"ok": True, "version": 1}]
    assert group.read("a") == (3, 1)


def test_non_positive_index_is_a_driver_bug(group: Group) -> None:
    with pytest.raises(ValueError, match="index"):
        sm.apply(group.engine, 0, 0, encode(BARRIER))


# --- request dedupe (Raft §8, client interaction) -----------------------------------------


def test_retry_returns_the_first_result_even_if_state_changed(group: Group) -> None:
    first = group.put("a", "mine", if_version=0, request_id="r1")
    assert first == {"ok": True, "version": 1}
    group.put("a", "theirs")
    assert group.put("a", "mine", if_version=0, request_id="r1") == first
    assert group.read("a") == ("theirs", 2)
    assert group.applied() == 3


def test_retried_failure_returns_the_first_failure(group: Group) -> None:
    group.put("a", 1)
    failed = group.put("a", 2, if_version=0, request_id="r1")
    assert failed == {"ok": False, "code": "condition_failed", "current_version": 1}
    group.delete("a")
    assert group.put("a", 2, if_version=0, request_id="r1") == failed
    assert group.read("a") is None


def test_retried_delete_is_not_applied_twice(group: Group) -> None:
    group.put("a", 1)
    assert group.delete("a", request_id="d") == {"ok": True, "version": 0, "existed": True}
    group.put("a", 2)
    assert group.delete("a", request_id="d") == {"ok": True, "version": 0, "existed": True}
    assert group.read("a") == (2, 1)


@pytest.mark.parametrize(
    "other",
    [
        {"key": "b", "value": "mine"},  # another key
        {"key": "a", "value": "theirs"},  # another value
        {"key": "a", "value": "mine", "uid": UID + 1},  # another keyspace
        {"key": "a", "value": "mine", "if_version": 3},  # another condition
    ],
)
def test_a_request_id_reused_for_another_command_is_a_conflict(
    group: Group, other: dict[str, Any]
) -> None:
    """Issue 11 item 5: before fingerprints, the second write was silently dropped and
    reported done with the first one's result."""
    first = group.put("a", "mine", request_id="r1")
    conflict = group.put(**{"request_id": "r1", **other})
    assert conflict["code"] == "request_id_conflict" and "r1" in conflict["message"]
    assert group.read("a") == ("mine", 1) and group.read("b") is None
    assert group.put("a", "mine", request_id="r1") == first  # the true retry still matches
    assert group.delete("a", request_id="r1")["code"] == "request_id_conflict"


def test_a_retry_matches_whatever_the_order_of_the_value_keys(group: Group) -> None:
    first = group.put("a", {"x": 1, "y": [1, 2]}, request_id="r1")
    assert group.put("a", {"y": [1, 2], "x": 1}, request_id="r1") == first
    assert group.read("a") == ({"x": 1, "y": [1, 2]}, 1)


def test_an_entry_without_a_fingerprint_matches_any_command(group: Group) -> None:
    """Entries written before fingerprints were kept: a retry gets the first result."""
    first = group.put("a", "mine", request_id="r1")
    raw = group.engine.get(sm._rid_key(0, b"r1"))
    assert raw is not None
    entry = json.loads(raw)
    del entry["fp"]
    batch = WriteBatch()
    batch.put(sm._rid_key(0, b"r1"), json.dumps(entry).encode())
    group.engine.write(batch)
    assert group.put("b", "other", request_id="r1") == first


def test_request_ids_expire_after_the_retention_window(group: Group) -> None:
    group.put("a", 1, request_id="r1")
    group.submit(BARRIER, skip=sm.RETAIN_REQUESTS - 3)  # index RETAIN - 1
    assert group.put("a", 1, request_id="r1") == {"ok": True, "version": 1}
    assert group.put("a", 1, request_id="r1") == {"ok": True, "version": 2}  # expired
    assert group.put("a", 1, request_id="r1") == {"ok": True, "version": 2}  # new entry


def test_expiry_deletes_a_bounded_number_per_apply(group: Group) -> None:
    for n in range(10):
        group.put("a", n, request_id=f"r{n}")
    group.submit(BARRIER, skip=sm.RETAIN_REQUESTS)
    assert len(rid_entries(group)) == 10 - sm.EXPIRE_PER_APPLY
    for _ in range(2):
        group.submit(BARRIER)
    assert rid_entries(group) == []
    assert index_entries(group) == []


def test_reused_expired_request_id_not_yet_swept_keeps_one_index_entry(group: Group) -> None:
    for n in range(6):
        group.put("a", n, request_id=f"r{n}")
    group.put("a", 6, request_id="s")  # index 7
    # At index 7 + RETAIN all 7 entries are expired; the sweep reaches only r0..r3.
    assert group.put("a", 7, request_id="s", skip=sm.RETAIN_REQUESTS - 1) == {
        "ok": True,
        "version": 8,
    }
    assert rid_entries(group) == [b"r4", b"r5", b"s"]
    assert index_entries(group) == [(5, b"r4"), (6, b"r5"), (group.index, b"s")]


# --- malformed commands -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "empty"),
        (b"\x02{}", "version 2"),
        (b"\x01not json", "JSON"),
        (b'\x01{"op":"put","uid":1,"key":"a"}', "value"),
        (b'\x01{"op":"put","uid":0,"key":"a","value":1}', "uid"),
        (b'\x01{"op":"delete","uid":1,"key":"a","color":"red"}', "color"),
    ],
)
def test_malformed_command_is_a_noop_with_a_result(group: Group, raw: bytes, fragment: str) -> None:
    group.put("a", 1)
    before = group.read("a")
    result = group.submit(raw)
    assert result is not None
    assert (result["ok"], result["code"]) == (False, "invalid_command")
    assert fragment in result["message"]
    assert group.read("a") == before
    assert group.applied() == 2


# --- isolation ---------------------------------------------------------------------------


def test_partitions_do_not_see_each_other() -> None:
    engine = MemoryEngine()
    p1, p2 = Group(engine, partition=1), Group(engine, partition=2)
    p1.put("a", "one")
    assert p2.read("a") is None
    assert p2.put("a", "two") == {"ok": True, "version": 1}
    assert p1.read("a") == ("one", 1)
    assert (p1.applied(), p2.applied()) == (1, 1)


def test_partition_request_ids_are_separate() -> None:
    engine = MemoryEngine()
    p1, p2 = Group(engine, partition=1), Group(engine, partition=2)
    p1.put("a", 1, request_id="r")
    assert p2.put("a", 5, request_id="r") == {"ok": True, "version": 1}
    assert p2.read("a") == (5, 1)


def test_keyspace_uids_do_not_see_each_other(group: Group) -> None:
    group.put("a", "old incarnation", uid=1)
    assert group.read("a", uid=2) is None
    assert group.put("a", "new", uid=2, if_version=0) == {"ok": True, "version": 1}
    assert group.read("a", uid=1) == ("old incarnation", 1)


def test_group_range_holds_every_key_the_group_writes(group: Group) -> None:
    group.put("a", 1, uid=1, request_id="r")
    group.put("\uffff", 1, uid=MAX_UID)
    other = Group(group.engine, partition=1)
    other.put("a", 1)
    start, stop = sm.group_range(0)
    inside = [k for k, _ in group.engine.iterate(start, stop)]
    assert len(inside) == 5  # 2 records, applied, rid, rix
    assert all(k.startswith(sm.group_prefix(0)) for k in inside)
    assert sm.group_range(0xFFFFFF) == (b"l\xff\xff\xff", b"m")


def test_partition_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="partition"):
        sm.group_prefix(1 << 24)


# --- codec --------------------------------------------------------------------------------


def test_encoding_is_versioned_compact_json() -> None:
    raw = encode(Command("put", 3, "k", [1, "é"], if_version=0, request_id="r"))
    assert raw == (
        b'\x01{"op":"put","uid":3,"key":"k","value":[1,"\\u00e9"],"if_version":0,"request_id":"r"}'
    )
    assert encode(BARRIER) == b'\x01{"op":"barrier"}'
    assert decode(raw) == Command("put", 3, "k", [1, "é"], if_version=0, request_id="r")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"op": "get", "uid": 1, "key": "a"}, "op"),
        ({"op": "put", "uid": 1 << 32, "key": "a"}, "uid"),
        ({"op": "put", "uid": True, "key": "a"}, "uid"),
        ({"op": "put", "uid": 1, "key": ""}, "key"),
        ({"op": "put", "uid": 1, "key": "\ud800"}, "key"),
        ({"op": "put", "uid": 1, "key": "a", "value": float("nan")}, "nan"),
        ({"op": "put", "uid": 1, "key": "a", "value": (1, 2)}, "tuple"),
        ({"op": "put", "uid": 1, "key": "a", "value": {1: 2}}, "non-string key"),
        ({"op": "put", "uid": 1, "key": "a", "if_version": -1}, "if_version"),
        ({"op": "put", "uid": 1, "key": "a", "request_id": "x" * 129}, "request_id"),
        ({"op": "delete", "uid": 1, "key": "a", "value": 1}, "value"),
        ({"op": "barrier", "uid": 1, "key": ""}, "barrier"),
        ({"op": "barrier", "uid": 0, "key": "", "request_id": "r"}, "request_id"),
    ],
)
def test_invalid_commands_are_refused_when_built(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        Command(**kwargs)


def test_value_depth_is_bounded() -> None:
    deep: Any = 1
    for _ in range(200):
        deep = [deep]
    with pytest.raises(ValueError, match="deeper"):
        Command("put", 1, "a", deep)
    raw = b'\x01{"op":"put","uid":1,"key":"a","value":' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(ValueError):
        decode(raw)


def rid_entries(group: Group) -> list[bytes]:
    prefix = sm.group_prefix(group.partition) + b"\0\0\0\0rid/"
    return [k[len(prefix) :] for k, _ in group.engine.iterate_prefix(prefix)]


def index_entries(group: Group) -> list[tuple[int, bytes]]:
    prefix = sm.group_prefix(group.partition) + b"\0\0\0\0rix/"
    entries = group.engine.iterate_prefix(prefix)
    return [(int.from_bytes(k[len(prefix) :], "big"), v) for k, v in entries]
