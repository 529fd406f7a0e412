"""Durable term and vote, and the journal's sync (raft_groups/syncobj_adapter/durable.py;
docs/raft.md "Durability").

The order of the syscalls that make a vote durable is checked with recording wrappers
around `os`; a power loss is simulated by truncating or rolling back pysyncobj's meta
file (written without fsync) while the vote file survives, as it would, and by tearing
the vote file's newest slot."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from pysyncobj import SERIALIZER_STATE
from pysyncobj.node import TCPNode

from kv.files import write_durably
from raft_groups.syncobj_adapter import GroupSettings, RaftDriver, RaftGroup, RaftMux, shim
from raft_groups.syncobj_adapter.durable import (
    SLOT,
    VOTE_FILE,
    MetaThrottle,
    Vote,
    VoteFile,
    read_vote,
    restore_vote,
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
    assert events == [f"fdatasync {path}.tmp", f"replace {path}.tmp {path}", f"fsync {tmp_path}"]
    assert Path(path).read_bytes() == b"new"


def test_a_vote_goes_into_the_other_slot_then_is_fdatasynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / VOTE_FILE)
    votes = VoteFile(path)
    assert os.path.getsize(path) == 2 * SLOT and votes.durable == Vote()
    events: list[str] = []
    _record(monkeypatch, events)
    votes.write(Vote(1, "h:1"))
    votes.write(Vote(2, None))
    assert events == [
        f"pwrite {path} @{SLOT}",
        f"fdatasync {path}",
        f"pwrite {path} @0",
        f"fdatasync {path}",
    ]
    assert read_vote(path) == Vote(2, None) == VoteFile(path).durable


def test_a_torn_slot_leaves_the_previous_vote(tmp_path: Path) -> None:
    path = tmp_path / VOTE_FILE
    votes = VoteFile(str(path))
    votes.write(Vote(3, "h:1"))  # seq 1, slot 1
    votes.write(Vote(4, "h:2"))  # seq 2, slot 0
    raw = bytearray(path.read_bytes())
    raw[20] ^= 0xFF  # the power failed while slot 0 was written
    path.write_bytes(bytes(raw))
    assert read_vote(str(path)) == Vote(3, "h:1")
    again = VoteFile(str(path))
    again.write(Vote(4, "h:3"))  # into slot 0 again: slot 1 still holds the durable vote
    assert read_vote(str(path)) == Vote(4, "h:3")


def test_an_unreadable_vote_file_is_no_vote(tmp_path: Path) -> None:
    assert read_vote(str(tmp_path / VOTE_FILE)) is None
    (tmp_path / VOTE_FILE).write_bytes(b"")  # torn
    assert read_vote(str(tmp_path / VOTE_FILE)) is None


@pytest.mark.parametrize("lost", ["torn", "older"])
def test_a_restart_after_a_power_loss_gets_the_durable_vote_back(tmp_path: Path, lost: str) -> None:
    meta = str(tmp_path / "raft.journal.meta")
    VoteFile(str(tmp_path / VOTE_FILE)).write(Vote(7, "h:2"))
    older = {"currentTerm": 6, "votedForNodeId": None, "raftCommitIndex": 40}
    Path(meta).write_bytes(b"" if lost == "torn" else shim.encode_meta(older))
    restore_vote(str(tmp_path), meta)
    restored = shim.read_meta(meta)
    assert vote_in(restored) == Vote(7, "h:2")
    assert restored.get("raftCommitIndex") == (None if lost == "torn" else 40)


def test_a_meta_file_newer_than_the_vote_file_is_left_alone(tmp_path: Path) -> None:
    """After a process crash pysyncobj's file is the newest (it is written first)."""
    meta = str(tmp_path / "raft.journal.meta")
    VoteFile(str(tmp_path / VOTE_FILE)).write(Vote(7, None))
    newer = shim.encode_meta({"currentTerm": 7, "votedForNodeId": "h:3", "raftCommitIndex": 5})
    Path(meta).write_bytes(newer)
    restore_vote(str(tmp_path), meta)
    assert Path(meta).read_bytes() == newer


def test_a_group_makes_its_term_and_vote_durable_at_the_next_sync(tmp_path: Path) -> None:
    """A one-member group elects itself (term 1, its own vote): pysyncobj stores that in
    its meta file at once, without fsync; the group's next sync writes the vote file. A
    "power loss" that empties pysyncobj's file then loses neither."""
    group, driver = _lone_group(tmp_path)
    try:
        assert group.sync_journal()  # the journal pysyncobj created
        assert not group.sync_journal() and group.vote_syncs == 0  # nothing written since
        deadline = time.monotonic() + 10
        while not group.status().is_leader and time.monotonic() < deadline:
            driver.cycle(time.monotonic())  # tick, sync, flush, poll (≤ idle_tick), ...
        assert group.status().is_leader and group.status().term == 1
        assert group.vote_syncs == 1
        assert read_vote(str(tmp_path / VOTE_FILE)) == Vote(1, ADDRESS)
    finally:
        driver.stop()
    (tmp_path / "raft.journal.meta").write_bytes(b"")
    group, driver = _lone_group(tmp_path)
    try:
        assert vote_in(shim.read_meta(str(tmp_path / "raft.journal.meta"))) == Vote(1, ADDRESS)
        assert group.status().term == 1
    finally:
        driver.stop()


def test_the_journal_is_synced_with_fdatasync_on_its_file_only_after_a_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group, driver = _lone_group(tmp_path)
    events: list[str] = []
    _record(monkeypatch, events)
    try:
        assert group.sync_journal()  # the first sync: the new directory's entries too
        assert events == [
            f"fsync {tmp_path}",
            f"fsync {tmp_path.parent}",
            f"fdatasync {tmp_path / 'raft.journal'}",
        ]
        assert not group.sync_journal() and len(events) == 3
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
    driver = RaftDriver(RaftMux(RaftNodeSettings(ADDRESS, ADDRESS, "s" * 32)))
    settings = GroupSettings(
        gid="g",
        self_address=ADDRESS,
        peers=(),
        data_dir=str(data),
        election_timeout_min=0.01,
        election_timeout_max=0.02,
        append_entries_period=0.001,
    )
    return RaftGroup(driver, settings, NullMachine()), driver


def _record(monkeypatch: pytest.MonkeyPatch, events: list[str]) -> None:
    """Record pwrite, fdatasync, fsync (by path) and replace calls, then make them."""
    pwrite, fdatasync, fsync, replace = os.pwrite, os.fdatasync, os.fsync, os.replace

    def path(fd: int) -> str:
        return os.readlink(f"/proc/self/fd/{fd}")

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

    monkeypatch.setattr(os, "pwrite", on_pwrite)
    monkeypatch.setattr(os, "fdatasync", on_fdatasync)
    monkeypatch.setattr(os, "fsync", on_fsync)
    monkeypatch.setattr(os, "replace", on_replace)


def test_a_commit_index_alone_is_stored_at_most_every_interval_a_term_or_vote_always() -> None:
    """MetaThrottle: pysyncobj's once-a-second meta store of a moved commit index goes
    through every `interval` seconds; a term or vote change goes through at once."""
    throttle = MetaThrottle(interval=10.0)
    meta = {"currentTerm": 3, "votedForNodeId": "a", "raftCommitIndex": 5}
    assert throttle.lets(meta, 0.0)  # the first store
    assert not throttle.lets({**meta, "raftCommitIndex": 6}, 1.0)
    assert not throttle.lets({**meta, "raftCommitIndex": 9}, 9.9)
    assert throttle.lets({**meta, "raftCommitIndex": 10}, 10.0)
    assert throttle.lets({**meta, "currentTerm": 4, "votedForNodeId": None}, 10.5)
    assert throttle.lets({**meta, "currentTerm": 4, "votedForNodeId": "b"}, 10.6)
    assert not throttle.lets({**meta, "currentTerm": 4, "votedForNodeId": "b"}, 11.0)
