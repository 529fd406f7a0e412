"""Which Raft groups exist and which of them this node hosts — pure (DESIGN.md §2-3).

One group per (partition, replication factor in use by a linearizable keyspace): keyspaces
are key prefixes inside a partition, so the number of groups is Q per replication factor,
not Q × keyspaces. A group's members are the partition's preference list for that factor,
as `Metadata.owners` gives it (which `kv.routing.replicas`, the one placement function, reads).

While a membership plan moves a group (docs/raft.md "Linearizable moves"), its incoming
owners host it too, as *joining* members: started with the owners and the other incoming
owners as peers, they do not campaign until a leader has contacted them, and the leader
adds them one at a time (raft_groups/mover.py). After the flip they are owners like any.
"""

from __future__ import annotations

from dataclasses import dataclass

from kv.meta import Metadata
from kv.routing import KeyRequest, replicas


@dataclass(frozen=True)
class GroupSpec:
    partition: int
    replication: int
    members: tuple[str, ...]  # node ids, preference-list order: the current owners
    incoming: tuple[str, ...] = ()  # joining owners while a plan moves the group

    @staticmethod
    def of(req: KeyRequest) -> GroupSpec:
        """The group of a routed key request (its route's replicas are the members)."""
        return GroupSpec(req.route.partition, req.keyspace.replication, req.route.replicas)

    @staticmethod
    def at(md: Metadata, partition: int, replication: int) -> GroupSpec:
        """The group of `partition` for `replication`: its members are the partition's
        linearizable preference list under `md` (the one placement function)."""
        members = replicas(md, "linearizable", partition, replication)
        return GroupSpec(partition, replication, members)

    @property
    def gid(self) -> str:
        return f"p{self.partition}r{self.replication}"

    @property
    def number(self) -> int:
        """Dense id used as the group's storage prefix: replication in the high byte."""
        return (self.replication << 16) | self.partition

    def joining(self, node_id: str) -> bool:
        """Whether `node_id` hosts this group as a joining member (not an owner yet)."""
        return node_id in self.incoming and node_id not in self.members

    def peers(self, node_id: str) -> tuple[str, ...]:
        """The members `node_id` starts its replica with: an owner, the other owners (the
        membership of record; its journal replays the committed changes since); a joining
        member, every owner and incoming owner, so it accepts a leader among them."""
        others = self.members + (self.incoming if self.joining(node_id) else ())
        return tuple(m for m in others if m != node_id)


def replication_factors(md: Metadata) -> list[int]:
    """Those of linearizable keyspaces, and of switches to linearizable (their groups run
    from the switch's commit, docs/mode_switch.md)."""
    factors = {k.replication for k in md.keyspaces if k.consistency == "linearizable"}
    targets = (s.target for s in md.switches if s.target.consistency == "linearizable")
    return sorted(factors | {t.replication for t in targets})


def hosted_groups(md: Metadata, node_id: str) -> dict[str, GroupSpec]:
    """The groups `node_id` must run under this metadata, by gid: those it owns, and those
    a plan in flight moves to it (joining)."""
    out: dict[str, GroupSpec] = {}
    for rf in replication_factors(md):
        for partition in range(md.partitions):
            owners, incoming = md.owners("linearizable", rf, partition)
            if node_id in owners or node_id in incoming:
                spec = GroupSpec(partition, rf, owners, incoming)
                out[spec.gid] = spec
    return out
