"""The cluster metadata model and its changes, pure (DESIGN.md §2).

`apply(metadata, change) -> (metadata, outcome)` is the state machine of the meta Raft group
(raft_groups/meta_group.py). It runs on every member in log order, so it must be
deterministic and must not raise on a bad change: a refused change is an outcome, and the
metadata is returned unchanged.

Invariant: `epoch` increases by exactly one with every change that alters the metadata, so
two nodes with the same epoch hold the same metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from kv import claim
from kv.keyspace import KeyspaceConfig
from kv.ring import Ring


@dataclass(frozen=True)
class Member:
    id: str
    http: str  # advertised "host:port" of the HTTP API (client and internode)
    raft: str  # advertised "host:port" of the meta group's Raft port

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "http": self.http, "raft": self.raft}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Member:
        return Member(id=str(d["id"]), http=str(d["http"]), raft=str(d["raft"]))


@dataclass(frozen=True)
class Metadata:
    epoch: int = 0  # 0 = not bootstrapped yet
    members: tuple[Member, ...] = ()
    partitions: int = 64
    vnodes: int = 64
    keyspaces: tuple[KeyspaceConfig, ...] = ()
    chains: claim.Chains = ()  # explicit placement (kv/claim.py); () = vnode walks (legacy)
    _ring: Ring | None = field(default=None, compare=False, repr=False)

    @property
    def bootstrapped(self) -> bool:
        return self.epoch > 0

    def ring(self) -> Ring:
        if self._ring is None:
            ids = tuple(m.id for m in self.members)
            ring = Ring(ids, self.partitions, self.vnodes, chains=self.chains)
            object.__setattr__(self, "_ring", ring)
            return ring
        return self._ring

    def keyspace(self, name: str) -> KeyspaceConfig | None:
        return next((k for k in self.keyspaces if k.name == name), None)

    def member(self, node_id: str) -> Member | None:
        return next((m for m in self.members if m.id == node_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "members": [m.to_dict() for m in self.members],
            "partitions": self.partitions,
            "vnodes": self.vnodes,
            "keyspaces": [k.to_dict() for k in self.keyspaces],
            "chains": [list(chain) for chain in self.chains],
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Metadata:
        return Metadata(
            epoch=int(d["epoch"]),
            members=tuple(Member.from_dict(m) for m in d["members"]),
            partitions=int(d["partitions"]),
            vnodes=int(d["vnodes"]),
            keyspaces=tuple(KeyspaceConfig.from_dict(k) for k in d["keyspaces"]),
            chains=tuple(tuple(str(n) for n in chain) for chain in d.get("chains", ())),
        )


Outcome = dict[str, Any]


def apply(md: Metadata, change: dict[str, Any]) -> tuple[Metadata, Outcome]:
    """Apply one committed change. Unknown change types are refused, not raised."""
    kind = str(change.get("type")) if isinstance(change, dict) else None
    handler = _HANDLERS.get(kind or "")
    if handler is None:
        return md, _refused("invalid_request", f"unknown change type {kind!r}")
    if not md.bootstrapped and kind != "bootstrap":
        return md, _refused("not_ready", "the cluster metadata is not bootstrapped yet")
    try:
        return handler(md, change)
    except (KeyError, TypeError, ValueError) as exc:
        return md, _refused("invalid_request", f"malformed {kind} change: {exc!r}")


def _refused(code: str, message: str) -> Outcome:
    return {"status": "refused", "code": code, "message": message}


def _bootstrap(md: Metadata, change: dict[str, Any]) -> tuple[Metadata, Outcome]:
    # Every founding node proposes a bootstrap; the first one committed wins, so nodes
    # started with slightly different flags still agree on one metadata.
    if md.bootstrapped:
        return md, {"status": "unchanged"}
    members = tuple(Member.from_dict(m) for m in change["members"])
    partitions = int(change["partitions"])
    # Nodes of this version ask for a claimed placement; a journal written by older nodes
    # (no "claim") replays to the vnode placement it always had.
    chains = (
        claim.initial([m.id for m in members], partitions)
        if change.get("claim") == "chains"
        else ()
    )
    new = Metadata(
        epoch=1,
        members=members,
        partitions=partitions,
        vnodes=int(change["vnodes"]),
        chains=chains,
    )
    return new, {"status": "created"}


def _put_keyspace(md: Metadata, change: dict[str, Any]) -> tuple[Metadata, Outcome]:
    want = KeyspaceConfig.from_dict(change["keyspace"])
    have = md.keyspace(want.name)
    if have is None:
        created = replace(want, uid=md.epoch + 1)
        return _bump(md, keyspaces=(*md.keyspaces, created)), {"status": "created"}
    if have.same_settings(replace(want, uid=have.uid)):
        return md, {"status": "unchanged"}
    fixed = have.fixed_fields_differ(want)
    if fixed:
        return md, _refused(
            "keyspace_conflict",
            f"keyspace {want.name!r} exists with a different {fixed[0]} "
            f"({getattr(have, fixed[0])!r}); delete it first to change that",
        )
    updated = replace(want, uid=have.uid)
    others = tuple(k if k.name != want.name else updated for k in md.keyspaces)
    return _bump(md, keyspaces=others), {"status": "updated"}


def _delete_keyspace(md: Metadata, change: dict[str, Any]) -> tuple[Metadata, Outcome]:
    name = str(change["name"])
    if md.keyspace(name) is None:
        return md, _refused("keyspace_not_found", f"keyspace {name!r} does not exist")
    remaining = tuple(k for k in md.keyspaces if k.name != name)
    return _bump(md, keyspaces=remaining), {"status": "deleted"}


def _bump(md: Metadata, **changes: Any) -> Metadata:
    return replace(md, epoch=md.epoch + 1, _ring=None, **changes)


_HANDLERS = {
    "bootstrap": _bootstrap,
    "put_keyspace": _put_keyspace,
    "delete_keyspace": _delete_keyspace,
}
