"""Group commit of one group's Raft state (docs/raft.md "Durability"): whatever pysyncobj
wrote in a driver cycle is made durable by one call, `GroupDurability.sync`, which the
driver makes before any message of that cycle leaves the node (`RaftDriver.cycle`).

- **Journal.** pysyncobj writes it through mmap and never syncs it (upstream #84);
  `mmap.flush()` (msync) would hold the GIL for its whole wait (CPython does not release
  it), stalling the node's asyncio thread. Every write of the journal is watched
  (`shim.watch_journal`); a journal written since the last sync gets one `os.fdatasync`
  on its file (`shim.journal_fd`), which releases the GIL.
- **Term and vote** (Raft fig. 2: "updated on stable storage before responding to
  RPCs"). pysyncobj stores them with the commit index in `raft.journal.meta` by a write
  and a rename, without fsync — after a power loss a node could vote twice in one term
  (issue 11). That file is also rewritten with a new commit index (once a second by
  pysyncobj, at most every 10 s here: `MetaThrottle`); syncing each of those writes would
  cost an fsync per busy group, and renaming an
  unsynced file over a synced one could replace the durable vote by an empty file. So the
  durable copy is a file of its own, `raft.vote` (`VoteFile`), written only when the term
  or the vote changed — on elections — in place: two checksummed 512-byte slots, a new
  vote into the slot that does not hold the durable one, then one fdatasync (the file's
  size never changes, so no directory or inode sync: measured 3-4x cheaper than a
  rename and a directory fsync, which slowed elections of 64 groups at once). A torn
  slot fails its checksum and the other slot, the previous vote, is read. `restore_vote`,
  before pysyncobj reads its meta file, puts the durable vote back into it if the file
  lost it (`raft.journal.meta` stays process-crash durable, as before).
- **Files.** A new group's data directory and its files are fsynced into their parent
  directories at its first sync (`sync_new_dir`), before anything of it leaves the node,
  so a synced journal or vote file cannot vanish with its directory entry.

Which groups have something to sync is kept by the driver (`RaftDriver.needs_sync`, called
from the watches), so a sync step visits only those.
"""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kv.files import sync_dir, write_durably
from raft_groups.syncobj_adapter import shim

VOTE_FILE = "raft.vote"


@dataclass(frozen=True)
class Vote:
    """A member's persistent Raft state besides its log: currentTerm and votedFor."""

    term: int = 0
    voted_for: str | None = None

    def newer_than(self, other: Vote) -> bool:
        """Whether this state came after `other` (terms only grow; within a term the vote
        goes from None to a candidate, once)."""
        if self.term != other.term:
            return self.term > other.term
        return other.voted_for is None and self.voted_for is not None


def vote_in(meta: dict[str, Any]) -> Vote:
    """The term and vote of pysyncobj's meta dict (its keys)."""
    voted = meta.get("votedForNodeId")
    return Vote(int(meta.get("currentTerm", 0)), None if voted is None else str(voted))


@dataclass
class MetaThrottle:
    """Which of pysyncobj's journal meta stores to let through (pure; `now` any clock).

    pysyncobj rewrites and renames its meta file (term, vote, commit index) once a second
    per group whose commit index moved: with 64 busy groups, 64 renames a second per node,
    about 6 % of a loaded node's samples (docs/benchmarks.md, issue 10 profile). The commit
    index is volatile state in Raft (fig. 2): a restarted member learns it from the leader,
    and one stored late only means that less of the log is applied before it hears one. So
    a store that changes only the commit index goes through at most every `interval`
    seconds; one that changes the term or the vote always does (they are also in the synced
    vote file, `write_vote`)."""

    interval: float = 10.0
    stored: Vote | None = None
    stored_at: float = -float("inf")

    def lets(self, meta: dict[str, Any], now: float) -> bool:
        vote = vote_in(meta)
        if vote != self.stored or now - self.stored_at >= self.interval:
            self.stored, self.stored_at = vote, now
            return True
        return False


SLOT = 512  # one sector: a slot is written whole or fails its checksum


def encode_slot(seq: int, vote: Vote) -> bytes:
    """One slot: length, JSON {seq, term, voted_for}, CRC-32 of the JSON, zero padding."""
    payload = json.dumps({"seq": seq, "term": vote.term, "voted_for": vote.voted_for}).encode()
    record = struct.pack("<I", len(payload)) + payload + struct.pack("<I", zlib.crc32(payload))
    if len(record) > SLOT:
        raise ValueError(f"a vote for {vote.voted_for!r} does not fit a {SLOT}-byte slot")
    return record.ljust(SLOT, b"\0")


def decode_slot(raw: bytes) -> tuple[int, Vote] | None:
    """(seq, vote) of a slot, or None if it is empty, torn or corrupt."""
    try:
        (size,) = struct.unpack_from("<I", raw)
        payload = raw[4 : 4 + size]
        (crc,) = struct.unpack_from("<I", raw, 4 + size)
        if len(payload) != size or crc != zlib.crc32(payload):
            return None
        doc = json.loads(payload)
        voted = doc["voted_for"]
        return int(doc["seq"]), Vote(int(doc["term"]), None if voted is None else str(voted))
    except (struct.error, ValueError, KeyError, TypeError):
        return None


def read_slots(path: str) -> tuple[int, Vote] | None:
    """The newest valid slot of a vote file: (seq, vote), None if there is none."""
    try:
        with open(path, "rb") as f:
            raw = f.read(2 * SLOT)
    except OSError:
        return None  # never written (sync_journal off, or a group older than the file)
    slots = [decode_slot(raw[i * SLOT : (i + 1) * SLOT]) for i in range(2)]
    return max((slot for slot in slots if slot is not None), default=None, key=lambda s: s[0])


def read_vote(path: str) -> Vote | None:
    slot = read_slots(path)
    return None if slot is None else slot[1]


class VoteFile:
    """A group's durable term and vote: `write` returns once the vote is on disk."""

    def __init__(self, path: str) -> None:
        self.path = path
        slot = read_slots(path)
        self.seq, self.durable = slot if slot is not None else (0, Vote())
        if not os.path.exists(path):  # two empty slots: lost, they read as no vote either
            with open(path, "wb") as f:
                f.write(bytes(2 * SLOT))  # the directory entry: the group's first sync

    def write(self, vote: Vote) -> None:
        """Into the slot that does not hold the durable vote, then fdatasync."""
        seq = self.seq + 1
        self._write_at((seq % 2) * SLOT, encode_slot(seq, vote))
        self.seq, self.durable = seq, vote

    def _write_at(self, offset: int, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, data, offset)
            os.fdatasync(fd)
        finally:
            os.close(fd)


def sync_new_dir(data_dir: str) -> None:
    """Make a group's directory entries durable: its files in it, it in its parent."""
    path = os.path.abspath(data_dir)
    sync_dir(path)
    sync_dir(os.path.dirname(path))


def restore_vote(data_dir: str, meta_path: str) -> None:
    """Before pysyncobj reads `meta_path` at start: if it holds an older term or vote than
    the durable vote file (lost in a power loss: written without fsync), put the durable
    one back, keeping the rest of the meta (the commit index) when the file is readable."""
    durable = read_vote(os.path.join(data_dir, VOTE_FILE))
    if durable is None:
        return
    meta = shim.read_meta(meta_path)
    if durable.newer_than(vote_in(meta)):
        meta.update(currentTerm=durable.term, votedForNodeId=durable.voted_for)
        write_durably(meta_path, shim.encode_meta(meta))


class GroupDurability:
    """The journal and vote file of one group's SyncObj, synced by `sync` (driver thread).

    `changed()` is called when something needs syncing (the driver's `needs_sync`): once
    per journal between two syncs, at each new term or vote."""

    def __init__(self, obj: Any, data_dir: str, changed: Callable[[], None]) -> None:
        self._obj = obj
        self._changed = changed
        self.votes = VoteFile(os.path.join(data_dir, VOTE_FILE))
        self.pending: Vote | None = None  # a term or vote not yet in the vote file
        self.journal_written = True  # pysyncobj's first entry, written before the watch
        self.vote_syncs = 0
        self._new_dir: str | None = data_dir  # its entries are synced at the first sync
        shim.watch_journal(obj, self._journal_written)
        throttle = MetaThrottle()
        shim.watch_meta(obj, self._meta_stored, lambda meta: throttle.lets(meta, time.monotonic()))

    def _journal_written(self) -> None:
        if not self.journal_written:
            self.journal_written = True
            self._changed()

    def _meta_stored(self, meta: dict[str, Any]) -> None:
        vote = vote_in(meta)
        if vote not in (self.votes.durable, self.pending):  # else only the commit index moved
            self.pending = vote
            self._changed()

    def sync(self) -> bool:
        """Make the journal and the term/vote durable; True if the journal was synced.
        The first call also syncs the group's new directory entries (not at creation: a
        node creates all its groups in one driver call, and the sync steps sync many
        groups at once)."""
        if self._new_dir is not None:
            sync_new_dir(self._new_dir)
            self._new_dir = None
        journal = self.journal_written
        if journal:
            os.fdatasync(shim.journal_fd(self._obj))
            self.journal_written = False
        if self.pending is not None:
            self.votes.write(self.pending)
            self.pending = None
            self.vote_syncs += 1
        return journal
