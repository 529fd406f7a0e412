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
  per chain, so the moved replicas are x's: the ideal 1/M. A donor also loses every deeper
  prefix, so donors that stay within balance there are preferred; where that still cannot
  balance every prefix, a balancing pass moves a few more, by the swaps that copy least.
- `remove(chains, x)`: if putting each chain's last node in x's place (the inverse of
  `add`'s swaps) leaves the assignment balanced, that is the result — so removing a node
  just added restores the placement when its add moved replicas only to it. Otherwise x's
  place in each chain is taken by a node from deeper in it, whose place is taken in turn
  ("filling the hole"): that copies exactly x's replicas at every prefix at once, and who
  fills each hole is chosen to keep every prefix balanced; what is left unbalanced is
  mended by the swaps that copy least (docs/ring.md measures how much that is).
- `replace(chains, old, new)`: `new` takes exactly `old`'s places.

Movement ("copies", what a plan transfers; kv/plan.py): for replication n, the nodes in a
partition's new `chain[:n]` that were not in its old one. The ideal for adding or removing
x is x's own replicas, Q·n/M; `add` and `remove` aim at it for every n ≤ DEPTH at once.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
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
    grown = sorted([*members, node])
    lists = [[*chain, node] for chain in chains]
    _claim_for(lists, node, grown)
    return _frozen(_balance(lists, grown, before=chains))


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
    _fill_holes(lists, node, rest)
    return _frozen(_balance([_without(chain, node) for chain in lists], rest, before=chains))


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


def copies(before: Chains, after: Chains, n: int) -> int:
    """Replicas copied to a node that did not hold them, for replication n: the moves with a
    target, what a plan transfers (kv/plan.py)."""
    return sum(1 for _, _, to in moves(before, after, n) if to)


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


def _targets(partitions: int, n: int, members: int) -> tuple[int, int]:
    total = partitions * n
    return total // members, -(-total // members)


def _prefix_counts(lists: list[list[str]], members: Sequence[str], n: int) -> dict[str, int]:
    """Replicas per member in the first n places of every chain (non-members not counted)."""
    out = dict.fromkeys(members, 0)
    for chain in lists:
        for node in chain[:n]:
            if node in out:
                out[node] += 1
    return out


class _Levels:
    """Replicas per member at every prefix 1..depth while `_claim_for` or `_fill_holes` work
    (nodes other than `members` not counted), against each prefix's targets [low, high].
    A node that moves from place k up to place j gains the prefixes j+1..k; the node it
    displaces below k loses them."""

    def __init__(self, lists: list[list[str]], members: Sequence[str]) -> None:
        self.depth = min(DEPTH, len(members))
        prefixes = range(self.depth + 1)
        self.targets = [_targets(len(lists), m, len(members)) for m in prefixes]
        self.have = [_prefix_counts(lists, members, m) for m in prefixes]

    def gained(self, m: int, node: str) -> int:
        """At prefix m: 0 if node is under the floor (it has to gain), 1 if it may gain one,
        2 if it is at the ceiling."""
        low, high = self.targets[m]
        have = self.have[m][node]
        return 0 if have < low else 1 if have < high else 2

    def lost(self, m: int, node: str) -> int:
        """At prefix m: 0 if node is over the ceiling (it has to lose), 1 if it may lose one,
        2 if it is at the floor."""
        low, high = self.targets[m]
        have = self.have[m][node]
        return 0 if have > high else 1 if have > low else 2

    def deeper(self, status: Callable[[int, str], int], node: str, j: int, k: int) -> list[int]:
        """`status` of node at the prefixes j+2..k (not beyond depth): those that moving it
        between places j and k changes besides prefix j+1."""
        return [status(m, node) for m in range(j + 2, min(k, self.depth) + 1)]

    def move(self, up: str, down: str | None, j: int, k: int) -> None:
        """`up` moved from place k to place j; `down` (None: not counted) the other way."""
        for m in range(j + 1, min(k, self.depth) + 1):
            self.have[m][up] += 1
            if down is not None:
                self.have[m][down] -= 1


def _claim_for(lists: list[list[str]], node: str, members: Sequence[str]) -> None:
    """`node` takes replicas, position by position, from the most loaded node, until no one
    is over the ceiling and it has its floor (it never gives one back). Each take swaps
    `node` from the end of a chain with the donor at position j, so the donor also loses
    every deeper prefix: prefer donors that stay at or above the floor at each of them
    (else the balancing pass must move someone else's replicas to mend it)."""
    levels = _Levels(lists, members)
    end = len(members) - 1
    for j in range(levels.depth):
        low, high = levels.targets[j + 1]
        have = levels.have[j + 1]
        held: dict[str, list[int]] = {}  # chains by their node at j, `node` still at the end
        for p, chain in enumerate(lists):  # (at most one swap per chain)
            if chain[end] == node:
                held.setdefault(chain[j], []).append(p)
        while have[node] < high:
            floor = high if have[node] >= low else low
            best: tuple[int, int, int, str] | None = None
            for donor in members:
                if donor != node and have[donor] > floor and held.get(donor):
                    after = levels.deeper(levels.lost, donor, j, end)
                    key = (after.count(2), -have[donor], -after.count(0), donor)
                    best = key if best is None else min(best, key)
            if best is None:
                break
            donor = best[3]
            p = held[donor].pop(0)
            lists[p][j], lists[p][end] = node, donor
            levels.move(node, donor, j, end)


def _fill_holes(lists: list[list[str]], node: str, rest: Sequence[str]) -> None:
    """`node` leaves a hole in each chain where it sits above depth; position by position, a
    node from deeper in the chain jumps into the hole, leaving its own place as the next
    hole, until the hole sinks below depth (then `node` is dropped). A node jumping from k
    to the hole at j gains prefixes j+1..k, and each prefix below the original hole gains
    exactly one node: so whoever jumps, the copies are `node`'s own replicas, at every
    replication factor at once. The choice is who (see `_jumper`)."""
    levels = _Levels(lists, rest)  # `node` itself is not counted
    # chances[m][y]: chains whose hole is still above prefix m's boundary with y below it,
    # i.e. where y could yet gain prefix m
    chances = [dict.fromkeys(rest, 0) for _ in range(levels.depth + 1)]
    for chain in lists:
        for m in range(chain.index(node) + 1, levels.depth + 1):
            for y in chain[m:]:
                chances[m][y] += 1
    for j in range(levels.depth):
        holes = [p for p, chain in enumerate(lists) if chain[j] == node]
        for done, p in enumerate(holes):
            chain = lists[p]
            k = _jumper(chain, j, levels, chances, len(holes) - done)
            top = min(k, levels.depth)
            for m in range(j + 1, top + 1):  # this chain's prefix m is now settled
                for y in chain[m:]:
                    chances[m][y] -= 1
            chain[j], chain[k] = chain[k], node
            levels.move(chain[j], None, j, k)


def _jumper(
    chain: list[str], j: int, levels: _Levels, chances: list[dict[str, int]], holes: int
) -> int:
    """Where the node that fills the hole at j comes from. It gains prefix j+1 and each
    deeper one down to its place; in order of importance, the node:
    - is not at the ceiling of prefix j+1, and is under its floor if the `holes` left at j
      are all needed by nodes under the floor;
    - spoils the fewest deeper prefixes: one where it is at the ceiling counts 1, and so
      does taking this chain's chance at prefix m from a node that needs every chance it
      has left there (`_pressure` 1; less for one that needs fewer);
    - is under the floor at j+1, then at the most deeper prefixes, then may gain (below the
      ceiling) at the fewest; comes from the shallowest place."""
    depth = levels.depth
    low = levels.targets[j + 1][0]
    tight = holes <= sum(max(0, low - c) for c in levels.have[j + 1].values())
    # pressure[m]: summed over the nodes below prefix m's boundary in this chain, each of
    # which loses its chance here at m whoever jumps from place m or deeper
    pressure = [0.0] * (depth + 1)
    for m in range(j + 1, depth + 1):
        pressure[m] = sum(_pressure(levels, chances, m, y) for y in chain[m:])
    best: tuple[tuple[float, ...], int] | None = None
    for k in range(j + 1, len(chain)):
        z = chain[k]
        now = levels.gained(j + 1, z)
        after = levels.deeper(levels.gained, z, j, k)
        taken = (
            pressure[m] - _pressure(levels, chances, m, z) for m in range(j + 1, min(k, depth) + 1)
        )
        key = (
            int(now == 2 or (tight and now != 0)),
            after.count(2) + sum(taken),
            now,
            -after.count(0),
            after.count(1),
            k,
        )
        if best is None or key < best[0]:
            best = (key, k)
    assert best is not None  # a hole above depth has nodes below it
    return best[1]


def _pressure(levels: _Levels, chances: list[dict[str, int]], m: int, node: str) -> float:
    """How badly node needs each chance it has left to gain prefix m: 0 while its shortfall
    under the floor is at most half its chances, rising to 1 when it needs every one.
    (A float, summed in chain order: IEEE-754 division and addition are correctly rounded,
    so every member of the meta group computes the same chains.)"""
    short, left = levels.targets[m][0] - levels.have[m][node], chances[m][node]
    return max(0.0, 2 * short / left - 1) if short > 0 and left > 0 else 0.0


def _balance(
    lists: list[list[str]], members: Sequence[str], before: Chains | None = None
) -> list[list[str]]:
    """Swap within chains, prefix by prefix, until every node is within [floor, ceil].
    A swap at position j only changes prefixes deeper than j, so earlier prefixes stay put.
    Without `before`, each replica shifts by a shortest path of swaps (as `initial` always
    has); with it, by the path that copies the fewest replicas not in `before` (a plan
    moves data from `before`, so that is what the swaps cost)."""
    where = None if before is None else [{m: i for i, m in enumerate(c)} for c in before]
    for j in range(min(DEPTH, len(members))):
        low, high = _targets(len(lists), j + 1, len(members))
        have = _prefix_counts(lists, members, j + 1)
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


# ---------------------------------------------------------------------- report (docs/ring.md)
def report(sizes: Sequence[int] = (3, 5, 8, 16, 100), partitions: int = 64, n: int = 3) -> str:
    """Balance and movement of claimed placements against hash-placed vnodes (64 per node),
    for node ids node-0 .. node-(M-1); movement: replicas copied for replication n when
    node-M joins, and when node-0 leaves, against the ideal Q·n/M (and, in the last column,
    the largest ratio to the ideal over replication 1..5)."""
    from kv.ring import Ring  # measurement only
    from kv.ring import balance as vnode_balance

    lines = [
        f"Q={partitions}, N={n}; nodes node-0 .. node-(M-1)",
        "",
        "| nodes | vnodes max/mean | claim max/mean | add: moved (ideal) | remove: moved (ideal) "
        "| add / remove, worst N=1..5 |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for m in sizes:
        nodes = [f"node-{i}" for i in range(m)]
        mean, _, high = vnode_balance(Ring(tuple(nodes), partitions, 64), n)
        chains = initial(nodes, partitions)
        grown = add(chains, f"node-{m}")
        shrunk = remove(chains, "node-0") if m > 1 else chains
        worst_add = max(
            copies(chains, grown, r) / (partitions * r / (m + 1))
            for r in range(1, min(5, m + 1) + 1)
        )
        worst_remove = max(
            (copies(chains, shrunk, r) / (partitions * r / m) for r in range(1, min(5, m - 1) + 1)),
            default=0.0,
        )
        removed = f"{copies(chains, shrunk, n)}" if m > n else "-"
        lines.append(
            f"| {m} | {high / mean:.2f} | {balance(chains, n):.2f} "
            f"| {copies(chains, grown, n)} ({partitions * n / (m + 1):.1f}) "
            f"| {removed} ({partitions * n / m:.1f}) | {worst_add:.2f} / {worst_remove:.2f} |"
        )
    return "\n".join(lines)


def survey(
    sizes: Sequence[int] = (3, 5, 8, 16, 32, 100),
    partitions: Sequence[int] = (64, 256, 1024),
    layouts: int = 10,
    n: int = 3,
) -> str:
    """Over `layouts` random layouts per size (seeded node ids; one newcomer added, one
    random member removed): balance for replication n after the removal; replicas copied
    against the ideal Q·n/M, mean and (in brackets) max; then, over replication 1..5, the
    largest ratio to the ideal and the most replicas copied beyond the joining or leaving
    node's own (0: only that node's replicas moved)."""
    import random  # measurement only

    lines = [
        f"N={n}; {layouts} random layouts per row: mean (max)",
        "",
        "| Q | nodes | max/mean after remove | add: moved / ideal | remove: moved / ideal "
        "| worst N=1..5: add / remove | beyond own, N=1..5: add / remove |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for q in partitions:
        for m in sizes:
            rng = random.Random(f"claim-survey {q} {m}")
            bal: list[float] = []
            grow: list[float] = []
            shrink: list[float] = []
            worst = _Worst()
            for _ in range(layouts):
                chains = initial([f"n{i:06x}" for i in rng.sample(range(16**6), m)], q)
                grown = add(chains, "newcomer")
                gone = rng.choice(members_of(chains))
                shrunk = remove(chains, gone)
                worst.update(chains, grown, "newcomer", shrunk, gone)
                grow.append(copies(chains, grown, n) / (q * n / (m + 1)))
                if m > n:  # the planner refuses to go below a keyspace's replication
                    bal.append(balance(shrunk, n))
                    shrink.append(copies(chains, shrunk, n) / (q * n / m))
            lines.append(
                f"| {q} | {m} | {_cell(bal)} | {_cell(grow)} | {_cell(shrink)} | {worst} |"
            )
    return "\n".join(lines)


def histories(partitions: Sequence[int] = (64, 256, 1024), runs: int = 20, n: int = 3) -> str:
    """`survey`'s measures after membership histories instead of fresh layouts: from 2..7
    founders, 4 random changes (add 60%, else remove or replace), then one newcomer added
    and one random member removed. Chains that several adds have updated share long common
    runs, where a node can be short of chances to gain a given prefix: this is where the
    balance costs copies beyond the node's own."""
    import random  # measurement only

    lines = [
        f"N={n}; {runs} histories per row: mean (max)",
        "",
        "| Q | add: moved / ideal | remove: moved / ideal "
        "| worst N=1..5: add / remove | beyond own, N=1..5: add / remove |",
        "|---:|---:|---:|---:|---:|",
    ]
    for q in partitions:
        rng = random.Random(f"claim-histories {q}")
        grow: list[float] = []
        shrink: list[float] = []
        worst = _Worst()
        for run in range(runs):
            founders = [f"n{i:06x}" for i in rng.sample(range(16**6), rng.randint(2, 7))]
            chains = initial(founders, q)
            for step in range(4):
                members = members_of(chains)
                op = rng.random()
                if op < 0.6 or len(members) <= n:
                    chains = add(chains, f"a{run}-{step}")
                elif op < 0.8:
                    chains = remove(chains, rng.choice(members))
                else:
                    chains = replace(chains, rng.choice(members), f"r{run}-{step}")
            m = len(members_of(chains))
            grown = add(chains, "newcomer")
            gone = rng.choice(members_of(chains))
            shrunk = remove(chains, gone)
            worst.update(chains, grown, "newcomer", shrunk, gone)
            grow.append(copies(chains, grown, n) / (q * n / (m + 1)))
            if m > n:  # the planner refuses to go below a keyspace's replication
                shrink.append(copies(chains, shrunk, n) / (q * n / m))
        lines.append(f"| {q} | {_cell(grow)} | {_cell(shrink)} | {worst} |")
    return "\n".join(lines)


def _cell(values: list[float]) -> str:
    return f"{sum(values) / len(values):.2f} ({max(values):.2f})" if values else "-"


class _Worst:
    """Over replication 1..5 and every case seen: the largest copies / ideal, and the most
    copies beyond the joining or leaving node's own replicas, for add and for remove (a
    removal only for replication below the members left)."""

    def __init__(self) -> None:
        self.ratio = [0.0, 0.0]
        self.beyond = [0, 0]

    def update(self, chains: Chains, grown: Chains, new: str, shrunk: Chains, gone: str) -> None:
        q, m = len(chains), len(members_of(chains))
        for r in range(1, 6):
            if r <= m + 1:
                self._see(0, copies(chains, grown, r), q * r / (m + 1), counts(grown, r)[new])
            if r < m:
                self._see(1, copies(chains, shrunk, r), q * r / m, counts(chains, r)[gone])

    def _see(self, i: int, copied: int, ideal: float, own: int) -> None:
        self.ratio[i] = max(self.ratio[i], copied / ideal)
        self.beyond[i] = max(self.beyond[i], copied - own)

    def __str__(self) -> str:
        ratio, beyond = self.ratio, self.beyond
        return f"{ratio[0]:.2f} / {ratio[1]:.2f} | {beyond[0]} / {beyond[1]}"


if __name__ == "__main__":
    print(report())
    print()
    print(report(partitions=1024))
    print()
    print(survey())
    print()
    print(histories())
