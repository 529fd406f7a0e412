"""Claim: which nodes hold each partition, an explicit assignment kept in cluster metadata.

As Riak's claim (riak_core docs/claim-version4.md), a change *updates* the current
assignment instead of solving anew, so it moves little data. Pure and deterministic: every
member of the meta group computes the same chains from the same changes.

Every partition has a *chain*: each member once, in preference order. A keyspace of
replication n keeps partition p on `chain[p][:n]` (its preference list, Dynamo §4.3);
`chain[p][n:]` are the fallbacks the sloppy quorum tries in order (§4.6).

Balance (for every prefix length n ≤ DEPTH, the largest replication factor): each node holds
`floor(Q·n/M)` or `ceil(Q·n/M)` of the Q·n replicas. Every operation ends balanced; data
moves only by swapping two nodes inside one chain at position j ("prefix j+1 gains one
replica, loses one"), so a move is always one replica from one node to another.

- `initial(nodes, Q)`: chains in a seeded rendezvous order, then balanced.
- `add(chains, x)`: x is appended to every chain, then x alone takes replicas, each time from
  the most loaded node (Riak claim: the new node "claims" until balanced), at most one swap
  per chain, so the moved replicas are x's: the ideal 1/M. Where that cannot balance every
  prefix, a balancing pass moves a few more (docs/ring.md measures it).
- `remove(chains, x)`: if putting each chain's last node in x's place (the inverse of
  `add`'s swaps) leaves the assignment balanced, that is the result — so removing a node
  just added restores the placement when its add moved replicas only to it; otherwise x
  hands each place to the least loaded node deeper in that chain, then the rest is
  balanced. Either way about x's own replicas move.
- `replace(chains, old, new)`: `new` takes exactly `old`'s places.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import zip_longest

from kv import hashing

DEPTH = 7  # kv.keyspace.MAX_REPLICATION: deeper positions are fallbacks only

Chains = tuple[tuple[str, ...], ...]


def initial(nodes: Sequence[str], partitions: int) -> Chains:
    """A balanced assignment for founding `nodes` (order of `nodes` does not matter)."""
    _check_nodes(nodes)
    chains = [sorted(nodes, key=lambda n: (hashing.rank_token(p, n), n)) for p in range(partitions)]
    return _frozen(_balance(chains, sorted(nodes)))


def add(chains: Chains, node: str) -> Chains:
    members = members_of(chains)
    if node in members:
        raise ValueError(f"{node!r} is already a member")
    lists = [[*chain, node] for chain in chains]
    _claim_for(lists, node, [*members, node])
    return _frozen(_balance(lists, sorted([*members, node])))


def remove(chains: Chains, node: str) -> Chains:
    members = members_of(chains)
    if node not in members:
        raise ValueError(f"{node!r} is not a member")
    if len(members) == 1:
        raise ValueError("cannot remove the last member")
    rest = [m for m in members if m != node]
    undone = [_undo_swap(list(chain), node) for chain in chains]
    if _balanced(undone, rest):
        return _frozen(undone)  # exactly what `add` started from, when it only swapped `node` in
    lists = [list(chain) for chain in chains]
    _give_up(lists, node, rest)
    return _frozen(_balance([_without(chain, node) for chain in lists], rest))


def replace(chains: Chains, old: str, new: str) -> Chains:
    members = members_of(chains)
    if old not in members or new in members:
        raise ValueError(f"replace needs a member ({old!r}) and a newcomer ({new!r})")
    return tuple(tuple(new if n == old else n for n in chain) for chain in chains)


def members_of(chains: Chains) -> list[str]:
    return sorted(chains[0]) if chains else []


# ---------------------------------------------------------------------- measurement
def counts(chains: Chains, n: int) -> dict[str, int]:
    """Replicas per node for replication n (preference-list memberships)."""
    out = dict.fromkeys(members_of(chains), 0)
    for chain in chains:
        for node in chain[:n]:
            out[node] += 1
    return out


def balance(chains: Chains, n: int) -> float:
    """max / mean replicas per node for replication n (1.0 is perfect)."""
    values = list(counts(chains, n).values())
    return max(values) / (sum(values) / len(values))


Move = tuple[int, str | None, str | None]  # (partition, from, to); None: no such side


def moves(before: Chains, after: Chains, n: int) -> list[Move]:
    """Every replica that changes node between two assignments for replication n: the nodes
    leaving a partition's preference list paired with those joining it (a list that shrinks
    with the cluster has a `from` without a `to`)."""
    out: list[Move] = []
    for p, (old, new) in enumerate(zip(before, after, strict=True)):
        gone = sorted(set(old[:n]) - set(new[:n]))
        came = sorted(set(new[:n]) - set(old[:n]))
        out.extend((p, a, b) for a, b in zip_longest(gone, came))
    return out


# ---------------------------------------------------------------------- internals
def _check_nodes(nodes: Sequence[str]) -> None:
    if not nodes or len(set(nodes)) != len(nodes):
        raise ValueError(f"nodes must be distinct and non-empty: {list(nodes)!r}")


def _frozen(lists: Iterable[list[str]]) -> Chains:
    return tuple(tuple(chain) for chain in lists)


def _without(chain: list[str], node: str) -> list[str]:
    chain.remove(node)
    return chain


def _undo_swap(chain: list[str], node: str) -> list[str]:
    """Drop `node`, its place taken by the chain's last node: the inverse of `add`'s swap."""
    last = chain.pop()
    if last != node:
        chain[chain.index(node)] = last
    return chain


def _balanced(lists: list[list[str]], members: Sequence[str]) -> bool:
    for j in range(min(DEPTH, len(members))):
        low, high = _targets(len(lists), j + 1, len(members))
        have = _prefix_counts(lists, members, j + 1).values()
        if min(have) < low or max(have) > high:
            return False
    return True


def _give_up(lists: list[list[str]], node: str, rest: Sequence[str]) -> None:
    """`node` hands each of its places, position by position, to a node deeper in that chain:
    the chain's last node while it is under the ceiling (that undoes the swap `add` made),
    else the least loaded one; `node` sinks below every balanced prefix, then is dropped."""
    for j in range(min(DEPTH, len(rest) + 1)):
        _, high = _targets(len(lists), j + 1, len(rest))
        have = _prefix_counts(lists, [*rest, node], j + 1)
        for chain in lists:
            if chain[j] == node and j + 1 < len(chain):
                k = _heir(chain, j, node, have, high)
                chain[j], chain[k] = chain[k], node
                have[chain[j]] += 1


def _heir(chain: list[str], j: int, node: str, have: dict[str, int], high: int) -> int:
    last = len(chain) - 1
    if chain[last] != node and have[chain[last]] < high:
        return last
    deeper = [i for i in range(j + 1, len(chain)) if chain[i] != node]
    return min(deeper, key=lambda i: (have[chain[i]], i))


def _targets(partitions: int, n: int, members: int) -> tuple[int, int]:
    total = partitions * n
    return total // members, -(-total // members)


def _prefix_counts(lists: list[list[str]], members: Sequence[str], n: int) -> dict[str, int]:
    out = dict.fromkeys(members, 0)
    for chain in lists:
        for node in chain[:n]:
            out[node] += 1
    return out


def _claim_for(lists: list[list[str]], node: str, members: Sequence[str]) -> None:
    """`node` takes replicas, position by position, from the most loaded node, until no one
    is over the ceiling and it has its floor (it never gives one back)."""
    for j in range(min(DEPTH, len(members))):
        low, high = _targets(len(lists), j + 1, len(members))
        have = _prefix_counts(lists, members, j + 1)
        while have[node] < high:
            floor = high if have[node] >= low else low
            donors = [m for m in members if m != node and have[m] > floor]
            p = _donor_chain(lists, j, node, donors, have)
            if p is None:
                break
            donor = lists[p][j]
            k = lists[p].index(node)
            lists[p][j], lists[p][k] = node, donor
            have[node] += 1
            have[donor] -= 1


def _donor_chain(
    lists: list[list[str]], j: int, node: str, donors: list[str], have: dict[str, int]
) -> int | None:
    """The chain where the most loaded donor sits at position j and `node` is deeper."""
    best: tuple[int, str, int] | None = None
    for p, chain in enumerate(lists):
        holder = chain[j]
        if holder in donors and chain.index(node) > j:
            key = (-have[holder], holder, p)
            if best is None or key < best:
                best = key
    return None if best is None else best[2]


def _balance(lists: list[list[str]], members: Sequence[str]) -> list[list[str]]:
    """Swap within chains, prefix by prefix, until every node is within [floor, ceil].
    A swap at position j only changes prefixes deeper than j, so earlier prefixes stay put."""
    for j in range(min(DEPTH, len(members))):
        low, high = _targets(len(lists), j + 1, len(members))
        have = _prefix_counts(lists, members, j + 1)
        while (path := _augmenting_path(lists, j, low, high, have)) is not None:
            for p, k in path:
                donor, taker = lists[p][j], lists[p][k]
                lists[p][j], lists[p][k] = taker, donor
            have[lists[path[0][0]][path[0][1]]] -= 1  # the first donor, now deeper
            have[lists[path[-1][0]][j]] += 1  # the last taker, now at j
    return lists


def _augmenting_path(
    lists: list[list[str]], j: int, low: int, high: int, have: dict[str, int]
) -> list[tuple[int, int]] | None:
    """Swaps (chain, deeper position) that move one replica at prefix j+1 from a node over
    the ceiling to one under it (or from above the floor to one under the floor), through
    intermediate nodes that each give one and take one: a shortest path in the graph
    "holder of position j in chain p → a node deeper in p" (breadth first, deterministic)."""
    for source, target in ((high, high), (low, low)):
        starts = sorted(n for n, c in have.items() if c > source)
        if not starts or all(c >= target for c in have.values()):
            continue
        ends = {n for n, c in have.items() if c < target}
        path = _shortest(lists, j, starts, ends)
        if path is not None:
            return path
    return None


def _shortest(
    lists: list[list[str]], j: int, starts: list[str], ends: set[str]
) -> list[tuple[int, int]] | None:
    """Breadth first from `starts`; a node's edges in order of (deeper position, chain)."""
    held: dict[str, list[int]] = {}  # node -> the chains where it holds position j
    for p, chain in enumerate(lists):
        held.setdefault(chain[j], []).append(p)
    everyone = len(lists[0])
    parent: dict[str, tuple[str, int, int] | None] = dict.fromkeys(starts)
    frontier = list(starts)
    while frontier:
        nxt = []
        for u in frontier:
            for k in range(j + 1, everyone):
                for p in held.get(u, ()):
                    v = lists[p][k]
                    if v in parent:
                        continue
                    parent[v] = (u, p, k)
                    if v in ends:
                        return _unwind(parent, v)
                    nxt.append(v)
                if len(parent) == everyone:
                    return None  # every node reached, none of them an end
        frontier = nxt
    return None


def _unwind(parent: dict[str, tuple[str, int, int] | None], end: str) -> list[tuple[int, int]]:
    path = []
    step = parent[end]
    while step is not None:
        u, p, k = step
        path.append((p, k))
        step = parent[u]
    return path[::-1]


# ---------------------------------------------------------------------- report (docs/ring.md)
def report(sizes: Sequence[int] = (3, 5, 8, 16, 100), partitions: int = 64, n: int = 3) -> str:
    """Balance and movement of claimed placements against hash-placed vnodes (64 per node),
    for node ids node-0 .. node-(M-1); movement: replicas copied for replication n when
    node-M joins, and when node-0 leaves, against the ideal Q·n/M."""
    from kv.ring import Ring  # measurement only
    from kv.ring import balance as vnode_balance

    lines = [
        f"Q={partitions}, N={n}; nodes node-0 .. node-(M-1)",
        "",
        "| nodes | vnodes max/mean | claim max/mean | add: moved (ideal) | remove: moved (ideal) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for m in sizes:
        nodes = [f"node-{i}" for i in range(m)]
        mean, _, high = vnode_balance(Ring(tuple(nodes), partitions, 64), n)
        chains = initial(nodes, partitions)
        grown = add(chains, f"node-{m}")
        added = sum(1 for _, _, to in moves(chains, grown, n) if to)
        shrunk = remove(chains, "node-0") if m > n else chains
        removed = sum(1 for _, _, to in moves(chains, shrunk, n) if to)
        lines.append(
            f"| {m} | {high / mean:.2f} | {balance(chains, n):.2f} "
            f"| {added} ({partitions * n / (m + 1):.1f}) "
            f"| {removed if m > n else '-'} ({partitions * n / m:.1f}) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
    print()
    print(report(sizes=(100,), partitions=1024))
