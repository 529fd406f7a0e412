"""The node's Raft log (raft_groups/syncobj_adapter/node_log.py, log_records.py; docs/raft.md
"The node's log"): real files in a temporary directory.

`GroupJournal` must behave as pysyncobj's own `MemoryJournal` does for every sequence of
journal calls pysyncobj makes, and a log opened again must give every group back the
state it had at the last sync: that is checked on random sequences against
`MemoryJournal`, with segments small enough to rotate and be collected along the way.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from pysyncobj.journal import FileJournal, MemoryJournal

from raft_groups.syncobj_adapter import log_records as rec
from raft_groups.syncobj_adapter.durable import SLOT, Vote, encode_slot, import_legacy
from raft_groups.syncobj_adapter.node_log import (
    GroupJournal,
    LogCorrupt,
    NodeLog,
    NodeLogFailed,
)


def _journal(log: NodeLog, gid: str, writes: list[str] | None = None) -> GroupJournal:
    return log.journal(gid, (lambda: writes.append(gid)) if writes is not None else lambda: None)


def _state(journal: GroupJournal | MemoryJournal) -> tuple[object, ...]:
    entries = [tuple(journal[i]) for i in range(len(journal))]
    return entries, journal.getCurrentTerm(), journal.getVotedForNodeId()


def _step(rng: random.Random, ours: GroupJournal, theirs: MemoryJournal) -> None:
    """One journal call of the kinds pysyncobj makes, on both journals."""
    size = len(theirs)
    last = theirs[-1][1] if size else 0
    roll = rng.random()
    if roll < 0.6 or size == 0:
        args = (rng.randbytes(rng.randrange(0, 40)), last + 1, rng.randrange(1, 5))
        ours.add(*args)
        theirs.add(*args)
    elif roll < 0.7:
        cut = rng.randrange(0, size + 1)
        ours.deleteEntriesFrom(cut)
        theirs.deleteEntriesFrom(cut)
    elif roll < 0.8:
        cut = rng.randrange(0, size + 1)
        ours.deleteEntriesTo(cut)
        theirs.deleteEntriesTo(cut)
    elif roll < 0.85:
        ours.clear()
        theirs.clear()
    else:
        term = theirs.getCurrentTerm() + rng.randrange(0, 2)
        voted = rng.choice([None, "10.0.0.1:7000", "10.0.0.2:7000"])
        ours.setCurrentTerm(term, voted)
        theirs.setCurrentTerm(term, voted)


@pytest.mark.parametrize("seed", range(8))
def test_a_reopened_log_gives_every_group_the_state_of_the_last_sync(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    log = NodeLog(str(tmp_path), segment_bytes=4096)
    gids = ["g1", "g2", "meta"]
    ours = {gid: _journal(log, gid) for gid in gids}
    theirs = {gid: MemoryJournal() for gid in gids}
    for _ in range(600):
        gid = rng.choice(gids)
        _step(rng, ours[gid], theirs[gid])
        assert _state(ours[gid]) == _state(theirs[gid])
        if rng.random() < 0.2:
            log.sync()
    log.sync()
    _step(rng, ours["g1"], MemoryJournal())  # written, never synced: may be lost
    assert log.segments[-1].seq > 1  # rotated (and collected) along the way
    log.close()
    reopened = NodeLog(str(tmp_path), segment_bytes=4096)
    for gid in gids:
        assert _state(_journal(reopened, gid)) == _state(theirs[gid]), gid
    reopened.close()


def test_segments_rotate_and_a_quiet_group_is_carried_forward_so_old_ones_go(
    tmp_path: Path,
) -> None:
    log = NodeLog(str(tmp_path), segment_bytes=2048)
    quiet, busy = _journal(log, "quiet"), _journal(log, "busy")
    quiet.add(b"q" * 10, 1, 1)
    quiet.setCurrentTerm(1, "a:1")
    for index in range(1, 2001):
        busy.add(b"b" * 30, index, 1)
        if index % 50 == 0:
            busy.deleteEntriesTo(len(busy) - 5)  # compaction after a snapshot
            log.sync()
    log.sync()
    names = sorted(os.listdir(tmp_path))
    assert len(names) <= 6, names  # without the carry-forward, "quiet" would pin them all
    assert len(log.segments) == len(names)
    log.close()
    reopened = NodeLog(str(tmp_path), segment_bytes=2048)
    assert _state(_journal(reopened, "quiet")) == ([(b"q" * 10, 1, 1)], 1, "a:1")
    assert [e[1] for e in reopened.states["busy"].entries] == list(range(1996, 2001))
    reopened.close()


def test_a_torn_tail_is_zeroed_so_a_record_of_a_lost_write_never_comes_back(
    tmp_path: Path,
) -> None:
    """A crash during a write can leave its later pages on disk and not an earlier one: a
    whole record of the lost write behind a torn one. Replay stops at the torn one, and
    the tail is zeroed, so later writes in that place never make the stale record follow
    them."""
    log = NodeLog(str(tmp_path), segment_bytes=1 << 16)
    journal = _journal(log, "g")
    journal.add(b"kept", 1, 1)
    log.sync()
    end = log.segments[-1].size
    log.close()
    torn = rec.entry(b"g", b"lost" * 8, 2, 1)
    stale = rec.entry(b"g", b"stale", 3, 1)
    with open(log.segments[-1].path, "r+b") as f:
        f.seek(end)
        f.write(torn[:-5] + b"\xff" * 5 + stale)
    reopened = NodeLog(str(tmp_path), segment_bytes=1 << 16)
    assert _state(_journal(reopened, "g"))[0] == [(b"kept", 1, 1)]
    other = _journal(reopened, "h")
    other.add(b"y" * 32, 1, 1)  # as long as the torn record: ends where the stale one starts
    reopened.sync()
    reopened.close()
    third = NodeLog(str(tmp_path), segment_bytes=1 << 16)
    assert _state(_journal(third, "g"))[0] == [(b"kept", 1, 1)]
    assert _state(_journal(third, "h"))[0] == [(b"y" * 32, 1, 1)]
    third.close()


def test_damage_before_the_newest_segment_refuses_to_open(tmp_path: Path) -> None:
    log = NodeLog(str(tmp_path), segment_bytes=256)
    journal = _journal(log, "g")
    for index in range(1, 40):
        journal.add(b"x" * 20, index, 1)
        log.sync()
    log.close()
    oldest = Path(log.segments[0].path)
    data = bytearray(oldest.read_bytes())
    data[20] ^= 0xFF
    oldest.write_bytes(bytes(data))
    with pytest.raises(LogCorrupt, match="not the newest"):
        NodeLog(str(tmp_path), segment_bytes=256)


def test_a_failed_write_fails_every_later_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = NodeLog(str(tmp_path))
    journal = _journal(log, "g")
    journal.add(b"a", 1, 1)

    def failing(fd: int, data: object, offset: int) -> int:
        raise OSError(5, "EIO")

    monkeypatch.setattr(os, "pwrite", failing)
    with pytest.raises(OSError, match="EIO"):
        log.sync()
    monkeypatch.undo()
    journal.add(b"b", 2, 1)
    with pytest.raises(NodeLogFailed):
        log.sync()
    log.close()


def test_one_fdatasync_makes_every_groups_writes_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = NodeLog(str(tmp_path))
    writes: list[str] = []
    journals = [_journal(log, f"g{i}", writes) for i in range(16)]
    synced: list[int] = []
    fdatasync = os.fdatasync

    def counted(fd: int) -> None:
        synced.append(fd)
        fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", counted)
    for journal in journals:
        journal.add(b"cmd", 1, 1)
        journal.setCurrentTerm(1, "a:1")
    journals[0].setRaftCommitIndex(1)
    assert len(writes) == 32  # each entry and each vote asks for a sync; the commit does not
    assert log.sync() and not log.sync()
    assert len(synced) == 1


def test_a_commit_index_alone_is_stored_at_most_every_interval_and_never_asks_for_a_sync(
    tmp_path: Path,
) -> None:
    log = NodeLog(str(tmp_path))
    writes: list[str] = []
    journal = _journal(log, "g", writes)
    journal.setRaftCommitIndex(5)
    journal.store_commit(100.0)
    journal.setRaftCommitIndex(6)
    journal.store_commit(105.0)  # within 10 s of the last one: not stored
    assert writes == []
    log.sync()
    log.close()
    reopened = NodeLog(str(tmp_path))
    assert reopened.states["g"].commit == 5
    reopened.close()


def test_a_dropped_group_is_gone_after_a_reopen(tmp_path: Path) -> None:
    log = NodeLog(str(tmp_path))
    journal = _journal(log, "g")
    journal.add(b"a", 1, 1)
    journal._destroy()
    log.drop("g")
    log.close()
    reopened = NodeLog(str(tmp_path))
    assert "g" not in reopened.states
    reopened.close()


def test_one_journal_per_group_at_a_time(tmp_path: Path) -> None:
    log = NodeLog(str(tmp_path))
    journal = _journal(log, "g")
    with pytest.raises(ValueError, match="already has its journal open"):
        _journal(log, "g")
    journal._destroy()
    _journal(log, "g")


def test_a_group_directory_of_the_old_format_is_imported_once(tmp_path: Path) -> None:
    """pysyncobj's own journal file, its meta file and our vote file (the format before
    the node's log): imported into the log, the newer vote of the two, then removed."""
    group = tmp_path / "p1"
    group.mkdir()
    old = FileJournal(str(group / "raft.journal"))
    old.add(b"one", 1, 1)
    old.add(b"two", 2, 2)
    old.setCurrentTerm(2, None)
    old.setRaftCommitIndex(2)
    old.onOneSecondTimer()
    old._destroy()
    vote = encode_slot(1, Vote(3, "b:1"))  # newer than the meta file's
    (group / "raft.vote").write_bytes(vote + bytes(SLOT))
    log = NodeLog(str(tmp_path / "log"))
    import_legacy(log, "p1", str(group))
    assert sorted(os.listdir(group)) == []
    log.close()
    reopened = NodeLog(str(tmp_path / "log"))
    journal = _journal(reopened, "p1")
    assert _state(journal) == ([(b"one", 1, 1), (b"two", 2, 2)], 3, "b:1")
    assert journal.getRaftCommitIndex() == 2


def test_a_segment_is_needed_while_a_known_group_still_holds_an_entry_from_it() -> None:
    state = rec.LogState(entries=[(b"", 5, 1), (b"", 6, 1)])
    assert rec.needs_segment(state, written_whole_after=False, highest=5)
    assert rec.needs_segment(state, written_whole_after=False, highest=9)
    assert not rec.needs_segment(state, written_whole_after=False, highest=4)  # compacted
    assert not rec.needs_segment(state, written_whole_after=True, highest=9)  # rewritten
    assert not rec.needs_segment(None, written_whole_after=False, highest=9)  # dropped
    assert not rec.needs_segment(rec.LogState(), written_whole_after=False, highest=9)


def test_groups_are_carried_forward_only_once_dead_records_outweigh_live_ones() -> None:
    mib = 1 << 20
    assert not rec.carry_forward_due(2, held=100 * mib, live=0, segment_bytes=mib)
    assert not rec.carry_forward_due(3, held=4 * mib, live=mib, segment_bytes=mib)  # = bound
    assert rec.carry_forward_due(3, held=4 * mib + 1, live=mib, segment_bytes=mib)
    assert not rec.carry_forward_due(5, held=50 * mib, live=30 * mib, segment_bytes=mib)
