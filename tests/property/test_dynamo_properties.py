"""Hypothesis properties of the eventual mode's pure modules, each against a naive oracle.

Clocks (Dynamo §4.4), dotted versions and reconciliation (Preguiça et al.,
"Dotted Version Vectors", 2010), quorum accounting (Dynamo §4.5). Hypothesis
prints the failing example and its reproduction blob.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import example, given, settings
from hypothesis import strategies as st

from dynamo_mode import vclock
from dynamo_mode.quorum import ReadQuorum
from dynamo_mode.replica import decode_stored, decode_versions, encode_versions
from dynamo_mode.siblings import (
    Version,
    coordinate,
    join_context,
    make_version,
    obsoletes,
    reconcile,
    same,
)
from dynamo_mode.vclock import Dot

PROPS = settings(max_examples=150, deadline=None, print_blob=True)
SIM_PROPS = settings(PROPS, max_examples=400)
NODES = ("A", "B", "C", "D")
REPLICAS = ("A", "B", "C")
SIM_REPLICAS = ("A", "B")  # two replicas reach the interesting interleavings sooner

clocks = st.dictionaries(st.sampled_from(NODES), st.integers(1, 4), max_size=4)
dots = st.tuples(st.sampled_from(NODES), st.integers(1, 4))
json_values = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["x", "y"])


# Naive oracles -------------------------------------------------------------


def naive_get(c: vclock.VClock, node: str) -> int:
    return c[node] if node in c else 0


def naive_descends(a: vclock.VClock, b: vclock.VClock) -> bool:
    return all(naive_get(a, n) >= naive_get(b, n) for n in set(a) | set(b))


def naive_merge(a: vclock.VClock, b: vclock.VClock) -> dict[str, int]:
    return {n: max(naive_get(a, n), naive_get(b, n)) for n in set(a) | set(b)}


def canonical(v: Version) -> str:
    return json.dumps(v.to_wire(), sort_keys=True)


def naive_reconcile(versions: Sequence[Version]) -> tuple[Version, ...]:
    """Keep v iff no other w obsoletes it, after picking one copy per dot."""
    copies: dict[Dot, Version] = {}
    for v in sorted(versions, key=canonical):
        copies.setdefault(v.dot, v)
    unique = list(copies.values())
    kept = [v for v in unique if not any(obsoletes(w, v) for w in unique)]
    return tuple(sorted(kept, key=lambda v: v.dot))


# Clocks -------------------------------------------------------------------


@PROPS
@given(clocks, clocks, clocks)
def test_merge_is_a_join(a: dict[str, int], b: dict[str, int], c: dict[str, int]) -> None:
    assert vclock.merge(a, b) == vclock.merge(b, a) == naive_merge(a, b)
    assert vclock.merge(vclock.merge(a, b), c) == vclock.merge(a, vclock.merge(b, c))
    assert vclock.merge(a, a) == a
    m = vclock.merge(a, b)
    assert vclock.descends(m, a) and vclock.descends(m, b)
    if vclock.descends(c, a) and vclock.descends(c, b):
        assert vclock.descends(c, m)


@PROPS
@given(clocks, clocks)
def test_compare_is_antisymmetric_and_agrees_with_descends(
    a: dict[str, int], b: dict[str, int]
) -> None:
    mirror = {"equal": "equal", "before": "after", "after": "before", "concurrent": "concurrent"}
    assert vclock.compare(b, a) == mirror[vclock.compare(a, b)]
    assert vclock.descends(a, b) == naive_descends(a, b)
    expected = {
        (True, True): "equal",
        (True, False): "after",
        (False, True): "before",
        (False, False): "concurrent",
    }[(naive_descends(a, b), naive_descends(b, a))]
    assert vclock.compare(a, b) == expected


@PROPS
@given(clocks, dots)
def test_dots_and_clocks(c: dict[str, int], dot: Dot) -> None:
    node, n = dot
    assert vclock.contains(c, dot) == (naive_get(c, node) >= n)
    assert vclock.contains(vclock.add_dot(c, dot), dot)
    assert vclock.add_dot(c, dot) == naive_merge(c, {node: n})
    assert vclock.compare(vclock.increment(c, node), c) == "after"


@PROPS
@given(st.dictionaries(st.text(max_size=12), st.integers(1, 2**70), max_size=30))
def test_context_round_trip(c: dict[str, int]) -> None:
    s = vclock.encode_context(c)
    assert vclock.decode_context(s) == c
    assert s.isascii() and "=" not in s


@PROPS
@given(st.text(max_size=40))
def test_decode_context_raises_only_value_error(s: str) -> None:
    try:
        c = vclock.decode_context(s)
    except ValueError:
        return
    assert vclock.decode_context(vclock.encode_context(c)) == c


# Reconciliation on arbitrary version sets -----------------------------------


@st.composite
def versions(draw: st.DrawFn) -> Version:
    dot = draw(dots)
    context = draw(clocks)
    if vclock.contains(context, dot):
        context = {n: c for n, c in context.items() if n != dot[0]}
    return make_version(dot, context, draw(json_values), draw(st.booleans()))


version_lists = st.lists(versions(), max_size=8)


@PROPS
@given(version_lists, st.randoms(use_true_random=False))
def test_reconcile_equals_oracle_and_ignores_order_and_duplication(
    vs: list[Version], rnd: random.Random
) -> None:
    result = reconcile(vs)
    assert result == naive_reconcile(vs)
    assert [canonical(v) for v in result] == [canonical(v) for v in naive_reconcile(vs)]
    shuffled = vs + vs[: len(vs) // 2]
    rnd.shuffle(shuffled)
    assert [canonical(v) for v in reconcile(shuffled)] == [canonical(v) for v in result]
    assert not any(obsoletes(a, b) for a in result for b in result)
    assert [v.dot for v in result] == sorted({v.dot for v in result})
    assert reconcile(result) == result


# Causally closed histories ------------------------------------------------


def closed_context(seen: Sequence[Version], universe: Sequence[Version]) -> dict[str, int]:
    """join_context(seen), extended until it descends the context of every version it
    contains: the causal closure that whole-set replication guarantees."""
    context = join_context(seen)
    grown = True
    while grown:
        grown = False
        for v in universe:
            if vclock.contains(context, v.dot) and not vclock.descends(context, v.context_clock()):
                context = vclock.merge(context, v.context_clock())
                grown = True
    return context


@st.composite
def causal_universes(draw: st.DrawFn) -> list[Version]:
    universe: list[Version] = []
    highest = dict.fromkeys(NODES, 0)
    for _ in range(draw(st.integers(0, 9))):
        node = draw(st.sampled_from(NODES))
        seen = [v for v in universe if draw(st.booleans())]
        context = closed_context(seen, universe)
        highest[node] = max(highest[node], context.get(node, 0)) + 1
        universe.append(make_version((node, highest[node]), context, len(universe)))
    return universe


@PROPS
@given(st.data())
def test_reconcile_is_associative_on_causal_histories(data: st.DataObject) -> None:
    universe = data.draw(causal_universes())
    left = data.draw(st.lists(st.sampled_from(universe), max_size=8)) if universe else []
    right = data.draw(st.lists(st.sampled_from(universe), max_size=8)) if universe else []
    assert reconcile([*reconcile(left), *reconcile(right)]) == reconcile(left + right)


# Simulated replicas: coordinate + whole-set replication ---------------------


@dataclass
class Cluster:
    """Replicas exchanging whole reconciled sets; ``seen`` records, per written dot,
    the dots its writer had actually read (transitively)."""

    stores: dict[str, tuple[Version, ...]] = field(
        default_factory=lambda: {n: () for n in SIM_REPLICAS}
    )
    snapshots: list[tuple[Version, ...]] = field(default_factory=lambda: [()])
    written: list[Version] = field(default_factory=list)
    seen: dict[Dot, frozenset[Dot]] = field(default_factory=dict)

    def write(self, node: str, snapshot: tuple[Version, ...], deleted: bool) -> None:
        seen = frozenset().union(*({r.dot} | self.seen[r.dot] for r in snapshot))
        new, stored = coordinate(
            self.stores[node], node, join_context(snapshot), len(self.written), deleted, 99
        )
        assert new.dot not in self.seen, "a dot was reused"
        self.stores[node] = stored
        self.written.append(new)
        self.seen[new.dot] = seen

    def sync(self, src: str, dst: str) -> None:
        self.stores[dst] = reconcile([*self.stores[dst], *self.stores[src]])


ops = st.lists(
    st.tuples(
        st.sampled_from(["write", "stale", "blind", "sync"]),
        st.sampled_from(SIM_REPLICAS),
        st.sampled_from(SIM_REPLICAS),
        st.integers(0, 50),
        st.booleans(),
    ),
    max_size=25,
)


def run(program: list[tuple[str, str, str, int, bool]]) -> Cluster:
    """``write`` reads ``other``'s current set, ``stale`` an earlier read, ``blind`` nothing."""
    cluster = Cluster()
    for op, node, other, pick, deleted in program:
        if op == "sync":
            cluster.sync(other, node)
            continue
        if op == "write":
            cluster.snapshots.append(cluster.stores[other])
        snapshot = {
            "write": cluster.snapshots[-1],
            "stale": cluster.snapshots[pick % len(cluster.snapshots)],
            "blind": (),
        }[op]
        cluster.write(node, snapshot, deleted)
    return cluster


@SIM_PROPS
@given(ops)
def test_simulated_replicas_never_lose_an_unseen_write(
    program: list[tuple[str, str, str, int, bool]],
) -> None:
    # Dynamo §4.4 / DVV paper: a version is superseded only by a write whose
    # client had read it (or a version superseding it).
    cluster = run(program)
    for u in cluster.written:
        for v in cluster.written:
            if obsoletes(u, v):
                assert v.dot in cluster.seen[u.dot], (u, v)
    for store in cluster.stores.values():
        assert store == reconcile(store)


@SIM_PROPS
@given(ops, st.data())
def test_simulated_histories_are_causally_closed_and_associative(
    program: list[tuple[str, str, str, int, bool]], data: st.DataObject
) -> None:
    cluster = run(program)
    written = cluster.written
    for u in written:
        for v in written:
            if vclock.contains(u.context_clock(), v.dot):
                assert vclock.descends(u.context_clock(), v.context_clock()), (u, v)
    if written:
        left = data.draw(st.lists(st.sampled_from(written), max_size=8))
        right = data.draw(st.lists(st.sampled_from(written), max_size=8))
        assert reconcile([*reconcile(left), *reconcile(right)]) == reconcile(left + right)


# Quorums ------------------------------------------------------------------

answers = st.lists(
    st.tuples(
        st.sampled_from(["reply", "error"]),
        st.sampled_from([*REPLICAS, "stray"]),
        st.lists(versions(), max_size=3),
    ),
    max_size=10,
)


def first_answers(
    events: Sequence[tuple[str, str, list[Version]]],
) -> dict[str, tuple[str, list[Version]]]:
    first: dict[str, tuple[str, list[Version]]] = {}
    for kind, node, vs in events:
        if node in REPLICAS and node not in first:
            first[node] = (kind, vs)
    return first


def expected_status(first: dict[str, tuple[str, list[Version]]], need: int) -> str:
    replies = sum(1 for kind, _ in first.values() if kind == "reply")
    errors = len(first) - replies
    if replies >= need:
        return "ok"
    return "failed" if errors > len(REPLICAS) - need else "pending"


@PROPS
@given(answers, st.integers(1, len(REPLICAS)))
def test_read_quorum_agrees_with_recomputation(
    events: list[tuple[str, str, list[Version]]], r: int
) -> None:
    q = ReadQuorum(REPLICAS, r)
    for i, (kind, node, vs) in enumerate(events):
        if kind == "reply":
            q.add_reply(node, vs)
        else:
            q.add_error(node, "e")
        first = first_answers(events[: i + 1])
        assert q.status() == expected_status(first, r)
    first = first_answers(events)
    replies = {n: vs for n, (kind, vs) in first.items() if kind == "reply"}
    merged = reconcile(v for vs in replies.values() for v in vs)
    assert q.result() == merged
    stale = {n for n, vs in replies.items() if {v.dot for v in vs} != {v.dot for v in merged}}
    assert q.repairs() == dict.fromkeys(stale, merged)
    assert all(same(q.result(), vs) for n, vs in replies.items() if n not in stale)
    assert q.strays == sum(1 for _, node, _ in events if node == "stray")


@PROPS
@given(version_lists, st.lists(dots, max_size=3))
def test_a_stored_version_reads_back_as_the_checked_decoding_gives_it(
    vs: list[Version], extra: list[Dot]
) -> None:
    """`decode_stored` skips the checks; on anything `encode_versions` wrote it must give
    what the checked `decode_versions` gives (context dots included)."""
    with_dots = []
    for v in vs:
        try:
            mine = [d for d in extra if d != v.dot]
            with_dots.append(make_version(v.dot, v.context_clock(), v.value, v.deleted, mine))
        except ValueError:
            with_dots.append(v)
    raw = encode_versions(with_dots)
    assert decode_stored(raw) == decode_versions(json.loads(raw)) == tuple(with_dots)


# Version.from_wire checks every field itself and builds the version without
# __post_init__; it must accept and refuse exactly what building it through make_version
# (which runs __post_init__) does, and build the same version.
def _through_make_version(d: dict[str, object]) -> Version:
    dot = d["dot"]
    if not isinstance(dot, list) or len(dot) != 2 or not isinstance(d["deleted"], bool):
        raise ValueError("shape")
    ts = d.get("ts", 0)
    if type(ts) is not int or ts < 0:
        raise ValueError("ts")
    context, dots = vclock.validated(d["context"]), vclock.validated_dots(d.get("dots", []))
    expires = d.get("expires_at")
    return make_version((dot[0], dot[1]), context, d["value"], d["deleted"], dots, ts, expires)  # type: ignore[arg-type]


wire_nodes = st.sampled_from(["A", "B", "C"])
# mostly valid fields, so that examples often fail on one check only
wire_counters = (
    st.integers(1, 4) | st.integers(1, 4) | st.integers(1, 4) | st.sampled_from([0, True])
)
wire_dots = st.lists(st.lists(wire_nodes | st.just(1), min_size=2, max_size=2), max_size=3)


@st.composite
def wire_versions(draw: st.DrawFn) -> dict[str, object]:
    d: dict[str, object] = {
        "dot": [draw(wire_nodes | st.just(7)), draw(wire_counters)],
        "context": draw(st.dictionaries(wire_nodes, wire_counters, max_size=3)),
        "value": draw(st.none() | st.integers() | st.text(max_size=3)),
        "deleted": draw(st.booleans() | st.booleans() | st.just(0)),
    }
    for name, value in (
        ("dots", [[n, draw(wire_counters)] for n, _ in draw(wire_dots)]),
        ("ts", draw(st.integers(0, 5) | st.just(-1))),
        ("expires_at", draw(st.none() | st.integers(1, 5) | st.sampled_from([0, -1, 1.5]))),
    ):
        if draw(st.booleans()):
            d[name] = value
    return d


_ONE = {"dot": ["A", 1], "context": {}, "value": 1, "deleted": False}


@settings(PROPS, max_examples=600)
@given(wire_versions())
@example({**_ONE, "deleted": True, "expires_at": 1})
@example({**_ONE, "expires_at": 0})
@example({**_ONE, "context": {"A": 1}})
@example({**_ONE, "dots": [["A", 1]]})
@example({**_ONE, "dot": ["A", True]})
def test_from_wire_accepts_what_make_version_accepts_and_builds_the_same(
    d: dict[str, object],
) -> None:
    try:
        expected: Version | None = _through_make_version(d)
    except ValueError:
        expected = None
    try:
        got: Version | None = Version.from_wire(d)
    except ValueError:
        got = None
    assert got == expected
    if got is not None and expected is not None:
        assert got.__dict__ == expected.__dict__  # equal field by field, types included
