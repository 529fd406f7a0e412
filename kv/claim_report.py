"""`python -m kv.claim_report`: the balance and movement figures of docs/ring.md ("Claim"),
claimed placements against hash-placed vnodes. Measurement only; nothing at run time
imports it."""

from __future__ import annotations

import random
from collections.abc import Sequence

from kv.claim import Chains, add, balance, copies, counts, initial, members_of, remove, replace


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
