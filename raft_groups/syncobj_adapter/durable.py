"""What a group keeps on disk besides its part of the node's log (node_log.py), and the
import of a group's files from the format before that log.

- **Files.** A new group's data directory (its snapshot file) is fsynced into its parent
  directory at its first sync (`sync_new_dir`), before anything of it leaves the node, so
  a synced snapshot cannot vanish with its directory entry.
- **The format before the node's log.** Each group had its own pysyncobj journal file
  (`raft.journal`, never synced by pysyncobj: we fdatasynced it), pysyncobj's meta file
  (`raft.journal.meta`: term, vote, commit index, renamed without fsync) and our durable
  vote file (`raft.vote`: two checksummed 512-byte slots, the newer one valid). A group
  whose directory still holds them and that the node's log does not know yet is imported
  once (`legacy_state`, the newer of the two votes), synced into the log, and then the old
  files are removed (`remove_legacy`).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kv.files import sync_dir
from raft_groups.syncobj_adapter import shim
from raft_groups.syncobj_adapter.log_records import LogState, entry_size

if TYPE_CHECKING:
    from raft_groups.syncobj_adapter.node_log import NodeLog

VOTE_FILE = "raft.vote"
JOURNAL_FILE = "raft.journal"  # pysyncobj's; its meta file adds ".meta"


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


def sync_new_dir(data_dir: str) -> None:
    """Make a group's directory entries durable: its files in it, it in its parent."""
    path = os.path.abspath(data_dir)
    sync_dir(path)
    sync_dir(os.path.dirname(path))


def legacy_state(data_dir: str) -> LogState | None:
    """A group's journal, term, vote and commit index in the format before the node's
    log, or None if `data_dir` holds no such journal."""
    path = os.path.join(data_dir, JOURNAL_FILE)
    if not os.path.exists(path):
        return None
    entries, meta = shim.read_file_journal(path)
    vote = vote_in(meta)
    durable = read_vote(os.path.join(data_dir, VOTE_FILE))
    if durable is not None and durable.newer_than(vote):
        vote = durable
    state = LogState(term=vote.term, voted_for=vote.voted_for)
    state.commit = int(meta.get("raftCommitIndex", 1))
    for entry in entries:
        state.add(entry, entry_size(entry))
    return state


def remove_legacy(data_dir: str) -> None:
    """Remove the files `legacy_state` read (after the log has them on disk)."""
    for name in (JOURNAL_FILE, JOURNAL_FILE + ".meta", VOTE_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(data_dir, name))
    sync_dir(data_dir)


def import_legacy(log: NodeLog, gid: str, data_dir: str) -> None:
    """A group directory of the format before the node's log: its journal, term and vote
    go into the log once (synced), then its old files are removed."""
    if gid in log.states:
        return
    state = legacy_state(data_dir)
    if state is not None:
        log.adopt(gid, state)
        remove_legacy(data_dir)
