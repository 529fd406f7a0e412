"""Gossip membership state: heartbeat versions, their merge, peer choice and dissemination
(DESIGN.md §4 failure detection; Dynamo §4.8; design note: docs/gossip.md).

Each node owns one entry, its version ``(generation, heartbeat)``: the owner bumps ``heartbeat``
once per gossip interval (``beat``) and ``generation`` once per process start (Cassandra's
generation: a persisted counter or the start time in whole seconds; it must grow across
restarts). Versions compare lexicographically, so ``join`` is a pointwise max, a
join-semilattice (commutative, associative, idempotent): any order, repetition or grouping of
push-pull exchanges converges to the same digest (Demers et al. 1987, anti-entropy).

What a node concludes from these versions - alive, suspect or down - is
dynamo_mode/membership_status.py.

Pure: no I/O, clocks or global randomness; ``now``, ``rng`` and the members are parameters.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Mapping
from typing import NamedTuple

Version = tuple[int, int]  # (generation, heartbeat), ordered lexicographically
Digest = Mapping[str, Version]

MAX_DIGEST_ENTRIES = 10_000


class Entry(NamedTuple):
    generation: int
    heartbeat: int
    changed_at: float  # local time the version last advanced here; never gossiped

    @property
    def version(self) -> Version:
        return (self.generation, self.heartbeat)


GossipState = Mapping[str, Entry]


# State and merge ------------------------------------------------------------------------------


def digest(state: GossipState) -> dict[str, Version]:
    """What a node gossips: versions only; local times stay local."""
    return {node: e.version for node, e in state.items()}


def join(a: Digest, b: Digest) -> dict[str, Version]:
    """Pointwise max of versions: the least upper bound of two digests."""
    out = dict(a)
    for node, version in b.items():
        if node not in out or version > out[node]:
            out[node] = version
    return out


def merge(
    local: GossipState, remote: Digest, now: float
) -> tuple[dict[str, Entry], frozenset[str]]:
    """``digest(result) == join(digest(local), remote)``; the nodes whose version advanced get
    ``changed_at = now`` and are returned as changed, the others keep their entry."""
    out = dict(local)
    changed: set[str] = set()
    for node, (generation, heartbeat) in remote.items():
        mine = local.get(node)
        if mine is None or (generation, heartbeat) > mine.version:
            out[node] = Entry(generation, heartbeat, now)
            changed.add(node)
    return out, frozenset(changed)


def beat(state: GossipState, self_id: str, generation: int, now: float) -> dict[str, Entry]:
    """The owner's once-per-round heartbeat; a new generation restarts the counter at 1, which
    still outranks every version of older generations."""
    mine = state.get(self_id)
    if mine is not None and mine.generation > generation:
        raise ValueError(
            f"generation={generation!r}: older than {mine.generation} already gossiped for "
            f"{self_id!r}; generations must grow across restarts"
        )
    heartbeat = mine.heartbeat + 1 if mine is not None and mine.generation == generation else 1
    return {**state, self_id: Entry(generation, heartbeat, now)}


def parse_digest(raw: object) -> dict[str, Version]:
    """Trust boundary for a peer's digest as decoded JSON: {node: [generation, heartbeat]}."""
    if not isinstance(raw, dict):
        raise ValueError(f"digest must be an object, got {type(raw).__name__}")
    if len(raw) > MAX_DIGEST_ENTRIES:
        raise ValueError(f"digest has {len(raw)} entries, more than {MAX_DIGEST_ENTRIES}")
    return {_parse_node(node): _parse_version(node, v) for node, v in raw.items()}


def _parse_node(node: object) -> str:
    if not isinstance(node, str) or not node:
        raise ValueError(f"digest node id must be a non-empty string, got {node!r}")
    return node


def _parse_version(node: str, raw: object) -> Version:
    if isinstance(raw, list | tuple) and len(raw) == 2:
        generation, heartbeat = raw
        if _is_count(generation) and _is_count(heartbeat):
            return (generation, heartbeat)
    raise ValueError(f"digest[{node!r}]={raw!r}: must be [generation, heartbeat], ints >= 0")


def _is_count(x: object) -> bool:
    return type(x) is int and x >= 0


# Peer choice and dissemination ----------------------------------------------------------------


def choose_peers(
    rng: random.Random, members: Collection[str], self_id: str, fanout: int
) -> list[str]:
    """``min(fanout, others)`` distinct members other than ``self_id``, uniformly at random;
    a function of the rng state and the member *set* only (not its iteration order)."""
    if fanout < 0:
        raise ValueError(f"fanout={fanout!r}: must be >= 0")
    others = sorted(set(members) - {self_id})
    return [others[i] for i in _sample(rng, len(others), fanout)]


def _sample(rng: random.Random, population: int, k: int) -> list[int]:
    return rng.sample(range(population), min(k, population))


def simulate_dissemination(n: int, fanout: int, rng: random.Random, rounds_max: int) -> int | None:
    """Rounds until one update held by node 0 reaches all ``n`` nodes under synchronous
    push-pull gossip: each round every node exchanges with ``fanout`` peers chosen as
    ``choose_peers`` does, and an exchange informs both ends if either was informed at the
    start of the round. None if it needs more than ``rounds_max`` rounds."""
    if n < 1:
        raise ValueError(f"n={n!r}: must be >= 1")
    informed = [i == 0 for i in range(n)]
    count, rounds = 1, 0
    while count < n:
        if rounds == rounds_max:
            return None
        count += _push_pull_round(informed, fanout, rng)
        rounds += 1
    return rounds


def _push_pull_round(informed: list[bool], fanout: int, rng: random.Random) -> int:
    """One synchronous round, in place; returns how many nodes learned the update."""
    n = len(informed)
    start = list(informed)
    learned = 0
    for i in range(n):
        for j in _sample(rng, n - 1, fanout):
            peer = j + (j >= i)  # index among the others -> node id, as in choose_peers
            if start[i] or start[peer]:
                learned += (not informed[i]) + (not informed[peer])
                informed[i] = informed[peer] = True
    return learned


def dissemination_rounds(n: int, fanout: int) -> int:
    """Stated bound on the rounds ``simulate_dissemination`` needs: 2 * log_{k+1}(n) + 1 with
    k = min(fanout, n - 1). Push alone multiplies the informed set by up to k + 1 per round
    while it is small (log_{k+1} n rounds), and pull ends the tail doubly exponentially (Karp
    et al. 2000); the second log term is slack. The measured maximum is ~log_{k+1}(n) + 1
    (docs/gossip.md); tests/property/test_gossip_properties.py checks the bound."""
    if n <= 1:
        return 0
    k = min(fanout, n - 1)
    return math.ceil(2 * math.log(n) / math.log(k + 1)) + 1
