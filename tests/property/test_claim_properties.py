"""kv/claim.py under random membership histories (riak_core's claim statem test, in spirit).

Properties: every chain is a permutation of the members (never two replicas of a partition
on one node); the same inputs give the same chains; every operation ends balanced (each
node within [floor, ceil] of Q·n/M for every n ≤ DEPTH); adding or removing one node copies
at most 1.2× that node's share of replicas (+1, its rounding) for every n ≤ 5; removing the
node just added restores the placement exactly whenever the add only swapped it in (at most
one swap per chain, each with the new node; the balancing pass of `add` may also have to
move others' replicas: docs/ring.md measures how often).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kv import claim

NAMES = [f"n{i}" for i in range(40)]

nodes_st = st.lists(st.sampled_from(NAMES), min_size=1, max_size=12, unique=True)
partitions_st = st.sampled_from([1, 8, 16, 64, 128])
# a history: each step adds a fresh node, removes one, or replaces one
steps_st = st.lists(st.tuples(st.sampled_from(["add", "remove", "replace"]), st.integers(0, 99)))


def run(nodes: list[str], partitions: int, steps: list[tuple[str, int]]) -> claim.Chains:
    chains = claim.initial(nodes, partitions)
    fresh = (f"x{i}" for i in range(1000))
    for op, pick in steps:
        members = claim.members_of(chains)
        if op == "add" or (op == "remove" and len(members) == 1):
            chains = claim.add(chains, next(fresh))
        elif op == "remove":
            chains = claim.remove(chains, members[pick % len(members)])
        else:
            chains = claim.replace(chains, members[pick % len(members)], next(fresh))
        check_invariants(chains, partitions)
    return chains


def check_invariants(chains: claim.Chains, partitions: int) -> None:
    members = claim.members_of(chains)
    assert len(chains) == partitions
    for chain in chains:
        assert sorted(chain) == members  # distinct nodes: a permutation of the members
    for n in range(1, min(claim.DEPTH, len(members)) + 1):
        low, high = partitions * n // len(members), -(-partitions * n // len(members))
        counts = claim.counts(chains, n)
        assert low <= min(counts.values()) and max(counts.values()) <= high, (n, counts)


@settings(max_examples=60, deadline=None)
@given(nodes_st, partitions_st)
def test_initial_is_balanced_and_independent_of_the_order_given(
    nodes: list[str], partitions: int
) -> None:
    chains = claim.initial(nodes, partitions)
    check_invariants(chains, partitions)
    assert claim.initial(list(reversed(nodes)), partitions) == chains


@settings(max_examples=60, deadline=None)
@given(nodes_st, partitions_st, steps_st)
def test_histories_keep_the_invariants_and_are_deterministic(
    nodes: list[str], partitions: int, steps: list[tuple[str, int]]
) -> None:
    assert run(nodes, partitions, steps) == run(nodes, partitions, steps)


@settings(max_examples=60, deadline=None)
@given(nodes_st, partitions_st, steps_st)
def test_removing_the_node_just_added_restores_the_placement(
    nodes: list[str], partitions: int, steps: list[tuple[str, int]]
) -> None:
    before = run(nodes, partitions, steps)
    after = claim.add(before, "newcomer")
    if all(swapped_in(old, new, "newcomer") for old, new in zip(before, after, strict=True)):
        assert claim.remove(after, "newcomer") == before


def swapped_in(old: tuple[str, ...], new: tuple[str, ...], x: str) -> bool:
    """`new` is `old` + (x,), with at most one swap between x and another position."""
    appended = [*old, x]
    diff = [i for i, (a, b) in enumerate(zip(appended, new, strict=True)) if a != b]
    return not diff or (len(diff) == 2 and new[diff[0]] == x and diff[1] == len(old))


# Movement: copies (what a plan transfers, claim.copies) against the ideal Q·n/M, the share
# of the node joining or leaving, for every replication n up to 5 that the cluster can
# hold (removal below n members is refused by the planner). Bound: 1.2 × ideal + 1. The
# +1 is the node's own rounding — it holds ⌊Q·n/M⌋ or ⌈Q·n/M⌉, up to one replica more than
# the ideal, which 1.2× does not cover while the ideal is under 5 replicas (64 partitions,
# 16 nodes, n=1: ideal 4). Q from 64 up: with fewer replicas per node, balance at every
# prefix can cost a few replicas more than that (docs/ring.md). At these sizes a stress run
# of 1,500 random histories (up to 16 nodes) stayed within 1.2 × ideal with no slack.
history_st = st.lists(
    st.tuples(st.sampled_from(["add", "remove", "replace"]), st.integers(0, 99)), max_size=4
)


@settings(max_examples=50, deadline=None)
@given(nodes_st, st.sampled_from([64, 128, 256]), history_st, st.integers(0, 99))
def test_one_node_in_or_out_copies_at_most_1_2_times_its_share(
    nodes: list[str], partitions: int, steps: list[tuple[str, int]], pick: int
) -> None:
    before = run(nodes, partitions, steps)
    members = claim.members_of(before)
    m = len(members)
    grown = claim.add(before, "newcomer")
    for n in range(1, min(5, m + 1) + 1):
        assert claim.copies(before, grown, n) <= 1.2 * partitions * n / (m + 1) + 1, n
    gone = members[pick % m]
    if m > 1:
        shrunk = claim.remove(before, gone)
        for n in range(1, min(5, m - 1) + 1):
            assert claim.copies(before, shrunk, n) <= 1.2 * partitions * n / m + 1, n
            # never below the leaving node's own replicas: each needs a new holder
            assert claim.copies(before, shrunk, n) >= claim.counts(before, n)[gone]


def test_one_node_out_of_100_at_1024_partitions_copies_its_share() -> None:
    """The case that showed the gap: the balancing pass after a removal copied 47 replicas
    for N=3 against an ideal of 30.7."""
    nodes = [f"node-{i}" for i in range(100)]
    before = claim.initial(nodes, 1024)
    shrunk = claim.remove(before, "node-0")
    grown = claim.add(before, "node-100")
    for n in range(1, 6):
        assert claim.copies(before, shrunk, n) <= 1.2 * 1024 * n / 100
        assert claim.copies(before, grown, n) <= 1.2 * 1024 * n / 101


@settings(max_examples=40, deadline=None)
@given(nodes_st, partitions_st)
def test_replace_moves_exactly_the_old_nodes_replicas(nodes: list[str], partitions: int) -> None:
    before = claim.initial(nodes, partitions)
    old = sorted(nodes)[0]
    after = claim.replace(before, old, "fresh")
    for n in (1, 3):
        moved = claim.moves(before, after, n)
        assert len(moved) == claim.counts(before, n)[old]
        assert all(src == old and dst == "fresh" for _, src, dst in moved)
