"""Cluster metadata for nodes outside the meta group's voters — messages and decisions, pure.

The meta Raft group has at most 5 voters (kv/voters.py); every other node reads the
metadata from a member with `meta_get` and sends keyspace changes to a voter with
`meta_change` (DESIGN.md §2: "other members read metadata without voting"). The I/O shells
are kv/meta_reader.py: `MetaReader` (a non-voter's metadata) and `MetaServer` (the handlers,
on every node).

    meta_get     MetaGet{known_epoch}    → MetaReply{epoch, voters, metadata | None,
                                                      leader, members}
                 metadata only when newer than known_epoch: an unchanged poll is a few bytes;
                 voters = node ids of the meta group's configuration as the server knows it
                 (a voter: its group's own; a reader: the last answer it had); leader and
                 members (Raft addresses) only from a voter, so a node can tell whether the
                 group's leader still counts it as a voter (kv/meta_role.py)
    meta_change  MetaChange{change, timeout_s} → MetaChangeReply{outcome, metadata}
                 served by a voter (a non-voter answers not_ready); the voter's metadata once
                 the change is applied there, so the sender reads its own write at once
    meta_join    MetaJoin{peers}         → MetaJoinReply{role}
                 the meta group's leader asks a node it is about to add as a voter to run
                 the group as a joining member with these peers (Raft addresses of the
                 configuration); idempotent: the node answers the role it now has

Invariant (kv/meta.py): equal epochs mean equal metadata, so "newer" is "higher epoch".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kv.config import ID_RE, MAX_META_VOTERS
from kv.internode import Operation, integer, number, obj
from kv.meta import Member, Metadata

MAX_EPOCH = 1 << 63
MAX_CHANGE_TIMEOUT_S = 60.0
# a configuration holds one voter more than the policy's 5 while a voter is replaced; the
# wire allows more so that an unusual configuration is still reported, not unreadable
MAX_WIRE_VOTERS = 2 * MAX_META_VOTERS + 1
MAX_ADDRESS_LEN = 300


# ---------------------------------------------------------------------- messages
@dataclass(frozen=True)
class MetaGet:
    known_epoch: int  # the asker's epoch; 0 = it has none yet

    def to_wire(self) -> dict[str, Any]:
        return {"known_epoch": self.known_epoch}

    @staticmethod
    def from_wire(raw: Any) -> MetaGet:
        return MetaGet(integer(obj(raw).get("known_epoch"), "known_epoch", 0, MAX_EPOCH))


@dataclass(frozen=True)
class MetaReply:
    epoch: int  # the server's epoch (also when it sends no metadata)
    voters: tuple[str, ...]  # the meta group's voters as the server knows them
    metadata: Metadata | None = None  # None: not newer than the asker's known_epoch
    leader: str | None = None  # a voter's: the Raft address of the leader it knows
    members: tuple[str, ...] = ()  # a voter's: its group's configuration (Raft addresses)

    def to_wire(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "voters": list(self.voters),
            "metadata": self.metadata.to_dict() if self.metadata is not None else None,
            "leader": self.leader,
            "members": list(self.members),
        }

    @staticmethod
    def from_wire(raw: Any) -> MetaReply:
        d = obj(raw, "reply")
        md, leader = d.get("metadata"), d.get("leader")
        return MetaReply(
            epoch=integer(d.get("epoch"), "epoch", 0, MAX_EPOCH),
            voters=_voters(d.get("voters")),
            metadata=None if md is None else metadata_from_wire(md),
            leader=None if leader is None else _address(leader, "leader"),
            members=_addresses(d.get("members", []), "members"),
        )


@dataclass(frozen=True)
class MetaChange:
    change: dict[str, Any]  # a kv/meta.py change; the voter's state machine validates it
    timeout_s: float

    def to_wire(self) -> dict[str, Any]:
        return {"change": self.change, "timeout_s": self.timeout_s}

    @staticmethod
    def from_wire(raw: Any) -> MetaChange:
        d = obj(raw)
        timeout = min(max(number(d.get("timeout_s"), "timeout_s"), 0.001), MAX_CHANGE_TIMEOUT_S)
        return MetaChange(obj(d.get("change"), "change"), timeout)


@dataclass(frozen=True)
class MetaChangeReply:
    outcome: dict[str, Any]  # kv/meta.py's outcome: created / updated / refused ...
    metadata: Metadata  # the voter's metadata after applying the change

    def to_wire(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "metadata": self.metadata.to_dict()}

    @staticmethod
    def from_wire(raw: Any) -> MetaChangeReply:
        d = obj(raw, "reply")
        return MetaChangeReply(obj(d.get("outcome"), "outcome"), metadata_from_wire(d["metadata"]))


Role = Literal["reader", "joining", "voter"]
ROLES: tuple[Role, ...] = ("reader", "joining", "voter")


@dataclass(frozen=True)
class MetaJoin:
    peers: tuple[str, ...]  # the group's configuration (Raft addresses), as the leader has it

    def to_wire(self) -> dict[str, Any]:
        return {"peers": list(self.peers)}

    @staticmethod
    def from_wire(raw: Any) -> MetaJoin:
        peers = _addresses(obj(raw).get("peers"), "peers")
        if not peers:
            raise ValueError("peers: the group's configuration must not be empty")
        return MetaJoin(peers)


@dataclass(frozen=True)
class MetaJoinReply:
    role: Role  # the node's role once it handled the request

    def to_wire(self) -> dict[str, Any]:
        return {"role": self.role}

    @staticmethod
    def from_wire(raw: Any) -> MetaJoinReply:
        role = obj(raw, "reply").get("role")
        for known in ROLES:
            if role == known:
                return MetaJoinReply(known)
        raise ValueError(f"role: must be one of {list(ROLES)}, got {role!r}")


META_GET = Operation("meta_get", MetaGet.from_wire, MetaReply.from_wire)
META_CHANGE = Operation("meta_change", MetaChange.from_wire, MetaChangeReply.from_wire)
META_JOIN = Operation("meta_join", MetaJoin.from_wire, MetaJoinReply.from_wire)


def metadata_from_wire(raw: Any) -> Metadata:
    """A bootstrapped Metadata from the network; ValueError naming what is wrong."""
    try:
        md = Metadata.from_dict(obj(raw, "metadata"))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"metadata: malformed ({exc!r})") from None
    if not md.bootstrapped:
        raise ValueError("metadata: epoch must be positive")
    return md


def _voters(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_WIRE_VOTERS:
        raise ValueError(f"voters must be a list of at most {MAX_WIRE_VOTERS} node ids")
    for voter in raw:
        if not isinstance(voter, str) or not ID_RE.fullmatch(voter):
            raise ValueError(f"voters: invalid node id {voter!r}")
    return tuple(raw)


def _addresses(raw: Any, name: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_WIRE_VOTERS:
        raise ValueError(f"{name} must be a list of at most {MAX_WIRE_VOTERS} addresses")
    return tuple(_address(a, name) for a in raw)


def _address(raw: Any, name: str) -> str:
    host, _, port = raw.rpartition(":") if isinstance(raw, str) else ("", "", "")
    if not host or not port.isdigit() or len(raw) > MAX_ADDRESS_LEN:
        raise ValueError(f"{name}: {raw!r} is not a host:port address")
    return str(raw)


# ---------------------------------------------------------------------- decisions
Membership = Literal["member", "joining", "id_conflict"]


def membership_of(md: Metadata, me: Member) -> Membership:
    """This node under `md`: a member (listed with exactly its advertised addresses), joining
    (not listed), or id_conflict (its id is listed at other addresses: another node's
    identity, which it must never act as — DESIGN.md §3, Raft ids match exactly)."""
    listed = md.member(me.id)
    if listed is None:
        return "joining"
    return "member" if listed == me else "id_conflict"


def newer(current: Metadata, incoming: Metadata | None) -> bool:
    return incoming is not None and incoming.epoch > current.epoch


def poll_targets(
    md: Metadata, voters: Sequence[str], seeds: Sequence[str], self_http: str, start: int
) -> list[str]:
    """HTTP addresses to read metadata from, in the order to try them: the voters (they
    apply every change first), the other members, then the seeds not among them; never this
    node. Rotated by `start`, which the caller advances past a failed target, so a dead node
    is not the first try of every poll."""
    ordered = [*voter_addresses(md, voters), *(m.http for m in md.members), *seeds]
    candidates = [a for a in dict.fromkeys(ordered) if a != self_http]
    if not candidates:
        return []
    k = start % len(candidates)
    return candidates[k:] + candidates[:k]


def voter_ids(md: Metadata, rafts: Sequence[str]) -> tuple[str, ...]:
    """Node ids of the members at these Raft addresses (a group's configuration), in the
    metadata's order; an address no member has is left out."""
    wanted = set(rafts)
    return tuple(m.id for m in md.members if m.raft in wanted)


def leader_excludes(reply: MetaReply, responder_raft: str | None, my_raft: str) -> bool:
    """Whether `reply` is the meta group's leader itself saying that its configuration does
    not hold `my_raft` (a voter removed from the group never hears of it: DESIGN.md §3).
    Only the leader's word counts: a follower's or a reader's view may be stale."""
    leads = responder_raft is not None and reply.leader == responder_raft
    return leads and bool(reply.members) and my_raft not in reply.members


def voter_addresses(md: Metadata, voters: Sequence[str]) -> list[str]:
    """HTTP addresses of the voters that `md` lists (a voter it does not list is unknown)."""
    found = (md.member(v) for v in voters)
    return [m.http for m in found if m is not None]


def next_delay(delay: float, ok: bool, interval: float, max_backoff: float) -> float:
    """The wait before the next poll: the interval after a success, doubling (capped) after
    each failed one."""
    return interval if ok else min(max(delay, interval) * 2, max_backoff)


def conflict_message(md: Metadata, me: Member) -> str:
    listed = md.member(me.id)
    return (
        f"node id {me.id!r} is a member at http={listed.http if listed else None} "
        f"raft={listed.raft if listed else None}, but this node advertises http={me.http} "
        f"raft={me.raft}: another node's identity (use a new node id)"
    )
