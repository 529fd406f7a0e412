"""Membership plans: staged changes → the placement they lead to and every replica that moves
(DESIGN.md §2 "plan → commit", Riak's `cluster plan`). Pure.

`make_plan(metadata, changes, sizes)` validates the changes against the metadata, applies them
in order to the claim (kv/claim.py), and lists the moves per keyspace mode and replication
factor in use: eventual replicas move by handoff, linearizable ones by Raft reconfiguration
of the partition's group. The plan is a deterministic function of its inputs; its `plan_id`
hashes the metadata epoch and the changes, so a commit that names a plan made against
metadata that has changed since is refused (Riak's claimant `plan_changed`).

`sizes` (kv/sizes.py: what the partitions' owners reported) give each move its expected
volume: the size of the partition it copies. They never enter the `plan_id` — the commit
recomputes the plan inside the meta group without them. A move whose partition's size is
not known has `bytes` None (`null`), never a guessed 0; the summary counts those moves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from kv import claim
from kv.errors import InvalidRequest, KeyspaceConflict
from kv.meta import Member, Metadata, MoveKey
from kv.sizes import Size

ChangeKind = Literal["add", "remove", "replace"]


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    node: str  # add: the newcomer; remove: the member leaving; replace: the member replaced
    member: Member | None = None  # add / replace: the newcomer's id and addresses
    force: bool = False  # remove: the node is gone for good (rebuild from the survivors)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "node": self.node}
        if self.member is not None:
            out["member"] = self.member.to_dict()
        if self.force:
            out["force"] = True
        return out

    @staticmethod
    def from_wire(raw: Any) -> Change:
        if not isinstance(raw, dict):
            raise InvalidRequest("changes", "each change must be a JSON object")
        kind = raw.get("kind")
        if kind not in ("add", "remove", "replace"):
            raise InvalidRequest("kind", f"must be add, remove or replace, got {kind!r}")
        node = raw.get("node")
        if not isinstance(node, str) or not node:
            raise InvalidRequest("node", "must be a node id")
        member = _member(raw.get("member")) if kind != "remove" else None
        if kind != "remove" and member is None:
            raise InvalidRequest("member", f"{kind} needs the new node's id, http and raft")
        return Change(kind, node, member, force=raw.get("force") is True)


def _member(raw: Any) -> Member | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), str) for k in _ADDR):
        raise InvalidRequest("member", "must be {id, http, raft} strings")
    return Member.from_dict(raw)


_ADDR = ("id", "http", "raft")


@dataclass(frozen=True)
class PlannedMove:
    mode: str  # "eventual" (handoff) or "linearizable" (Raft reconfiguration)
    replication: int
    partition: int
    source: str | None  # None: no copy to stream from here (the list grows)
    target: str | None  # None: the replica is dropped (the list shrinks)
    size: Size | None = None  # what it copies (None: not known); a dropped replica copies nothing

    @property
    def key(self) -> MoveKey:
        return (self.mode, self.replication, self.partition)

    @property
    def bytes(self) -> int | None:
        return self.size.bytes if self.size is not None else None

    def sized(self, sizes: Sizes) -> PlannedMove:
        size = sizes.get(self.key) if self.target is not None else Size()
        return replace(self, size=size)

    def to_wire(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "replication": self.replication,
            "partition": self.partition,
            "from": self.source,
            "to": self.target,
            "bytes": self.bytes,
            "keys": self.size.keys if self.size is not None else None,
        }


@dataclass(frozen=True)
class Plan:
    epoch: int  # the metadata epoch it was made against
    changes: tuple[Change, ...]
    members: tuple[Member, ...]  # after the changes
    chains: claim.Chains  # the placement after the changes
    moves: tuple[PlannedMove, ...]

    @property
    def plan_id(self) -> str:
        wire = {"epoch": self.epoch, "changes": [c.to_wire() for c in self.changes]}
        digest = hashlib.sha256(json.dumps(wire, sort_keys=True).encode()).hexdigest()
        return digest[:16]

    def sized(self, sizes: Sizes) -> Plan:
        """The same plan (same `plan_id`) with each move's expected volume from `sizes`."""
        return replace(self, moves=tuple(m.sized(sizes) for m in self.moves))

    def summary(self) -> dict[str, Any]:
        """`bytes` and `keys` add up the moves whose size is known; `bytes_unknown` counts
        the others (while it is above 0, the totals are a lower bound)."""
        by_mode: dict[str, int] = {}
        for move in self.moves:
            by_mode[move.mode] = by_mode.get(move.mode, 0) + 1
        known = [m.size for m in self.moves if m.size is not None]
        total = sum(known, Size())
        return {
            "replicas_moving": len(self.moves),
            "by_mode": by_mode,
            "bytes": total.bytes,
            "keys": total.keys,
            "bytes_unknown": len(self.moves) - len(known),
        }

    def to_wire(self) -> dict[str, Any]:
        return {
            "plan_id": self.plan_id,
            "epoch": self.epoch,
            "changes": [c.to_wire() for c in self.changes],
            "members": [m.to_dict() for m in self.members],
            "summary": self.summary(),
            "moves": [m.to_wire() for m in self.moves],
        }


Sizes = Mapping[MoveKey, Size]  # (mode, replication, partition) → its size on one replica


def make_plan(md: Metadata, changes: Sequence[Change], sizes: Sizes | None = None) -> Plan:
    if not md.chains:
        raise KeyspaceConflict(
            "this cluster's placement predates claims (vnode walks); membership changes "
            "need a cluster bootstrapped with a claim"
        )
    if not changes:
        raise InvalidRequest("changes", "stage at least one change")
    members, chains = list(md.members), md.chains
    for change in changes:
        members, chains = _apply(members, chains, change)
    _check_replication(md, members)
    moves = tuple(_moves(md, chains))
    plan = Plan(md.epoch, tuple(changes), tuple(members), chains, moves)
    return plan.sized(sizes or {})


def _apply(
    members: list[Member], chains: claim.Chains, change: Change
) -> tuple[list[Member], claim.Chains]:
    ids = {m.id for m in members}
    if change.kind == "add":
        assert change.member is not None
        _check_new(members, change.member)
        return [*members, change.member], claim.add(chains, change.member.id)
    if change.node not in ids:
        raise InvalidRequest("node", f"{change.node!r} is not a member")
    if change.kind == "remove":
        rest = [m for m in members if m.id != change.node]
        if not rest:
            raise InvalidRequest("node", "cannot remove the last member")
        return rest, claim.remove(chains, change.node)
    assert change.member is not None
    _check_new([m for m in members if m.id != change.node], change.member)
    swapped = [change.member if m.id == change.node else m for m in members]
    return swapped, claim.replace(chains, change.node, change.member.id)


def _check_new(members: Sequence[Member], new: Member) -> None:
    for m in members:
        if m.id == new.id:
            raise InvalidRequest("member", f"id {new.id!r} is already a member")
        if new.http == m.http or new.raft == m.raft:
            raise InvalidRequest("member", f"an address of {new.id!r} is in use by {m.id!r}")


def _check_replication(md: Metadata, members: Sequence[Member]) -> None:
    need = max((k.replication for k in md.keyspaces), default=1)
    if len(members) < need:
        raise InvalidRequest(
            "changes",
            f"would leave {len(members)} members; a keyspace needs {need} replicas",
        )


def replication_in_use(md: Metadata) -> list[tuple[str, int]]:
    """(mode, replication) of the keyspaces: which prefixes of the chains hold data."""
    return sorted({(k.consistency, k.replication) for k in md.keyspaces})


def _moves(md: Metadata, after: claim.Chains) -> list[PlannedMove]:
    return [
        PlannedMove(mode, n, p, source, target)
        for mode, n in replication_in_use(md)
        for p, source, target in claim.moves(md.chains, after, n)
    ]
