"""Consistent-hashing ring: Q fixed partitions, each with a walk of the nodes.

Pure: no I/O, no clocks, no randomness. See docs/ring.md.

Where the walks come from: clusters bootstrapped with a claim (kv/claim.py) carry an
explicit assignment, `chains`, in their metadata: balanced, and updated with little movement
by membership changes (Dynamo §6.2 strategy 3, Riak's claim). Older metadata has none; its
walks come from hash-placed vnode tokens, as described next, and stay exactly as they were.

Key space: a key's token (kv.hashing.token) falls in one of Q equal partitions,
partition i covering [i * 2**64/Q, (i+1) * 2**64/Q) (Dynamo §6.2 strategy 3:
fixed, equal-sized partitions, so partitions are the unit of storage, transfer
and Raft groups). Placement: every node owns ``vnodes`` tokens
``vnode_token(node, i)`` on the same circle (Dynamo §4.2 virtual nodes; the
tokens are hash-placed as in §6.2 strategy 1, so partitions are assigned to
nodes statistically, not by strategy 3's explicit Q/S-per-node plan). The
walk of partition p starts at the partition's END boundary (p+1) * 2**64/Q and
goes clockwise through the vnode tokens, listing each distinct node once, in
order of first appearance. The first N entries are the primaries (the
preference list), the rest are the fallbacks for sloppy quorum, in the order
they are tried (Riak riak_core_apl:get_apl_ann / get_primary_apl).

Invariant (monotonicity): adding node X only inserts X's tokens into the sorted
token sequence, so every walk is the old walk with X inserted somewhere; the
relative order of the other nodes is unchanged. Hence for every partition and
every N: new_primaries - old_primaries ⊆ {X}. Symmetrically, removing X deletes
X from every walk: old_primaries - new_primaries ⊆ {X}.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kv import hashing
from kv.hashing import TOKEN_BITS, TOKEN_SPACE, vnode_token

MAX_PARTITIONS = 1 << 16
MAX_VNODES = 4096

Role = Literal["primary", "fallback"]

_FIELDS = ("nodes", "partitions", "vnodes")


@dataclass(frozen=True)
class Ring:
    nodes: tuple[str, ...]
    partitions: int = 64
    vnodes: int = 64
    # An explicit assignment (kv/claim.py): every partition's walk, given. Empty: the walks
    # come from the hash-placed vnode tokens (metadata bootstrapped before claims existed).
    chains: tuple[tuple[str, ...], ...] = field(default=(), repr=False)
    # Derived in __post_init__; excluded from eq/hash/repr.
    _walks: tuple[tuple[str, ...], ...] = field(
        init=False, repr=False, compare=False, hash=False, default=()
    )

    def __post_init__(self) -> None:
        _validate_partitions(self.partitions)
        _validate_vnodes(self.vnodes)
        _validate_nodes(self.nodes)
        if self.chains:
            _validate_chains(self.chains, self.nodes, self.partitions)
            walks = self.chains
        else:
            walks = _all_walks(self.nodes, self.partitions, self.vnodes)
        object.__setattr__(self, "_walks", walks)

    # -- key space ---------------------------------------------------------

    def partition_of(self, token: int) -> int:
        """Partition holding ``token``: its top log2(Q) bits."""
        if not 0 <= token < TOKEN_SPACE:
            raise ValueError(f"token must be in [0, 2**64): {token!r}")
        return token >> _shift(self.partitions)

    def key_partition(self, keyspace: str, key: str) -> int:
        return self.partition_of(hashing.token(keyspace, key))

    # -- placement ---------------------------------------------------------

    def walk(self, partition: int) -> tuple[str, ...]:
        """Every node once, clockwise from the partition's end boundary."""
        self._check_partition(partition)
        return self._walks[partition]

    def preference_list(self, partition: int, n: int) -> tuple[str, ...]:
        """The primaries: the first min(n, len(nodes)) nodes of the walk."""
        _validate_n(n)
        return self.walk(partition)[:n]

    def fallbacks(self, partition: int, n: int) -> tuple[str, ...]:
        """The rest of the walk after the primaries, in sloppy-quorum order (Dynamo §4.6)."""
        _validate_n(n)
        return self.walk(partition)[n:]

    def annotated(self, partition: int, n: int) -> list[tuple[str, Role]]:
        """The whole walk, each node tagged (riak_core_apl:get_apl_ann)."""
        _validate_n(n)
        return [(node, _role(i, n)) for i, node in enumerate(self.walk(partition))]

    def partitions_of(self, node: str, n: int) -> list[int]:
        """Partitions for which ``node`` is a primary (empty if not a member)."""
        _validate_n(n)
        return [p for p, w in enumerate(self._walks) if node in w[:n]]

    # -- membership ----------------------------------------------------------

    def with_node(self, node: str) -> Ring:
        if node in self.nodes:
            raise ValueError(f"nodes already contains {node!r}")
        return Ring(self.nodes + (node,), self.partitions, self.vnodes)

    def without_node(self, node: str) -> Ring:
        if node not in self.nodes:
            raise ValueError(f"nodes does not contain {node!r}")
        rest = tuple(n for n in self.nodes if n != node)
        return Ring(rest, self.partitions, self.vnodes)

    # -- serialisation -------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": list(self.nodes), "partitions": self.partitions, "vnodes": self.vnodes}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Ring:
        """Inverse of to_dict. All three keys are required: Q and vnodes decide
        placement, so a silently defaulted value would move data."""
        for key in d:
            if key not in _FIELDS:
                raise ValueError(f"unknown ring key: {key!r}")
        for key in _FIELDS:
            if key not in d:
                raise ValueError(f"missing ring key: {key!r}")
        nodes = d["nodes"]
        if not isinstance(nodes, list | tuple):
            raise ValueError(f"nodes must be a list of strings: {nodes!r}")
        return cls(tuple(nodes), d["partitions"], d["vnodes"])

    def _check_partition(self, partition: int) -> None:
        if not (_is_int(partition) and 0 <= partition < self.partitions):
            raise ValueError(f"partition must be in [0, {self.partitions}): {partition!r}")


# -- validation ----------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_partitions(partitions: int) -> None:
    in_range = _is_int(partitions) and 1 <= partitions <= MAX_PARTITIONS
    if not in_range or partitions & (partitions - 1):
        raise ValueError(
            f"partitions must be a power of two in [1, {MAX_PARTITIONS}]: {partitions!r}"
        )


def _validate_vnodes(vnodes: int) -> None:
    if not (_is_int(vnodes) and 1 <= vnodes <= MAX_VNODES):
        raise ValueError(f"vnodes must be an integer in [1, {MAX_VNODES}]: {vnodes!r}")


def _validate_nodes(nodes: tuple[str, ...]) -> None:
    if not isinstance(nodes, tuple):
        raise ValueError(f"nodes must be a tuple of strings: {nodes!r}")
    for node in nodes:
        if not isinstance(node, str) or not node:
            raise ValueError(f"nodes must be non-empty strings: {node!r}")
    if len(set(nodes)) != len(nodes):
        dupes = sorted({n for n in nodes if nodes.count(n) > 1})
        raise ValueError(f"nodes must be distinct: duplicates {dupes!r}")


def _validate_chains(
    chains: tuple[tuple[str, ...], ...], nodes: tuple[str, ...], partitions: int
) -> None:
    if len(chains) != partitions:
        raise ValueError(f"chains must give all {partitions} partitions, got {len(chains)}")
    members = sorted(nodes)
    for p, chain in enumerate(chains):
        if sorted(chain) != members:
            raise ValueError(f"chain of partition {p} is not a permutation of the nodes")


def _validate_n(n: int) -> None:
    if not (_is_int(n) and n >= 1):
        raise ValueError(f"n must be a positive integer: {n!r}")


# -- placement (pure helpers) ----------------------------------------------------


def _shift(partitions: int) -> int:
    return TOKEN_BITS - (partitions.bit_length() - 1)


def _role(position: int, n: int) -> Role:
    return "primary" if position < n else "fallback"


def _sorted_tokens(nodes: tuple[str, ...], vnodes: int) -> list[tuple[int, str]]:
    # Ties (a 2**-64 event) break by node id, so the order is total and the
    # monotonicity invariant still holds: insertion never reorders old pairs.
    return sorted((vnode_token(node, i), node) for node in nodes for i in range(vnodes))


def _walk_from(owners: list[str], start: int, node_count: int) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    size = len(owners)
    for step in range(size):
        seen.setdefault(owners[(start + step) % size])
        if len(seen) == node_count:
            break
    return tuple(seen)


def _all_walks(nodes: tuple[str, ...], partitions: int, vnodes: int) -> tuple[tuple[str, ...], ...]:
    """Walk of every partition. A walk depends only on the index of the first
    vnode token >= the partition's end boundary, so walks are shared by index."""
    if not nodes:
        return ((),) * partitions
    pairs = _sorted_tokens(nodes, vnodes)
    tokens = [t for t, _ in pairs]
    owners = [o for _, o in pairs]
    shift = _shift(partitions)
    by_start: dict[int, tuple[str, ...]] = {}
    walks = []
    for p in range(partitions):
        end = ((p + 1) << shift) % TOKEN_SPACE
        start = bisect.bisect_left(tokens, end) % len(tokens)
        if start not in by_start:
            by_start[start] = _walk_from(owners, start, len(nodes))
        walks.append(by_start[start])
    return tuple(walks)


# -- balance measurement (docs/ring.md) ----------------------------------------------


def primary_counts(ring: Ring, n: int) -> dict[str, int]:
    """Number of partitions each node is a primary for."""
    counts = dict.fromkeys(ring.nodes, 0)
    for p in range(ring.partitions):
        for node in ring.preference_list(p, n):
            counts[node] += 1
    return counts


def balance(ring: Ring, n: int) -> tuple[float, int, int]:
    """(mean, min, max) primaries per node."""
    counts = list(primary_counts(ring, n).values())
    return sum(counts) / len(counts), min(counts), max(counts)


def balance_report(
    node_counts: tuple[int, ...] = (5, 10, 50),
    partition_counts: tuple[int, ...] = (64, 256),
    vnode_counts: tuple[int, ...] = (64, 256),
    n: int = 3,
) -> str:
    """Markdown table of primaries-per-node balance over node ids node-0..node-k."""
    lines = [
        f"N={n}; node ids node-0 .. node-(k-1)",
        "",
        "| nodes | Q | vnodes | mean | min | max | max/mean |",
        "|------:|--:|-------:|-----:|----:|----:|---------:|",
    ]
    for count in node_counts:
        nodes = tuple(f"node-{i}" for i in range(count))
        for q in partition_counts:
            for v in vnode_counts:
                mean, low, high = balance(Ring(nodes, q, v), n)
                lines.append(
                    f"| {count} | {q} | {v} | {mean:.2f} | {low} | {high} | {high / mean:.2f} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    print(balance_report())
    print()
    print(balance_report(node_counts=(50,), partition_counts=(1024, 4096)))
