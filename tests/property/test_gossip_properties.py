"""Hypothesis properties of gossip membership (DESIGN.md §4; Dynamo §4.8), each against a naive
oracle or a stated bound:

- ``join``/``merge`` form a join-semilattice over digests (commutative, associative,
  idempotent), so push-pull in any order converges (Demers et al. 1987);
- one update reaches every node within ``dissemination_rounds(n, fanout)`` rounds, itself
  under the issue's 3 * log2(n) + 10, for n <= 1000 and fanout 3;
- in a simulated cluster (manual clock, seeded rng, every pure function of the module in the
  loop), a crashed node is down at every live observer within ``detection_bound``, is never
  reported alive again before it restarts, and is alive again as soon as its new generation
  arrives; live nodes are never suspected.

Every randomized test prints its seed (DESIGN.md §7).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo_mode.membership import (
    Digest,
    Entry,
    beat,
    choose_peers,
    digest,
    dissemination_rounds,
    join,
    merge,
    simulate_dissemination,
)
from dynamo_mode.membership_status import (
    GossipConfig,
    Status,
    detection_bound,
    node_status,
    record_arrivals,
)
from dynamo_mode.phi import PhiWindow

PROPS = settings(max_examples=200, deadline=None, print_blob=True)
SIM_PROPS = settings(max_examples=20, deadline=None, print_blob=True)
CFG = GossipConfig()

versions = st.tuples(st.integers(0, 3), st.integers(0, 5))
digests = st.dictionaries(st.sampled_from("abcde"), versions, max_size=5)


# Naive oracle ----------------------------------------------------------------------------------


def naive_join(a: Digest, b: Digest) -> dict[str, tuple[int, int]]:
    """Per node, the larger (generation, heartbeat) by explicit comparison."""
    out: dict[str, tuple[int, int]] = {}
    for node in set(a) | set(b):
        x, y = a.get(node, (-1, -1)), b.get(node, (-1, -1))
        newer = x[0] > y[0] or (x[0] == y[0] and x[1] >= y[1])
        out[node] = x if newer else y
    return out


def state_of(d: Digest) -> dict[str, Entry]:
    return {n: Entry(g, h, 0.0) for n, (g, h) in d.items()}


# Join-semilattice ------------------------------------------------------------------------------


@PROPS
@given(digests, digests)
def test_join_matches_oracle_and_commutes(a: Digest, b: Digest) -> None:
    assert join(a, b) == join(b, a) == naive_join(a, b)


@PROPS
@given(digests, digests, digests)
def test_join_is_associative(a: Digest, b: Digest, c: Digest) -> None:
    assert join(join(a, b), c) == join(a, join(b, c))


@PROPS
@given(digests, digests)
def test_join_is_idempotent_and_an_upper_bound(a: Digest, b: Digest) -> None:
    ab = join(a, b)
    assert join(a, a) == a
    assert join(ab, a) == join(ab, b) == ab


@PROPS
@given(digests, digests)
def test_merge_is_join_on_digests(local: Digest, remote: Digest) -> None:
    merged, changed = merge(state_of(local), remote, 1.0)
    assert digest(merged) == naive_join(local, remote)
    assert changed == {n for n in merged if merged[n].version != local.get(n)}


@PROPS
@given(digests, st.lists(digests, max_size=4), st.randoms(use_true_random=False))
def test_merge_order_and_repetition_do_not_matter(
    start: Digest, gossip: list[Digest], rnd: random.Random
) -> None:
    shuffled = [*gossip, *gossip]
    rnd.shuffle(shuffled)
    s1, s2 = state_of(start), state_of(start)
    for i, d in enumerate(gossip):
        s1 = merge(s1, d, float(i))[0]
    for i, d in enumerate(shuffled):
        s2 = merge(s2, d, float(i))[0]
    expected: Digest = dict(start)
    for d in gossip:
        expected = naive_join(expected, d)
    assert digest(s1) == digest(s2) == expected


# Dissemination ---------------------------------------------------------------------------------


def issue_bound(n: int) -> int:
    return math.ceil(3 * math.log2(n)) + 10


@pytest.mark.parametrize("n", [10, 100, 1000])
@pytest.mark.parametrize("seed", range(5))
def test_dissemination_fixed_seeds(n: int, seed: int) -> None:
    rounds = simulate_dissemination(n, 3, random.Random(seed), rounds_max=issue_bound(n))
    print(f"seed={seed} n={n} rounds={rounds}")
    assert rounds is not None
    assert rounds <= dissemination_rounds(n, 3) <= issue_bound(n)


@settings(max_examples=40, deadline=None, print_blob=True)
@given(st.integers(2, 1000), st.integers(0, 2**32 - 1))
def test_dissemination_completes_within_the_stated_bound(n: int, seed: int) -> None:
    rounds = simulate_dissemination(n, 3, random.Random(seed), rounds_max=issue_bound(n))
    print(f"seed={seed} n={n} rounds={rounds}")
    assert rounds is not None
    assert rounds <= dissemination_rounds(n, 3) <= issue_bound(n)


@settings(max_examples=60, deadline=None, print_blob=True)
@given(st.integers(1, 60), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_dissemination_small_clusters_any_fanout(n: int, fanout: int, seed: int) -> None:
    rounds = simulate_dissemination(n, fanout, random.Random(seed), rounds_max=100)
    print(f"seed={seed} n={n} fanout={fanout} rounds={rounds}")
    assert rounds is not None
    assert rounds <= dissemination_rounds(n, fanout)
    assert (rounds == 0) == (n == 1)


# Simulated cluster: detection within the bound -------------------------------------------------


@dataclass
class SimNode:
    id: str
    phase: float  # round starts are unsynchronised: phase + k * interval
    generation: int = 1
    up: bool = True
    state: dict[str, Entry] = field(default_factory=dict)
    windows: dict[str, PhiWindow] = field(default_factory=dict)

    def receive(self, d: Digest, now: float) -> None:
        after, changed = merge(self.state, d, now)
        record_arrivals(self.windows, self.state, after, changed, now, CFG)
        self.state = after


@dataclass
class SimCluster:
    """Every node runs beat -> choose_peers -> push-pull merge each round on a manual clock;
    a down node neither starts rounds nor answers. ``seen`` records every status sample."""

    n: int
    rng: random.Random
    nodes: dict[str, SimNode] = field(default_factory=dict)
    seen: list[tuple[float, str, str, Status]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for i in range(self.n):
            node_id = f"n{i}"
            self.nodes[node_id] = SimNode(node_id, self.rng.uniform(0, CFG.interval))

    def run(self, start: float, end: float) -> None:
        for t, kind, node_id in self._events(start, end):
            if kind == "round":
                self._round(self.nodes[node_id], t)
            else:
                self._sample(t)

    def _events(self, start: float, end: float) -> list[tuple[float, str, str]]:
        events = [(t, "check", "") for t in _ticks(start, end, 0.0, CFG.interval / 2)]
        for node in self.nodes.values():
            events += [(t, "round", node.id) for t in _ticks(start, end, node.phase, CFG.interval)]
        return sorted(events)

    def _round(self, node: SimNode, now: float) -> None:
        if not node.up:
            return
        node.state = beat(node.state, node.id, node.generation, now)
        for peer_id in choose_peers(self.rng, self.nodes, node.id, CFG.fanout):
            peer = self.nodes[peer_id]
            if peer.up:
                peer.receive(digest(node.state), now)  # push
                node.receive(digest(peer.state), now)  # pull

    def _sample(self, now: float) -> None:
        for obs in self.nodes.values():
            if obs.up:
                for other in self.nodes:
                    if other != obs.id:
                        s = node_status(obs.windows.get(other), now, self.n, CFG)
                        self.seen.append((now, obs.id, other, s))


def _ticks(start: float, end: float, phase: float, step: float) -> list[float]:
    """The times phase + k * step within [start, end)."""
    k = math.ceil((start - phase) / step)
    times = [phase + i * step for i in range(k - 1, k + int((end - start) / step) + 2)]
    return [t for t in times if start <= t < end]


def _first_down(seen: list[tuple[float, str, str, Status]], observer: str, node: str) -> float:
    return min(t for t, o, x, s in seen if o == observer and x == node and s == "down")


@SIM_PROPS
@given(st.sampled_from([3, 5, 10, 20]), st.integers(0, 2**32 - 1))
def test_a_crashed_node_is_down_everywhere_within_the_bound(n: int, seed: int) -> None:
    print(f"seed={seed} n={n}")
    rng = random.Random(seed)
    cluster = SimCluster(n, rng)
    warm, victim = 10.0, cluster.nodes["n0"]
    crash = warm + rng.uniform(0, CFG.interval)
    bound = detection_bound(CFG.interval, CFG.fanout, n, CFG.thresholds)
    cluster.run(0.0, crash)
    victim.up = False
    cluster.run(crash, crash + bound + 2.0)
    live = [o for o in cluster.nodes if o != victim.id]
    settled = [x for x in cluster.seen if x[0] >= 2.0]  # every window has heard a beat by now
    assert all(s == "alive" for _, _, x, s in settled if x != victim.id), "false suspicion"
    assert all(s == "alive" for t, _, x, s in settled if x == victim.id and t < crash)
    delays = [_first_down(cluster.seen, o, victim.id) - crash for o in live]
    print(f"detection delays: max {max(delays):.2f} s, bound {bound:.2f} s")
    assert max(delays) <= bound
    after = [(t, o, s) for t, o, x, s in cluster.seen if x == victim.id and t >= crash]
    for o in live:
        _assert_monotone([s for _, obs, s in after if obs == o])


def _assert_monotone(statuses: list[Status]) -> None:
    rank = {"alive": 0, "suspect": 1, "down": 2}
    ranks = [rank[s] for s in statuses]
    assert ranks == sorted(ranks), statuses


@SIM_PROPS
@given(st.sampled_from([3, 5, 10]), st.integers(0, 2**32 - 1))
def test_a_restarted_node_is_alive_again_on_its_new_generation(n: int, seed: int) -> None:
    print(f"seed={seed} n={n}")
    rng = random.Random(seed)
    cluster = SimCluster(n, rng)
    victim = cluster.nodes["n0"]
    cluster.run(0.0, 5.0)
    victim.up = False
    cluster.run(5.0, 20.0)
    assert {s for t, _, x, s in cluster.seen if x == victim.id and t >= 19.0} == {"down"}
    victim.up, victim.generation = True, 2
    victim.state, victim.windows = {}, {}  # a new process remembers nothing
    cluster.seen.clear()
    rejoined = dissemination_rounds(n, CFG.fanout) + 1
    cluster.run(20.0, 20.0 + rejoined * CFG.interval)
    final = cluster.seen[-1][0]
    assert {s for t, _, x, s in cluster.seen if x == victim.id and t == final} == {"alive"}
    for o in cluster.nodes.values():
        if o.id != victim.id:
            assert o.state[victim.id].generation == 2
            _assert_back_alive(
                [s for _, obs, x, s in cluster.seen if obs == o.id and x == victim.id]
            )


def _assert_back_alive(statuses: list[Status]) -> None:
    """down until the new generation arrives, alive from then on: no suspect in between."""
    first_alive = statuses.index("alive")
    assert set(statuses[:first_alive]) <= {"down"}
    assert set(statuses[first_alive:]) == {"alive"}
