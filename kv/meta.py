"""The cluster metadata model, pure (DESIGN.md §2): members, keyspaces, the partition
placement (`chains`, kv/claim.py) and, while a membership plan runs, its `Transition`.

Its changes are applied by kv/meta_machine.py, the meta Raft group's state machine.
Invariant: `epoch` increases by exactly one with every change that alters the metadata, so
two nodes with the same epoch hold the same metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kv import claim
from kv.auth import Token
from kv.keyspace import KeyspaceConfig
from kv.ring import Ring
from kv.switch import Switch


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


MoveKey = tuple[str, int, int]  # (mode, replication, partition)


@dataclass(frozen=True)
class Transition:
    """A committed membership plan that is still moving data (kv/plan.py, DESIGN.md §2).

    `Metadata.chains` is the placement moves start from, `chains` the one they lead to.
    Until a move is done its (mode, replication, partition) is served by the starting
    owners, and the incoming ones receive every write too; `move_done` flips it. When no
    move is pending, `chains` and `members` become the metadata's own. An aborted plan is a
    `reverting` transition back to the old placement whose pending moves are the ones the
    plan had already flipped.
    """

    plan_id: str
    changes: tuple[dict[str, Any], ...]  # the plan's changes, wire form
    members: tuple[Member, ...]  # the members once the plan is done
    chains: claim.Chains  # the placement once the plan is done
    pending: frozenset[MoveKey]
    done: frozenset[MoveKey] = frozenset()
    ready: frozenset[tuple[str, int, int, str]] = frozenset()  # (*pending key, incoming node)
    reverting: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan_id": self.plan_id,
            "changes": list(self.changes),
            "members": [m.to_dict() for m in self.members],
            "chains": [list(chain) for chain in self.chains],
            "pending": sorted([list(k) for k in self.pending]),
            "done": sorted([list(k) for k in self.done]),
            "ready": sorted([list(k) for k in self.ready]),
            "reverting": self.reverting,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Transition:
        return Transition(
            plan_id=str(d["plan_id"]),
            changes=tuple(d["changes"]),
            members=tuple(Member.from_dict(m) for m in d["members"]),
            chains=tuple(tuple(str(n) for n in chain) for chain in d["chains"]),
            pending=_keys(d["pending"]),
            done=_keys(d.get("done", [])),
            ready=frozenset((str(m), int(r), int(p), str(n)) for m, r, p, n in d.get("ready", [])),
            reverting=bool(d.get("reverting", False)),
        )


def _keys(raw: Any) -> frozenset[MoveKey]:
    return frozenset((str(m), int(r), int(p)) for m, r, p in raw)


@dataclass(frozen=True)
class Metadata:
    epoch: int = 0  # 0 = not bootstrapped yet
    members: tuple[Member, ...] = ()
    partitions: int = 64
    vnodes: int = 64
    keyspaces: tuple[KeyspaceConfig, ...] = ()
    chains: claim.Chains = ()  # explicit placement (kv/claim.py); () = vnode walks (legacy)
    transition: Transition | None = None  # a committed plan still moving data
    tokens: tuple[Token, ...] = ()  # client tokens, their secrets hashed (kv/auth.py)
    switches: tuple[Switch, ...] = ()  # keyspaces switching consistency (kv/switch.py)
    _ring: Ring | None = field(default=None, compare=False, repr=False)

    @property
    def bootstrapped(self) -> bool:
        return self.epoch > 0

    def ring(self) -> Ring:
        if self._ring is None:
            ids = tuple(claim.members_of(self.chains) or (m.id for m in self.members))
            ring = Ring(ids, self.partitions, self.vnodes, chains=self.chains)
            object.__setattr__(self, "_ring", ring)
            return ring
        return self._ring

    def keyspace(self, name: str) -> KeyspaceConfig | None:
        return next((k for k in self.keyspaces if k.name == name), None)

    def switch(self, name: str) -> Switch | None:
        return next((s for s in self.switches if s.keyspace == name), None)

    def member(self, node_id: str) -> Member | None:
        return next((m for m in self.members if m.id == node_id), None)

    def owners(self, mode: str, n: int, partition: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(replicas, incoming) of a partition for keyspaces of this mode and replication:
        while a plan moves it, the old owners serve and the incoming ones also take writes."""
        old = self.ring().preference_list(partition, n)
        t = self.transition
        if t is None:
            return old, ()
        new = t.chains[partition][:n]
        if (mode, n, partition) in t.pending:
            return old, tuple(x for x in new if x not in old)
        return new, ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "members": [m.to_dict() for m in self.members],
            "partitions": self.partitions,
            "vnodes": self.vnodes,
            "keyspaces": [k.to_dict() for k in self.keyspaces],
            "chains": [list(chain) for chain in self.chains],
            "transition": self.transition.to_dict() if self.transition else None,
            "tokens": [t.to_dict() for t in self.tokens],
            "switches": [s.to_dict() for s in self.switches],
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
            transition=Transition.from_dict(d["transition"]) if d.get("transition") else None,
            tokens=tuple(Token.from_dict(t) for t in d.get("tokens", ())),
            switches=tuple(Switch.from_dict(s) for s in d.get("switches", ())),
        )
