"""What makes a group's Raft state durable (raft_groups/syncobj_adapter/durable.py and
node_log.py; docs/raft.md "Durability").

The order of the syscalls is checked with recording wrappers around `os`; the vote file
of the format before the node's log is read back (torn slots included) for its import."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from pysyncobj import SERIALIZER_STATE
from pysyncobj.node import TCPNode

from kv.files import write_durably
from raft_groups.syncobj_adapter import GroupSettings, NodeLog, RaftDriver, RaftGroup, RaftMux
from raft_groups.syncobj_adapter.durable import (
    SLOT,
    VOTE_FILE,
    Vote,
    encode_slot,
    read_vote,
    vote_in,
)
from raft_groups.syncobj_adapter.settings import RaftNodeSettings
from raft_groups.syncobj_adapter.snapshot import BackgroundSnapshot
from tests.ports import free_port
from tests.unit.raft_fakes import NullMachine

ADDRESS = f"127.0.0.1:{free_port()}"


def test_a_vote_is_newer_with_a_higher_term_or_a_vote_cast_in_the_same_term() -> None:
    assert Vote(3, None).newer_than(Vote(2, "b"))
    assert Vote(2, "b").newer_than(Vote(2, None))
    assert not Vote(2, None).newer_than(Vote(2, "b"))
    assert not Vote(2, "b").newer_than(Vote(2, "b"))
    assert not Vote(1, "b").newer_than(Vote(2, None))


def test_the_vote_in_pysyncobjs_meta() -> None:
    assert vote_in({}) == Vote(0, None)
    meta = {"currentTerm": 4, "votedForNodeId": "h:1", "raftCommitIndex": 9}
    assert vote_in(meta) == Vote(4, "h:1")


def test_a_durable_write_syncs_the_data_before_the_rename_and_the_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    _record(monkeypatch, events)
    path = str(tmp_path / "f")
    write_durably(path, b"new")
    assert events == [
        f"write {path}.tmp",
        f"fdatasync {path}.tmp",
        f"replace {path}.tmp {path}",
        f"fsync {tmp_path}",
    ]
    assert Path(path).read_bytes() == b"new"


def test_a_torn_slot_of_an_old_vote_file_leaves_the_previous_vote(tmp_path: Path) -> None:
    path = tmp_path / VOTE_FILE
    slot0, slot1 = encode_slot(2, Vote(4, "h:2")), encode_slot(1, Vote(3, "h:1"))
    path.write_bytes(slot0 + slot1)
    assert read_vote(str(path)) == Vote(4, "h:2")
    raw = bytearray(path.read_bytes())
    raw[20] ^= 0xFF  # the power failed while slot 0 was written
    path.write_bytes(bytes(raw))
    assert read_vote(str(path)) == Vote(3, "h:1")
    assert len(slot0) == SLOT


def test_an_unreadable_vote_file_is_no_vote(tmp_path: Path) -> None:
    assert read_vote(str(tmp_path / VOTE_FILE)) is None
    (tmp_path / VOTE_FILE).write_bytes(b"")  # torn
    assert read_vote(str(tmp_path / VOTE_FILE)) is None


def test_a_group_makes_its_term_and_vote_durable_at_the_next_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-member group elects itself (term 1, its own vote): the vote is in the node's
    log, written and fdatasynced by the next sync; a restart reads it back."""
    group, driver = _lone_group(tmp_path)
    events: list[str] = []
    try:
        assert group.sync_journal()  # the entry pysyncobj created
        assert not group.sync_journal()  # nothing written since
        _record(monkeypatch, events)
        deadline = time.monotonic() + 10
        while not group.status().is_leader and time.monotonic() < deadline:
            driver.cycle(time.monotonic())  # tick, sync, flush, poll (≤ idle_tick), ...
        assert group.status().is_leader and group.status().term == 1
        segment = _segment(tmp_path)
        assert events[0].startswith(f"pwrite {segment} @") and events[1] == f"fdatasync {segment}"
    finally:
        driver.stop()
    monkeypatch.undo()
    state = NodeLog(str(tmp_path / "log")).states["g"]
    assert (state.term, state.voted_for) == (1, ADDRESS)
    group, driver = _lone_group(tmp_path)
    try:
        assert group.status().term == 1
    finally:
        driver.stop()


def test_the_first_sync_makes_the_group_directory_durable_then_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group, driver = _lone_group(tmp_path)
    events: list[str] = []
    _record(monkeypatch, events)
    data, segment = tmp_path / "g", _segment(tmp_path)
    try:
        assert group.sync_journal()
        assert events == [
            f"fsync {data}",
            f"fsync {tmp_path}",
            f"pwrite {segment} @0",
            f"fdatasync {segment}",
        ]
        assert not group.sync_journal() and len(events) == 4
    finally:
        driver.stop()


def test_a_snapshot_is_durable_before_it_is_loaded_and_before_the_journal_is_truncated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pysyncobj truncates (or, installing one from the leader, clears) the journal once a
    snapshot is written (or loaded): the snapshot's rename, and a received snapshot's
    content, must be durable by then."""
    final = tmp_path / "raft.snapshot"
    snapshots = BackgroundSnapshot(NullMachine())
    entry = (b"", 1, 1)
    events: list[str] = []
    _record(monkeypatch, events)
    snapshots.write(f"{final}.tmp", (entry, entry, [TCPNode(ADDRESS)]))
    snapshots.join()
    assert snapshots.check() == SERIALIZER_STATE.SUCCESS  # installs it (driver thread)
    assert events[-2:] == [f"replace {final}.bg {final}", f"fsync {tmp_path}"]
    events.clear()
    snapshots.read(str(final))
    assert events == [f"fsync {final}", f"fsync {tmp_path}"]


def _lone_group(data: Path) -> tuple[RaftGroup, RaftDriver]:
    log = NodeLog(str(data / "log"))
    driver = RaftDriver(RaftMux(RaftNodeSettings(ADDRESS, ADDRESS, "s" * 32)), log)
    settings = GroupSettings(
        gid="g",
        self_address=ADDRESS,
        peers=(),
        data_dir=str(data / "g"),
        election_timeout_min=0.01,
        election_timeout_max=0.02,
        append_entries_period=0.001,
    )
    return RaftGroup(driver, settings, NullMachine()), driver


def _record(monkeypatch: pytest.MonkeyPatch, events: list[str]) -> None:
    """Record write, pwrite, fdatasync, fsync (by path) and replace calls, then make them."""
    write, pwrite, fdatasync, fsync, replace = (
        os.write,
        os.pwrite,
        os.fdatasync,
        os.fsync,
        os.replace,
    )

    def path(fd: int) -> str:
        return os.readlink(f"/proc/self/fd/{fd}")

    def on_write(fd: int, data: bytes) -> int:
        events.append(f"write {path(fd)}")
        return write(fd, data)

    def on_pwrite(fd: int, data: bytes, offset: int) -> int:
        events.append(f"pwrite {path(fd)} @{offset}")
        return pwrite(fd, data, offset)

    def on_fdatasync(fd: int) -> None:
        events.append(f"fdatasync {path(fd)}")
        fdatasync(fd)

    def on_fsync(fd: int) -> None:
        events.append(f"fsync {path(fd)}")
        fsync(fd)

    def on_replace(src: str, dst: str) -> None:
        events.append(f"replace {src} {dst}")
        replace(src, dst)

    monkeypatch.setattr(os, "write", on_write)
    monkeypatch.setattr(os, "pwrite", on_pwrite)
    monkeypatch.setattr(os, "fdatasync", on_fdatasync)
    monkeypatch.setattr(os, "fsync", on_fsync)
    monkeypatch.setattr(os, "replace", on_replace)


def _segment(data: Path) -> Path:
    (name,) = os.listdir(data / "log")
    return data / "log" / name
