"""The balancing search of kv/claim.py: swaps inside chains that bring every node within
[floor, ceil] of its share at each prefix, by augmenting paths (shortest, or cheapest in
copies when the placement data moves from is given). Pure and deterministic."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

DEPTH = 7  # kv.keyspace.MAX_REPLICATION: deeper positions are fallbacks only

Chains = tuple[tuple[str, ...], ...]


def targets(partitions: int, n: int, members: int) -> tuple[int, int]:
    total = partitions * n
    return total // members, -(-total // members)


def prefix_counts(lists: list[list[str]], members: Sequence[str], n: int) -> dict[str, int]:
    """Replicas per member in the first n places of every chain (non-members not counted)."""
    out = dict.fromkeys(members, 0)
    for chain in lists:
        for node in chain[:n]:
            if node in out:
                out[node] += 1
    return out


def balance_swaps(
    lists: list[list[str]], members: Sequence[str], before: Chains | None = None
) -> list[list[str]]:
    """Swap within chains, prefix by prefix, until every node is within [floor, ceil].
    A swap at position j only changes prefixes deeper than j, so earlier prefixes stay put.
    Without `before`, each replica shifts by a shortest path of swaps (as `initial` always
    has); with it, by the path that copies the fewest replicas not in `before` (a plan
    moves data from `before`, so that is what the swaps cost)."""
    where = None if before is None else [{m: i for i, m in enumerate(c)} for c in before]
    for j in range(min(DEPTH, len(members))):
        low, high = targets(len(lists), j + 1, len(members))
        have = prefix_counts(lists, members, j + 1)
        while (path := _augmenting_path(lists, j, low, high, have, where)) is not None:
            for p, k in path:
                donor, taker = lists[p][j], lists[p][k]
                lists[p][j], lists[p][k] = taker, donor
            have[lists[path[0][0]][path[0][1]]] -= 1  # the first donor, now deeper
            have[lists[path[-1][0]][j]] += 1  # the last taker, now at j
    return lists


def _augmenting_path(
    lists: list[list[str]],
    j: int,
    low: int,
    high: int,
    have: dict[str, int],
    where: list[dict[str, int]] | None,
) -> list[tuple[int, int]] | None:
    """Swaps (chain, deeper position) that move one replica at prefix j+1 from a node over
    the ceiling to one under it (or from above the floor to one under the floor), through
    intermediate nodes that each give one and take one: a path in the graph "holder of
    position j in chain p → a node deeper in p" (deterministic)."""
    for source, target in ((high, high), (low, low)):
        starts = sorted(n for n, c in have.items() if c > source)
        if not starts or all(c >= target for c in have.values()):
            continue
        ends = {n for n, c in have.items() if c < target}
        if where is None:
            path = _shortest(lists, j, starts, ends)
        else:
            path = _cheapest(lists, j, starts, ends, where)
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


def _cheapest(
    lists: list[list[str]],
    j: int,
    starts: list[str],
    ends: set[str],
    where: list[dict[str, int]],
) -> list[tuple[int, int]] | None:
    """Dijkstra from `starts` over the same graph as `_shortest`, an edge costing the copies
    its swap adds (`_swap_cost`); among equally cheap paths, the fewest swaps."""
    held: dict[str, list[int]] = {}
    for p, chain in enumerate(lists):
        held.setdefault(chain[j], []).append(p)
    best: dict[str, tuple[int, int]] = dict.fromkeys(starts, (0, 0))
    parent: dict[str, tuple[str, int, int] | None] = dict.fromkeys(starts)
    heap = [(0, 0, s) for s in starts]
    heapq.heapify(heap)
    done: set[str] = set()
    while heap:
        cost, hops, u = heapq.heappop(heap)
        if u in done:
            continue
        done.add(u)
        if u in ends:
            return _unwind(parent, u)
        for p in held.get(u, ()):
            chain = lists[p]
            for k in range(j + 1, len(chain)):
                v = chain[k]
                if v in done:
                    continue
                reach = (cost + _swap_cost(where[p], j, k, v, u), hops + 1)
                if v not in best or reach < best[v]:
                    best[v] = reach
                    parent[v] = (u, p, k)
                    heapq.heappush(heap, (*reach, v))
    return None


def _swap_cost(was_at: dict[str, int], j: int, k: int, up: str, down: str) -> int:
    """Replicas a plan would newly copy if `up` (at k) and `down` (at j) swapped, summed over
    the prefixes j+1..min(k, DEPTH) that the swap changes; `was_at`: places in the chain the
    data is moved from. Prefix n then holds `up` instead of `down`: one copy more if `up`
    was not in the old prefix n, one fewer if `down` was not either. Never below 0, so that
    undoing an earlier swap is free but a path's cost never falls."""
    top = min(k, DEPTH)

    def outside(node: str) -> int:  # how many of the prefixes j+1..top lacked node before
        return max(0, min(was_at.get(node, DEPTH), top) - j)

    return max(0, outside(up) - outside(down))


def _unwind(parent: dict[str, tuple[str, int, int] | None], end: str) -> list[tuple[int, int]]:
    path = []
    step = parent[end]
    while step is not None:
        u, p, k = step
        path.append((p, k))
        step = parent[u]
    return path[::-1]
