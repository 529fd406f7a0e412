"""Which Raft groups exist and which of them this node hosts — pure (DESIGN.md §2-3).

One group per (partition, replication factor in use by a linearizable keyspace): keyspaces
are key prefixes inside a partition, so the number of groups is Q per replication factor,
not Q × keyspaces. A group's members are the partition's preference list for that factor,
as `kv.routing.replicas` (the one placement function) gives it.
"""

from __future__ import annotations

from dataclasses import dataclass

from kv import routing
from kv.meta import Metadata
from kv.routing import KeyRequest


@dataclass(frozen=True)
class GroupSpec:
    partition: int
    replication: int
    members: tuple[str, ...]  # node ids, preference-list order

    @staticmethod
    def of(req: KeyRequest) -> GroupSpec:
        """The group of a routed key request (its route's replicas are the members)."""
        return GroupSpec(req.route.partition, req.keyspace.replication, req.route.replicas)

    @property
    def gid(self) -> str:
        return f"p{self.partition}r{self.replication}"

    @property
    def number(self) -> int:
        """Dense id used as the group's storage prefix: replication in the high byte."""
        return (self.replication << 16) | self.partition


def replication_factors(md: Metadata) -> list[int]:
    return sorted({k.replication for k in md.keyspaces if k.consistency == "linearizable"})


def hosted_groups(md: Metadata, node_id: str) -> dict[str, GroupSpec]:
    """The groups `node_id` must run under this metadata, by gid."""
    out: dict[str, GroupSpec] = {}
    for rf in replication_factors(md):
        for partition in range(md.partitions):
            members = routing.replicas(md, "linearizable", partition, rf)
            if node_id in members:
                spec = GroupSpec(partition, rf, members)
                out[spec.gid] = spec
    return out
