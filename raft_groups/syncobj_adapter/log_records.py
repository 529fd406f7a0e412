"""The records of a node's Raft log (node_log.py) and what replaying them builds. Pure.

One log per node holds every group's journal, term and vote (docs/raft.md "Durability"),
so a driver cycle makes everything its groups wrote durable with one fdatasync
(Raft thesis §10.2.2, batching; etcd's WAL does the same for its one group).

A record is `<I length><I crc32 of payload>payload`; a payload starts with
`<B kind><B len(gid)>gid` and goes on by kind:

| kind     | rest                        | replay (on the group's `LogState`)              |
|----------|-----------------------------|--------------------------------------------------|
| ENTRY    | `<QQ index term>` command   | append (command, index, term)                    |
| TRUNCATE | `<Q index>`                 | drop the entries at `index` and after            |
| COMPACT  | `<Q index>`                 | drop the entries before `index` (a snapshot has them) |
| CLEAR    |                             | drop every entry (a snapshot installed)          |
| VOTE     | `<Q term>` voted_for        | currentTerm, votedFor (empty: none)              |
| COMMIT   | `<Q index>`                 | the commit index (volatile state, stored lazily) |
| DROP     |                             | forget the group (its member was removed here)   |

Invariant: a group's entries are in log order with consecutive indexes (pysyncobj's
journal keeps them so), which `truncate_from` and `compact_to` rely on.
A record whose length runs past the end of the data or whose checksum fails ends the
decoding: the tail a crash tore off (`decode` says where the good records end).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

ENTRY, TRUNCATE, COMPACT, CLEAR, VOTE, COMMIT, DROP = range(1, 8)
KINDS = frozenset((ENTRY, TRUNCATE, COMPACT, CLEAR, VOTE, COMMIT, DROP))
HEADER = struct.Struct("<II")
INDEX = struct.Struct("<Q")
INDEX_TERM = struct.Struct("<QQ")
ENTRY_OVERHEAD = HEADER.size + 2 + INDEX_TERM.size  # plus the gid and the command
MAX_RECORD = 1 << 30  # a longer length field is a torn or foreign header

Entry = tuple[bytes, int, int]  # pysyncobj's journal entry: (command, index, term)


class LogCorrupt(ValueError):
    """A record before the end of a segment that is not the last one fails its checks."""


@dataclass
class LogState:
    """One group's part of the node's log, as pysyncobj's journal sees it."""

    entries: list[Entry] = field(default_factory=list)
    term: int = 0
    voted_for: str | None = None
    commit: int = 1  # pysyncobj's default for a journal that never stored one
    size: int = 0  # bytes of the entries' records: compaction by bytes (GroupSettings)

    def add(self, entry: Entry, size: int) -> None:
        self.entries.append(entry)
        self.size += size

    def truncate_from(self, index: int) -> None:
        cut = self._position(index)
        self.size -= sum(entry_size(e) for e in self.entries[cut:])
        del self.entries[cut:]

    def compact_to(self, index: int) -> None:
        cut = self._position(index)
        self.size -= sum(entry_size(e) for e in self.entries[:cut])
        del self.entries[:cut]

    def clear(self) -> None:
        self.entries, self.size = [], 0

    def _position(self, index: int) -> int:
        """Where the entry with `index` is (or would be) in `entries`, clamped to them."""
        if not self.entries:
            return 0
        return min(max(index - self.entries[0][1], 0), len(self.entries))


def entry_size(entry: Entry) -> int:
    return ENTRY_OVERHEAD + len(entry[0])  # the gid's bytes are left out: a constant


def frame(gid: bytes, kind: int, body: bytes) -> bytes:
    payload = bytes((kind, len(gid))) + gid + body
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def entry(gid: bytes, command: bytes, index: int, term: int) -> bytes:
    return frame(gid, ENTRY, INDEX_TERM.pack(index, term) + command)


def at(gid: bytes, kind: int, index: int) -> bytes:
    """A TRUNCATE, COMPACT or COMMIT record."""
    return frame(gid, kind, INDEX.pack(index))


def vote(gid: bytes, term: int, voted_for: str | None) -> bytes:
    return frame(gid, VOTE, INDEX.pack(term) + (voted_for or "").encode())


def encode_gid(gid: str) -> bytes:
    raw = gid.encode()
    if not raw or len(raw) > 255:
        raise ValueError(f"group id {gid!r} must be 1 to 255 bytes")
    return raw


@dataclass(frozen=True)
class Record:
    gid: str
    kind: int
    index: int = 0  # ENTRY, TRUNCATE, COMPACT, COMMIT; the term of a VOTE
    term: int = 0  # ENTRY
    data: bytes = b""  # ENTRY: the command; VOTE: voted_for


def decode(buf: bytes) -> tuple[list[tuple[Record, int]], int]:
    """The good records of `buf`, each with its size, and the offset where they end."""
    records, offset = [], 0
    for record, size in _records(memoryview(buf)):
        records.append((record, size))
        offset += size
    return records, offset


def _records(view: memoryview) -> Iterator[tuple[Record, int]]:
    offset = 0
    while offset + HEADER.size <= len(view):
        length, crc = HEADER.unpack_from(view, offset)
        start, end = offset + HEADER.size, offset + HEADER.size + length
        if length < 2 or length > MAX_RECORD or end > len(view):
            return
        payload = bytes(view[start:end])
        if zlib.crc32(payload) != crc or payload[0] not in KINDS:
            return
        record = _record(payload)
        if record is None:
            return
        yield record, end - offset
        offset = end


def _record(payload: bytes) -> Record | None:
    kind, size = payload[0], payload[1]
    body = payload[2 + size :]
    try:
        gid = payload[2 : 2 + size].decode()
        if kind == ENTRY:
            index, term = INDEX_TERM.unpack_from(body)
            return Record(gid, kind, index, term, body[INDEX_TERM.size :])
        if kind in (TRUNCATE, COMPACT, COMMIT):
            return Record(gid, kind, INDEX.unpack_from(body)[0])
        if kind == VOTE:
            return Record(gid, kind, INDEX.unpack_from(body)[0], data=body[INDEX.size :])
        return Record(gid, kind)
    except (struct.error, UnicodeDecodeError):
        return None


def replay(states: dict[str, LogState], record: Record) -> None:
    """Apply one record to the groups' states (the table in the module docstring)."""
    kind = record.kind
    if kind == DROP:
        states.pop(record.gid, None)
        return
    state = states.setdefault(record.gid, LogState())
    if kind == ENTRY:
        added = (record.data, record.index, record.term)
        state.add(added, entry_size(added))
    elif kind == TRUNCATE:
        state.truncate_from(record.index)
    elif kind == COMPACT:
        state.compact_to(record.index)
    elif kind == CLEAR:
        state.clear()
    elif kind == VOTE:
        state.term, state.voted_for = record.index, record.data.decode() or None
    elif kind == COMMIT:
        state.commit = record.index


# ---------------------------------------------------------------------- segment collection
def needs_segment(state: LogState | None, written_whole_after: bool, highest: int) -> bool:
    """Whether replaying the log without a segment could lose one of a group's entries:
    the group is still known (not dropped), it was not written whole into a later segment
    (a CLEAR there, then every entry), and its oldest retained entry is at or below
    `highest`, the highest index the segment holds for it. Segments are deleted oldest
    first, so a TRUNCATE, COMPACT or CLEAR in a deleted segment only ever concerned
    entries in it or in older, also deleted, segments."""
    if state is None or written_whole_after:
        return False
    return bool(state.entries) and state.entries[0][1] <= highest


def carry_forward_due(segments: int, held: int, live: int, segment_bytes: int) -> bool:
    """Whether to write again, whole, the groups that pin the oldest segment: once there
    are at least three segments and they hold (`held` bytes) more than twice the live
    entries (`live` bytes) plus two segments — so a rewrite's cost is paid by at least as
    many bytes of dead records, and a quiet group cannot keep old segments for ever."""
    return segments >= 3 and held > 2 * live + 2 * segment_bytes
