"""Partition sizes for membership plans — pure: the size of a stored range, the internode
operation that asks a node for the sizes it holds, which owner to ask for each moving
partition, and how the answers become each move's expected volume (docs/membership.md,
"Plan sizes").

A node keeps an exact running size of each partition it holds, per keyspace incarnation
(kv/tally.py): eventual data per partition (dynamo_mode/replica.py layout), linearizable
data per Raft group (raft_groups/state_machine.py layout). Both lay keys out as

    tag (1 byte) | scope (partition: 2 bytes, Raft group number: 3 bytes) | uid (4 bytes) | key

so the unit of a size is (scope, uid). A Raft group's uid 0 is its bookkeeping (applied
index, request-id table): it ships with the group's snapshot, so it counts toward the
group's bytes, not toward its keys.

    op          request        reply         what
    part_sizes  SizesRequest   SizesReply    the sizes of the asked partitions and groups
                                             this node can give now; a scope left out is
                                             unknown (not counted yet, or not held)

What a move is expected to carry (`move_sizes`): an eventual (n, p) move copies the keys of
every eventual keyspace with replication n in partition p (dynamo_mode/transfer.py); a
linearizable (n, p) move brings a member the group `n << 16 | p`, by snapshot and log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kv.internode import Operation, integer, number, obj
from kv.meta import Metadata, MoveKey
from kv.storage import prefix_end

MAX_SCOPES = 1 << 17  # scopes one request may name (every partition of both modes, with room)
_COUNT = 1 << 62
MAX_WAIT_S = 60.0
UID_BYTES = 4


@dataclass(frozen=True)
class Size:
    """Stored records (keys) and their bytes (key + value as stored)."""

    keys: int = 0
    bytes: int = 0

    def __add__(self, other: Size) -> Size:
        return Size(self.keys + other.keys, self.bytes + other.bytes)

    def __sub__(self, other: Size) -> Size:
        return Size(self.keys - other.keys, self.bytes - other.bytes)


@dataclass(frozen=True)
class Layout:
    """Keys `tag | scope (width bytes, big-endian) | uid (4 bytes) | ...`."""

    tag: bytes
    width: int

    def locate(self, key: bytes) -> tuple[int, int] | None:
        """(scope, uid) of a key of this layout; None for any other key."""
        start, end = len(self.tag), len(self.tag) + self.width
        if not key.startswith(self.tag) or len(key) < end + UID_BYTES:
            return None
        scope, uid = key[start:end], key[end : end + UID_BYTES]
        return int.from_bytes(scope, "big"), int.from_bytes(uid, "big")

    def range(self, scope: int) -> tuple[bytes, bytes]:
        """[start, stop) of every key of `scope`."""
        start = self.tag + scope.to_bytes(self.width, "big")
        stop = prefix_end(start)
        assert stop is not None  # a tag that is not 0xff always has an end
        return start, stop


def record(key: bytes, value: bytes | None) -> Size:
    """The size one stored record adds (nothing for an absent one)."""
    return Size(1, len(key) + len(value)) if value is not None else Size()


def group_number(replication: int, partition: int) -> int:
    """A linearizable partition's Raft group (raft_groups.placement.GroupSpec.number)."""
    return (replication << 16) | partition


# ---------------------------------------------------------------------- the operation
@dataclass(frozen=True)
class SizesRequest:
    eventual: tuple[int, ...] = ()  # partitions
    linearizable: tuple[int, ...] = ()  # Raft group numbers
    wait_s: float = 0.0  # how long the node may spend counting scopes it has not counted yet

    def to_wire(self) -> dict[str, Any]:
        return {
            "eventual": list(self.eventual),
            "linearizable": list(self.linearizable),
            "wait_s": self.wait_s,
        }

    @staticmethod
    def from_wire(raw: Any) -> SizesRequest:
        d = obj(raw)
        wait_s = number(d.get("wait_s", 0.0), "wait_s")
        if not 0 <= wait_s <= MAX_WAIT_S:
            raise ValueError(f"wait_s must be between 0 and {MAX_WAIT_S}, got {wait_s}")
        return SizesRequest(
            _scopes(d.get("eventual", []), "eventual", 1 << 16),
            _scopes(d.get("linearizable", []), "linearizable", 1 << 24),
            wait_s,
        )


@dataclass(frozen=True)
class ScopeSize:
    """One partition's (or Raft group's) size on the answering node, by keyspace uid."""

    scope: int
    by_uid: Mapping[int, Size]

    def to_wire(self) -> list[Any]:
        uids = [[uid, s.keys, s.bytes] for uid, s in sorted(self.by_uid.items())]
        return [self.scope, uids]

    @staticmethod
    def from_wire(raw: Any, limit: int) -> ScopeSize:
        if not isinstance(raw, list) or len(raw) != 2 or not isinstance(raw[1], list):
            raise ValueError("a size must be [scope, [[uid, keys, bytes], ...]]")
        by_uid: dict[int, Size] = {}
        for entry in raw[1]:
            if not isinstance(entry, list) or len(entry) != 3:
                raise ValueError("a uid's size must be [uid, keys, bytes]")
            uid = integer(entry[0], "uid", 0, 1 << 32)
            by_uid[uid] = Size(
                integer(entry[1], "keys", 0, _COUNT), integer(entry[2], "bytes", 0, _COUNT)
            )
        return ScopeSize(integer(raw[0], "scope", 0, limit), by_uid)


@dataclass(frozen=True)
class SizesReply:
    eventual: tuple[ScopeSize, ...] = ()
    linearizable: tuple[ScopeSize, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {
            "eventual": [s.to_wire() for s in self.eventual],
            "linearizable": [s.to_wire() for s in self.linearizable],
        }

    @staticmethod
    def from_wire(raw: Any) -> SizesReply:
        d = obj(raw)
        return SizesReply(
            tuple(ScopeSize.from_wire(s, 1 << 16) for s in _list(d.get("eventual", []))),
            tuple(ScopeSize.from_wire(s, 1 << 24) for s in _list(d.get("linearizable", []))),
        )


PART_SIZES = Operation("part_sizes", SizesRequest.from_wire, SizesReply.from_wire)


def _list(raw: Any) -> list[Any]:
    if not isinstance(raw, list) or len(raw) > MAX_SCOPES:
        raise ValueError(f"must be a list of at most {MAX_SCOPES} entries")
    return raw


def _scopes(raw: Any, name: str, limit: int) -> tuple[int, ...]:
    return tuple(sorted({integer(s, name, 0, limit) for s in _list(raw)}))


# ---------------------------------------------------------------------- who is asked
def sources(
    md: Metadata, moving: Iterable[MoveKey], alive: Callable[[str], bool]
) -> dict[MoveKey, str]:
    """For each moving partition, the owner asked for its size: the first of its current
    owners that is live (a partition with none live is not asked: its size is unknown)."""
    out: dict[MoveKey, str] = {}
    for key in sorted(set(moving)):
        owner = next((n for n in md.owners(*key)[0] if alive(n)), None)
        if owner is not None:
            out[key] = owner
    return out


def requests(asked: Mapping[MoveKey, str], wait_s: float = 0.0) -> dict[str, SizesRequest]:
    """One request per owner asked: the partitions and groups it is asked about."""
    eventual: dict[str, set[int]] = {}
    groups: dict[str, set[int]] = {}
    for (mode, n, p), node in asked.items():
        if mode == "eventual":
            eventual.setdefault(node, set()).add(p)
        else:
            groups.setdefault(node, set()).add(group_number(n, p))
    return {
        node: SizesRequest(
            tuple(sorted(eventual.get(node, ()))), tuple(sorted(groups.get(node, ()))), wait_s
        )
        for node in sorted({*eventual, *groups})
    }


def held(md: Metadata, node: str) -> dict[MoveKey, str]:
    """The pending moves of the plan in flight whose partition `node` serves now (a
    current owner): the sizes `node` shows for them in `/v1/cluster`."""
    t = md.transition
    pending = sorted(t.pending) if t is not None else []
    return {key: node for key in pending if node in md.owners(*key)[0]}


# ---------------------------------------------------------------------- answers → moves
def move_sizes(
    md: Metadata, asked: Mapping[MoveKey, str], replies: Mapping[str, SizesReply]
) -> dict[MoveKey, Size]:
    """The expected volume of each moving partition whose owner answered for it; a
    partition left out is unknown (its owner is down, did not answer in time, or could not
    count it yet)."""
    out: dict[MoveKey, Size] = {}
    for key, node in asked.items():
        reply = replies.get(node)
        size = _move_size(md, key, reply) if reply is not None else None
        if size is not None:
            out[key] = size
    return out


def _move_size(md: Metadata, key: MoveKey, reply: SizesReply) -> Size | None:
    mode, n, p = key
    if mode == "eventual":
        found = next((s for s in reply.eventual if s.scope == p), None)
        if found is None:
            return None
        uids = [k.uid for k in md.keyspaces if k.consistency == "eventual" and k.replication == n]
        return sum((found.by_uid.get(uid, Size()) for uid in uids), Size())
    number = group_number(n, p)
    group = next((s for s in reply.linearizable if s.scope == number), None)
    return group_size(group.by_uid) if group is not None else None


def group_size(by_uid: Mapping[int, Size]) -> Size:
    """A Raft group's size: every byte of its range (what its snapshot ships), and its data
    keys (uid 0 is the group's bookkeeping, not keys)."""
    total = sum(by_uid.values(), Size())
    return Size(total.keys - by_uid.get(0, Size()).keys, total.bytes)
