"""The sibling bytes limit bounds every merged set (dynamo_mode/siblings.py, "Sibling bytes
policy"): replicas mint under `admit_bytes` and merge whatever they are sent, clients write
with contexts read from any replica (or none), and the reconciled union of all replicas
never exceeds (actors that minted) × limit — what the internode frame cap relies on.

A naive oracle: the union is recomputed from every replica's set after each step.

The example is why the limit is strict (a write that leaves the set over the limit is
refused even when it does not grow it): were such a write allowed, A could take over B's
version x (a same-size x' with x's context, read from B) while B, not knowing, resolves its
own x and mints again — each round leaves another of B's budgets in the union."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from dynamo_mode import siblings
from dynamo_mode.replica import encode_versions
from dynamo_mode.siblings import Version

LIMIT = 400  # bytes: a few small values, so random histories hit the limit often
ACTORS = ("A", "B", "C")

mint = st.tuples(
    st.just("mint"),
    st.sampled_from(ACTORS),  # the minting replica
    st.sampled_from((None, *ACTORS)),  # whose set the client read first (None: blind)
    st.lists(st.booleans(), max_size=12),  # which of the read versions its context keeps
    st.integers(1, 150),  # value size
)
merge = st.tuples(st.just("merge"), st.sampled_from(ACTORS), st.sampled_from(ACTORS))
histories = st.lists(st.one_of(mint, merge), max_size=60)


def size(versions: tuple[Version, ...]) -> int:
    return len(encode_versions(versions))


LEAK = [
    ("mint", "A", None, [], 300),  # a
    ("mint", "B", None, [], 300),  # x
    ("merge", "A", "B"),
    ("mint", "A", "B", [True], 290),  # x' supersedes x on A; A holds a and x'
    ("mint", "B", "B", [True], 1),  # B resolves its x
    ("mint", "B", None, [], 250),  # y
    ("merge", "A", "B"),
    ("mint", "A", "B", [False, True], 220),  # y' supersedes y on A
    ("mint", "B", "B", [True, True], 1),
    ("mint", "B", None, [], 250),  # z
]


@settings(max_examples=300, deadline=None)
@given(histories)
@example(LEAK)
def test_a_merged_set_stays_within_actors_times_the_limit(history: list[Any]) -> None:
    held: dict[str, tuple[Version, ...]] = {a: () for a in ACTORS}
    for step in history:
        if step[0] == "merge":
            _, into, source = step
            held[into] = siblings.reconcile((*held[into], *held[source]))  # never refused
        else:
            _minted(held, *step[1:])
        union = siblings.reconcile(v for vs in held.values() for v in vs)
        assert size(union) <= len(ACTORS) * LIMIT


def _minted(
    held: dict[str, tuple[Version, ...]], at: str, read: str | None, keep: list[bool], n: int
) -> None:
    seen = held[read] if read is not None else ()
    chosen = [v for v, k in zip(seen, keep, strict=False) if k]
    clock, dots = siblings.join_full(chosen)
    _, merged = siblings.coordinate(held[at], at, clock, "x" * n, False, 1000, dots)
    try:
        siblings.admit_bytes(size(merged), LIMIT)
    except siblings.SiblingBytesExceeded:
        return  # refused: nothing written
    held[at] = merged
