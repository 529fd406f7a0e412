"""The state machine's part of a switch to linearizable (raft_groups/state_machine.py,
docs/mode_switch.md): `migrate` creates only absent keys and marks the partition; guarded
client commands are refused until the mark and never remembered as done, so every client
write is ordered after the migrated data and no migrated value overwrites it."""

from __future__ import annotations

import pytest

from raft_groups import state_machine as sm
from raft_groups.commands import MAX_MIGRATE_ITEMS, Command, decode, encode
from tests.unit.test_raft_state_machine import UID, Group


def migrate(*items: tuple[str, object], mark: bool = True) -> Command:
    return Command("migrate", UID, "", items=tuple(items), mark=mark)


def test_migrate_creates_absent_keys_at_version_1_and_marks_the_partition() -> None:
    g = Group()
    assert not sm.migrated(g.engine, 0, UID)
    assert g.submit(migrate(("a", 1), mark=False)) == {"ok": True, "migrated": 1, "kept": 0}
    assert not sm.migrated(g.engine, 0, UID)
    result = g.submit(migrate(("a", 99), ("b", [2]), ("b", "second")))
    assert result == {"ok": True, "migrated": 1, "kept": 2}  # a exists; b's first value
    assert sm.read(g.engine, 0, UID, "a") == (1, 1)
    assert sm.read(g.engine, 0, UID, "b") == ([2], 1)
    assert sm.migrated(g.engine, 0, UID) and not sm.migrated(g.engine, 0, UID + 1)


def test_a_guarded_write_waits_for_the_migration_and_its_request_id_stays_free() -> None:
    g = Group()
    refused = g.submit(Command("put", UID, "k", "new", request_id="r1", guard=True))
    assert refused == {"ok": False, "code": "not_migrated"}
    assert sm.read(g.engine, 0, UID, "k") is None
    g.submit(migrate(("k", "old")))
    applied = g.submit(Command("put", UID, "k", "new", request_id="r1", guard=True))
    assert applied == {"ok": True, "version": 2}  # the retry applies: r1 was not remembered
    assert sm.read(g.engine, 0, UID, "k") == ("new", 2)


def test_after_the_mark_a_late_migrate_changes_nothing() -> None:
    """Another node migrating the same partition from a read taken earlier: its values
    must not overwrite, nor resurrect, what clients did after the mark."""
    g = Group()
    g.submit(migrate(("k", "old"), ("gone", 1)))
    g.submit(Command("put", UID, "k", "new", guard=True))
    g.submit(Command("delete", UID, "gone", guard=True))
    assert g.submit(migrate(("k", "old"), ("gone", 1))) == {
        "ok": True,
        "migrated": 0,
        "already": True,
    }
    assert sm.read(g.engine, 0, UID, "k") == ("new", 2)
    assert sm.read(g.engine, 0, UID, "gone") is None


def test_unguarded_commands_are_not_held_back() -> None:
    g = Group()
    assert g.submit(Command("put", UID, "k", 1)) == {"ok": True, "version": 1}


def test_migrate_and_guard_round_trip_through_the_log_encoding() -> None:
    for cmd in (
        migrate(("k", {"x": [1, None]}), ("l", "s")),
        migrate(mark=True),
        Command("put", UID, "k", 1, guard=True, request_id="r"),
        Command("delete", UID, "k", guard=True),
    ):
        assert decode(encode(cmd)) == cmd


@pytest.mark.parametrize(
    "build",
    [
        lambda: Command("migrate", UID, "k", items=(("a", 1),)),  # a key of its own
        lambda: Command("migrate", UID, "", items=(("", 1),)),  # an empty item key
        lambda: Command("migrate", UID, "", request_id="r"),
        lambda: Command("migrate", UID, "", guard=True),
        lambda: Command("put", UID, "k", 1, items=(("a", 1),)),
        lambda: Command("put", UID, "k", 1, mark=True),
        lambda: Command("migrate", 0, ""),
        lambda: Command("migrate", UID, "", items=(("a", float("nan")),)),
        lambda: Command("migrate", UID, "", items=tuple((f"k{i}", i) for i in range(1001))),
    ],
)
def test_malformed_migrations_are_refused_when_built(build: object) -> None:
    assert MAX_MIGRATE_ITEMS == 1000
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


def test_an_undecodable_migrate_entry_is_a_no_op() -> None:
    g = Group()
    raw = b'\x01{"op":"migrate","uid":7,"key":"","items":[["a"]],"mark":true}'
    result = g.submit(raw)
    assert result is not None and result["code"] == "invalid_command"
    assert not sm.migrated(g.engine, 0, UID)


# -- the way to eventual: freeze, read the final state, purge --------------------------------


def test_a_frozen_keyspace_takes_no_write_and_its_request_ids_stay_free() -> None:
    g = Group()
    g.submit(Command("put", UID, "k", 1))
    assert g.submit(Command("freeze", UID, "")) == {"ok": True, "migrated": False}
    assert sm.frozen(g.engine, 0, UID) and not sm.frozen(g.engine, 0, UID + 1)
    for cmd in (
        Command("put", UID, "k", 2, request_id="r"),
        Command("delete", UID, "k"),
        Command("put", UID, "new", 1, guard=True),
    ):
        assert g.submit(cmd) == {"ok": False, "code": "frozen"}
    assert sm.read(g.engine, 0, UID, "k") == (1, 1)
    assert g.submit(Command("put", UID + 1, "k", 1)) == {"ok": True, "version": 1}  # others


def test_records_lists_a_keyspace_in_key_order() -> None:
    g = Group()
    for key in ("b", "a", "c"):
        g.submit(Command("put", UID, key, key.upper()))
    g.submit(Command("put", UID + 1, "other", 0))
    assert sm.records(g.engine, 0, UID) == [("a", "A", 1), ("b", "B", 1), ("c", "C", 1)]


def test_purge_deletes_in_batches_then_the_mark_but_keeps_the_freeze(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sm, "PURGE_BATCH", 2)
    g = Group()
    g.submit(migrate(("a", 1), ("b", 2), ("c", 3)))
    g.submit(Command("freeze", UID, ""))
    g.submit(Command("put", UID + 1, "kept", 0))
    assert g.submit(Command("purge", UID, "")) == {"ok": True, "purged": 2, "done": False}
    assert sm.migrated(g.engine, 0, UID) and sm.frozen(g.engine, 0, UID)
    assert g.submit(Command("purge", UID, "")) == {"ok": True, "purged": 1, "done": True}
    assert sm.records(g.engine, 0, UID) == []
    assert not sm.migrated(g.engine, 0, UID) and sm.frozen(g.engine, 0, UID)
    assert sm.read(g.engine, 0, UID + 1, "kept") == (0, 1)
    # a node routing by metadata from before the switch: refused, not written unread
    assert g.submit(Command("put", UID, "a", 9)) == {"ok": False, "code": "frozen"}


def test_freeze_and_purge_take_a_uid_only() -> None:
    for op in ("freeze", "purge"):
        cmd = Command(op, UID, "")  # type: ignore[arg-type]
        assert decode(encode(cmd)) == cmd
        for bad in ({"key": "k"}, {"request_id": "r"}, {"guard": True}, {"mark": True}):
            with pytest.raises(ValueError):
                Command(op, UID, bad.pop("key", ""), **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="since"):
        Command("purge", UID, "", since=5)
    with pytest.raises(ValueError, match="since"):
        Command("freeze", UID, "", since=-1)


# -- a cancelled switch to linearizable: freeze with the switch's epoch --------------------


def test_a_cancel_freeze_refuses_the_cancelled_switchs_late_migrate_and_writes() -> None:
    """A node still on metadata from before the cancel migrates the partition or writes
    through the guard: both refused, so nothing is acknowledged in Raft after the freeze."""
    g = Group()
    g.submit(Command("migrate", UID, "", items=(("k", "old"),), mark=False, since=7))
    assert g.submit(Command("freeze", UID, "", since=7)) == {"ok": True, "migrated": False}
    late = Command("migrate", UID, "", items=(("k", "old"),), mark=True, since=7)
    assert g.submit(late) == {"ok": False, "code": "frozen"}
    assert not sm.migrated(g.engine, 0, UID)
    put = Command("put", UID, "k", "new", request_id="r", guard=True)
    assert g.submit(put) == {"ok": False, "code": "frozen"}
    assert sm.frozen_since(g.engine, 0, UID) == 7


def test_a_later_switch_migrates_past_an_older_freeze_and_lifts_it() -> None:
    g = Group()
    g.submit(Command("freeze", UID, "", since=7))
    g.submit(Command("purge", UID, ""))
    g.submit(Command("freeze", UID, "", since=3))  # a retried older freeze: 7 stays
    assert sm.frozen_since(g.engine, 0, UID) == 7
    newer = Command("migrate", UID, "", items=(("k", "v"),), mark=True, since=12)
    assert g.submit(newer) == {"ok": True, "migrated": 1, "kept": 0}
    assert sm.migrated(g.engine, 0, UID) and not sm.frozen(g.engine, 0, UID)
    assert g.submit(Command("put", UID, "k", "w", guard=True)) == {"ok": True, "version": 2}
    assert g.submit(Command("freeze", UID, "", since=12)) == {"ok": True, "migrated": True}


def test_since_travels_in_the_command() -> None:
    for cmd in (
        Command("freeze", UID, "", since=9),
        Command("migrate", UID, "", items=(("a", 1),), mark=True, since=9),
    ):
        assert decode(encode(cmd)) == cmd
