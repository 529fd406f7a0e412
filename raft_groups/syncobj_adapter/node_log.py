"""The node's Raft log: every group's journal, term and vote in one append-only log, made
durable by one write and one fdatasync per driver sync step (docs/raft.md "Durability").
Before it, each group had its own pysyncobj journal file and vote file, and a cycle that
changed k groups waited for k fdatasyncs (issue 10: about 0.7 of the 2.4 ms of server CPU
per linearizable put, docs/benchmarks.md "Session 10").

- `GroupJournal` is what a group's SyncObj uses as its journal (pysyncobj's `Journal`
  methods, handed in through `shim._create_journal`): entries in memory, each change a
  record (log_records.py) in the log's buffer; a change that must be durable before a
  message vouches for it (an entry, a truncation, a term or vote) calls the group's
  `written`, the driver's `needs_sync`.
- `NodeLog.sync` writes the buffer and fdatasyncs it (driver thread, in the sync step,
  before the flush). A failed write or sync leaves the log failed for good: what the
  kernel kept of it is unknown, and a record appended after a torn one would be lost at
  replay, so every later `sync` raises and each group that writes is fenced.
- Segments: `<seq>.log` files of about `segment_bytes`, created at that length (sparse:
  zeros) and written in place — an fdatasync after an append that grows the file also
  commits its size (measured here: 190 µs against 125 µs in place). A new one starts with every
  group's term, vote and commit index. The oldest is deleted once no group needs an entry
  in it (`_needed`); when the segments hold more than twice the live entries (and two
  segments), the groups that pin the oldest are written again, whole, into the newest
  (`_carry_forward`), so a group that went quiet cannot keep old segments for ever.
- Opening replays every segment in order, each up to its first record that is not whole
  and valid; only zeros may follow it, except in the newest segment, where a crash may
  have left part of a write: that tail is zeroed (cut off and the file extended again),
  so a record of a lost write can never reappear behind later ones. Anything else after
  the records is damage: `LogCorrupt`, and the node does not start.

Threads: everything runs on the driver thread under the driver lock (pysyncobj's journal
calls, the sync step, group creation and `drop`).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kv.files import sync_dir
from raft_groups.syncobj_adapter import log_records as rec
from raft_groups.syncobj_adapter.log_records import Entry, LogCorrupt, LogState

SEGMENT_BYTES = 64 << 20
SUFFIX = ".log"

__all__ = ["GroupJournal", "LogCorrupt", "NodeLog", "NodeLogFailed"]


class NodeLogFailed(OSError):
    """An earlier write or fdatasync of the node's log failed; nothing more is durable."""


@dataclass
class Segment:
    seq: int
    path: str
    size: int = 0
    pins: dict[str, int] = field(default_factory=dict)  # gid → highest entry index here


class NodeLog:
    """One node's Raft log (see the module docstring)."""

    def __init__(
        self, directory: str, sync: bool = True, segment_bytes: int = SEGMENT_BYTES
    ) -> None:
        self.directory = directory
        self.sync_enabled = sync  # False: survives a process crash, not a power loss
        self.segment_bytes = segment_bytes
        self.states: dict[str, LogState] = {}
        self.segments: list[Segment] = []
        self.syncs = 0  # fdatasyncs so far (ops and tests)
        self.failed: OSError | None = None
        self._pending: list[bytes] = []
        self._reset: dict[str, int] = {}  # gid → segment of its last CLEAR
        self._open_gids: set[str] = set()
        self._fd = -1
        self._open()

    # ------------------------------------------------------------------ opening
    def _open(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        names = sorted(n for n in os.listdir(self.directory) if n.endswith(SUFFIX))
        for position, name in enumerate(names):
            self._replay(os.path.join(self.directory, name), last=position == len(names) - 1)
        if not self.segments:
            self._new_segment(1)
        else:
            self._fd = os.open(self.segments[-1].path, os.O_WRONLY)

    def _replay(self, path: str, last: bool) -> None:
        data = _written_part(path)
        records, end = rec.decode(data)
        if data.count(0, end) != len(data) - end:
            if not last:
                raise LogCorrupt(
                    f"raft log {path}: a damaged record at byte {end} of {len(data)} in a "
                    "segment that is not the newest; restore this node's data or remove it "
                    "from the cluster and add it again"
                )
            with open(path, "r+b") as f:  # the part of a write a crash left: zeros
                f.truncate(end)
                f.truncate(max(end, self.segment_bytes))
                os.fsync(f.fileno())
        segment = Segment(int(os.path.basename(path)[: -len(SUFFIX)]), path, end)
        for record, _size in records:
            rec.replay(self.states, record)
            if record.kind == rec.ENTRY:
                segment.pins[record.gid] = max(record.index, segment.pins.get(record.gid, 0))
            elif record.kind == rec.CLEAR:
                self._reset[record.gid] = segment.seq
        self.segments.append(segment)

    def _new_segment(self, seq: int) -> None:
        path = os.path.join(self.directory, f"{seq:016d}{SUFFIX}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.ftruncate(fd, self.segment_bytes)
        os.fsync(fd)
        sync_dir(self.directory)
        if self._fd >= 0:
            os.ftruncate(self._fd, self.segments[-1].size)  # its zeros (lost: still zeros)
            os.close(self._fd)
        self._fd = fd
        self.segments.append(Segment(seq, path))

    # ------------------------------------------------------------------ groups
    def journal(self, gid: str, written: Callable[[], None]) -> GroupJournal:
        """The journal of group `gid` (one at a time: its `_destroy`, which pysyncobj calls
        when the SyncObj is destroyed, ends it)."""
        if gid in self._open_gids:
            raise ValueError(f"raft group {gid} already has its journal open")
        self._open_gids.add(gid)
        return GroupJournal(self, gid, self.states.setdefault(gid, LogState()), written)

    def adopt(self, gid: str, state: LogState) -> None:
        """Write `state` as group `gid`'s whole state (a journal of the format before this
        log, imported once) and sync it."""
        self.states[gid] = state
        self._pending.extend(self._whole(gid, state))
        self.sync()

    def drop(self, gid: str) -> None:
        """Forget group `gid` (its member was removed from this node), durably."""
        self.states.pop(gid, None)
        self._pending.append(rec.frame(rec.encode_gid(gid), rec.DROP, b""))
        self.sync()

    def release(self, gid: str) -> None:
        self._open_gids.discard(gid)

    def append(self, record: bytes) -> None:
        self._pending.append(record)

    def pin(self, gid: str, index: int) -> None:
        pins = self.segments[-1].pins
        if pins.get(gid, 0) < index:
            pins[gid] = index

    def cleared(self, gid: str) -> None:
        self._reset[gid] = self.segments[-1].seq

    # ------------------------------------------------------------------ sync
    def sync(self) -> bool:
        """Write what was appended since the last call and fdatasync it; True if anything
        was written. Raises `NodeLogFailed` once any write or sync has failed."""
        if self.failed is not None:
            raise NodeLogFailed(f"the node's raft log failed earlier: {self.failed}")
        if not self._pending:
            return False
        data, self._pending = b"".join(self._pending), []
        try:
            self._write(data)
            if self.segments[-1].size >= self.segment_bytes:
                self._rotate()
        except OSError as exc:
            self.failed = exc
            raise
        return True

    def _write(self, data: bytes) -> None:
        segment, view = self.segments[-1], memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, segment.size)
            segment.size += written
            view = view[written:]
        if self.sync_enabled:
            os.fdatasync(self._fd)
        self.syncs += 1

    def _rotate(self) -> None:
        """Start the next segment with every group's term, vote and commit index (and the
        whole state of the groups `_carry_forward` picks), then delete the segments no
        group needs."""
        self._new_segment(self.segments[-1].seq + 1)
        head = [r for gid, state in self.states.items() for r in _meta(gid, state)]
        for gid in self._carry_forward():
            head.extend(self._whole(gid, self.states[gid]))
        self._write(b"".join(head))
        while len(self.segments) > 1 and not self._needed(self.segments[0]):
            os.unlink(self.segments.pop(0).path)
        sync_dir(self.directory)

    def _carry_forward(self) -> list[str]:
        """The groups to write again whole: those that pin the oldest segment, once the
        segments hold more than twice the live entries plus two segments."""
        live = sum(state.size for state in self.states.values())
        held = sum(segment.size for segment in self.segments)
        if not rec.carry_forward_due(len(self.segments), held, live, self.segment_bytes):
            return []
        return [gid for gid in self.segments[0].pins if self._pins(self.segments[0], gid)]

    def _needed(self, segment: Segment) -> bool:
        return any(self._pins(segment, gid) for gid in segment.pins)

    def _pins(self, segment: Segment, gid: str) -> bool:
        """Whether replaying without `segment` could lose one of `gid`'s entries."""
        whole_after = self._reset.get(gid, 0) > segment.seq
        return rec.needs_segment(self.states.get(gid), whole_after, segment.pins[gid])

    def _whole(self, gid: str, state: LogState) -> list[bytes]:
        raw = rec.encode_gid(gid)
        records = [rec.frame(raw, rec.CLEAR, b"")]
        records += [rec.entry(raw, c, i, t) for c, i, t in state.entries]
        self.cleared(gid)
        if state.entries:
            self.pin(gid, state.entries[-1][1])
        return records + _meta(gid, state)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _meta(gid: str, state: LogState) -> list[bytes]:
    raw = rec.encode_gid(gid)
    return [rec.vote(raw, state.term, state.voted_for), rec.at(raw, rec.COMMIT, state.commit)]


COMMIT_EVERY = 10.0  # seconds between stored commit indexes of one group


class GroupJournal:
    """pysyncobj's `Journal` interface over one group's part of the node's log.

    Positions in `deleteEntriesFrom` / `deleteEntriesTo` are list positions, as
    pysyncobj passes them; the records name entry indexes. The commit index is volatile
    state (Raft fig. 2): a restarted member learns it from the leader, so it is stored
    only every `COMMIT_EVERY` seconds (`onOneSecondTimer`) and at segment starts, and
    never makes a sync necessary."""

    def __init__(
        self, log: NodeLog, gid: str, state: LogState, written: Callable[[], None]
    ) -> None:
        self._log = log
        self.gid = gid
        self._raw = rec.encode_gid(gid)
        self.state = state
        self._written = written
        self._commit_stored = state.commit
        self._commit_due = 0.0

    def add(self, command: bytes, idx: int, term: int) -> None:
        entry: Entry = (bytes(command), idx, term)
        self.state.add(entry, rec.entry_size(entry))
        self._log.append(rec.entry(self._raw, entry[0], idx, term))
        self._log.pin(self.gid, idx)
        self._written()

    def clear(self) -> None:
        self.state.clear()
        self._log.append(rec.frame(self._raw, rec.CLEAR, b""))
        self._log.cleared(self.gid)
        self._written()

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802, N803 - pysyncobj's
        entries = self.state.entries
        if entryFrom < len(entries):
            index = entries[entryFrom][1]
            self.state.truncate_from(index)
            self._log.append(rec.at(self._raw, rec.TRUNCATE, index))
            self._written()

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802, N803 - pysyncobj's
        entries = self.state.entries
        if entryTo <= 0 or not entries:
            return
        index = entries[entryTo][1] if entryTo < len(entries) else entries[-1][1] + 1
        self.state.compact_to(index)
        self._log.append(rec.at(self._raw, rec.COMPACT, index))
        self._written()

    def __getitem__(self, item: int | slice) -> Entry | list[Entry]:
        return self.state.entries[item]

    def __len__(self) -> int:
        return len(self.state.entries)

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:  # noqa: N802, N803
        self.state.commit = raftCommitIndex

    def getRaftCommitIndex(self) -> int:  # noqa: N802
        return self.state.commit

    def setCurrentTerm(self, term: int, votedForNodeId: str | None) -> None:  # noqa: N802, N803
        self.state.term, self.state.voted_for = term, votedForNodeId
        self._log.append(rec.vote(self._raw, term, votedForNodeId))
        self._written()  # fig. 2: on stable storage before responding to RPCs

    def getCurrentTerm(self) -> int:  # noqa: N802
        return self.state.term

    def getVotedForNodeId(self) -> str | None:  # noqa: N802
        return self.state.voted_for

    def onOneSecondTimer(self) -> None:  # noqa: N802
        self.store_commit(time.monotonic())

    def store_commit(self, now: float) -> None:
        if self.state.commit != self._commit_stored and now >= self._commit_due:
            self._log.append(rec.at(self._raw, rec.COMMIT, self.state.commit))
            self._commit_stored, self._commit_due = self.state.commit, now + COMMIT_EVERY

    def flush(self) -> None:
        """pysyncobj's name for a sync; the driver's sync step is the only one."""

    def _destroy(self) -> None:
        """The SyncObj is destroyed: its state stays in the log; the gid may open again."""
        self._log.release(self.gid)

    @property
    def size(self) -> int:
        """Bytes of this group's retained entries (compaction by bytes)."""
        return self.state.size


def _written_part(path: str) -> bytes:
    """The bytes of a segment up to where only a hole follows (SEEK_HOLE: a sparse file's
    unwritten rest reads as zeros), so opening does not read 64 MiB of zeros per
    segment. Where the filesystem knows no holes, the whole file."""
    with open(path, "rb") as f:
        fd = f.fileno()
        end = hole = os.fstat(fd).st_size
        try:
            hole = os.lseek(fd, 0, os.SEEK_HOLE)
            if hole < end:
                os.lseek(fd, hole, os.SEEK_DATA)  # data after the hole: read it all
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but the hole from there on
                end = hole
        f.seek(0)
        return f.read(end)
