"""Which Raft groups exist and which of them this node hosts — pure (DESIGN.md §2-3).

One group per (partition, replication factor in use by a linearizable keyspace): keyspaces
are key prefixes inside a partition, so the number of groups is Q per replication factor,
not Q × keyspaces. A group's members are the partition's preference list for that factor.
"""

from __future__ import annotations

from dataclasses import dataclass

from kv.keyspace import KeyspaceConfig
from kv.meta import Metadata


@dataclass(frozen=True)
class GroupSpec:
    partition: int
    replication: int
    members: tuple[str, ...]  # node ids, preference-list order

    @property
    def gid(self) -> str:
        return f"p{self.partition}r{self.replication}"

    @property
    def number(self) -> int:
        """Dense id used as the group's storage prefix: replication in the high byte."""
        return (self.replication << 16) | self.partition


def replication_factors(md: Metadata) -> list[int]:
    return sorted({k.replication for k in md.keyspaces if k.consistency == "linearizable"})


def group_of(md: Metadata, ks: KeyspaceConfig, key: str) -> GroupSpec:
    ring = md.ring()
    partition = ring.key_partition(ks.name, key)
    return GroupSpec(partition, ks.replication, ring.preference_list(partition, ks.replication))


def hosted_groups(md: Metadata, node_id: str) -> dict[str, GroupSpec]:
    """The groups `node_id` must run under this metadata, by gid."""
    ring = md.ring()
    out: dict[str, GroupSpec] = {}
    for rf in replication_factors(md):
        for partition in range(md.partitions):
            members = ring.preference_list(partition, rf)
            if node_id in members:
                spec = GroupSpec(partition, rf, members)
                out[spec.gid] = spec
    return out
