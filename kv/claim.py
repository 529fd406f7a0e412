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

from collections.abc import Callable, Iterable, Sequence
from itertools import zip_longest

from kv import hashing
from kv.claim_swaps import DEPTH, Chains, balance_swaps, prefix_counts, targets

__all__ = [
    "DEPTH",
    "Chains",
    "Move",
    "add",
    "balance",
    "copies",
    "counts",
    "initial",
    "members_of",
    "moves",
    "remove",
    "replace",
]


def initial(nodes: Sequence[str], partitions: int) -> Chains:
    """A balanced assignment for founding `nodes` (order of `nodes` does not matter)."""
    _check_nodes(nodes)
    chains = [sorted(nodes, key=lambda n: (hashing.rank_token(p, n), n)) for p in range(partitions)]
    return _frozen(balance_swaps(chains, sorted(nodes)))


def add(chains: Chains, node: str) -> Chains:
    members = members_of(chains)
    if node in members:
        raise ValueError(f"{node!r} is already a member")
    grown = sorted([*members, node])
    lists = [[*chain, node] for chain in chains]
    _claim_for(lists, node, grown)
    return _frozen(balance_swaps(lists, grown, before=chains))


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
    return _frozen(balance_swaps([_without(chain, node) for chain in lists], rest, before=chains))


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
        low, high = targets(len(lists), j + 1, len(members))
        have = prefix_counts(lists, members, j + 1).values()
        if min(have) < low or max(have) > high:
            return False
    return True


class _Levels:
    """Replicas per member at every prefix 1..depth while `_claim_for` or `_fill_holes` work
    (nodes other than `members` not counted), against each prefix's targets [low, high].
    A node that moves from place k up to place j gains the prefixes j+1..k; the node it
    displaces below k loses them."""

    def __init__(self, lists: list[list[str]], members: Sequence[str]) -> None:
        self.depth = min(DEPTH, len(members))
        prefixes = range(self.depth + 1)
        self.targets = [targets(len(lists), m, len(members)) for m in prefixes]
        self.have = [prefix_counts(lists, members, m) for m in prefixes]

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
