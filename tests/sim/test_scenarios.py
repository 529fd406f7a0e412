"""Dynamo coordinator scenarios over the simulated network (DESIGN.md §7, simulation tier).

Each scenario runs the real `DynamoCoordinator` and `DynamoReplica`s (MemoryEngine) over
`SimTransport` on a virtual-time loop: delays and timeouts are exact and take no real
time. Every scenario prints its seed; set KV_SIM_SEED to replay one with another seed.
Section numbers are those of DeCandia et al., "Dynamo: Amazon's Highly Available
Key-value Store", SOSP 2007. How to write one: docs/simulation.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from dynamo_mode.coordinator import DynamoCoordinator, Placement, ReadResult
from dynamo_mode.replica import KeyRef
from dynamo_mode.siblings import Version
from kv.errors import QuorumUnavailable, SiblingLimit, UnknownOutcome
from tests.sim.sim_transport import (
    LinkRule,
    LostAs,
    SimDeadlock,
    SimNetwork,
    SimTransport,
    run_virtual,
)

ABC = ("a", "b", "c")
TIMEOUT = 1.0  # every coordinator call's timeout, virtual seconds
HOP = 0.01  # one-way latency of the healthy network
WHERE = Placement(KeyRef(partition=7, uid=1, key="k"), ABC)  # N=3, primaries a, b, c


# ---------------------------------------------------------------------- the harness
def seed_for(default: int) -> int:
    seed = int(os.environ.get("KV_SIM_SEED", default))
    print(f"simulation seed={seed} (replay: KV_SIM_SEED={seed})")
    return seed


@dataclass
class Cluster:
    """Nodes on one SimNetwork, each with a replica and a coordinator."""

    net: SimNetwork
    coordinators: dict[str, DynamoCoordinator] = field(default_factory=dict)

    async def put(
        self,
        via: str,
        value: Any,
        context: dict[str, int] | None = None,
        w: int = 2,
        where: Placement = WHERE,
        max_siblings: int = 32,
    ) -> dict[str, int]:
        return await self.coordinators[via].put(
            where, context or {}, value, False, w, max_siblings, TIMEOUT
        )

    async def get(self, via: str, r: int = 2, where: Placement = WHERE) -> ReadResult:
        return await self.coordinators[via].get(where, r, TIMEOUT)

    def state(self, node: str, where: Placement = WHERE) -> tuple[Version, ...]:
        """The replica-local versions at `node` (what /v1/admin/replica shows)."""
        return self.net.node(node).replica.fetch(where.ref)

    def values_at(self, node: str, where: Placement = WHERE) -> list[Any]:
        return [v.value for v in self.state(node, where)]

    async def settle(self) -> None:
        """Let every background call (late stores, read repair) finish: they are bounded
        by a few coordinator timeouts."""
        await self.net.advance(10 * TIMEOUT)

    def elapsed_since(self, start: float) -> float:
        return round(self.net.now() - start, 9)


def simulate(
    seed: int,
    body: Callable[[Cluster], Awaitable[None]],
    nodes: Sequence[str] = ABC,
    base: LinkRule | None = None,
) -> None:
    async def main() -> None:
        net = SimNetwork(seed, base or LinkRule(delay=HOP))
        cluster = Cluster(net)
        for n in nodes:
            net.add_node(n)
            cluster.coordinators[n] = DynamoCoordinator(n, SimTransport(net, n), lambda _: True)
        try:
            await body(cluster)
        except BaseException:
            print(f"last messages (seed={seed}):\n{net.format_trace()}")
            raise
        finally:
            for coordinator in cluster.coordinators.values():
                await coordinator.close()

    run_virtual(main())


def live_values(result: ReadResult) -> list[Any]:
    return sorted(v.value for v in result.live)


def same_versions(states: Iterable[tuple[Version, ...]]) -> bool:
    wires = {json.dumps([v.to_wire() for v in s], sort_keys=True) for s in states}
    return len(wires) == 1


# ---------------------------------------------------------------------- 0. the clock
def test_virtual_time_is_exact_and_instant() -> None:
    async def body() -> float:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(3600.0)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), 2.5)
        return loop.time()

    assert run_virtual(body()) == 3602.5


def test_a_stuck_simulation_raises_instead_of_hanging() -> None:
    with pytest.raises(SimDeadlock):
        run_virtual(asyncio.Event().wait())


@pytest.mark.parametrize(
    ("fields", "named"),
    [({"drop": 1.5}, "drop"), ({"delay": -1.0}, "delay"), ({"lost_as": "lost"}, "lost_as")],
)
def test_link_rules_are_validated(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        LinkRule(**fields)


def test_partition_groups_must_cover_every_node_once() -> None:
    async def body(c: Cluster) -> None:
        with pytest.raises(ValueError, match="disjoint and cover"):
            c.net.partition({"a"}, {"b"})
        with pytest.raises(ValueError, match="disjoint and cover"):
            c.net.partition({"a", "b"}, {"b", "c"})

    simulate(0, body)


# ---------------------------------------------------------------------- 1. happy path
def test_1_happy_path_quorum_write_then_read() -> None:
    """Dynamo §4.5: N=3, W=2, R=2 — the coordinator answers after W acks / R replies."""

    async def body(c: Cluster) -> None:
        start = c.net.now()
        context = await c.put("a", "v1", w=2)
        assert context == ({"a": 1}, ())  # the dot a minted, nothing else
        # a minted locally (no hop), then the first store round trip to b or c: 2 hops
        assert c.elapsed_since(start) == 2 * HOP

        start = c.net.now()
        result = await c.get("b", r=2)
        assert live_values(result) == ["v1"]
        assert result.context == ({"a": 1}, ())
        assert c.elapsed_since(start) == 2 * HOP  # b's own reply + one round trip

        await c.settle()
        assert all(c.values_at(n) == ["v1"] for n in ABC)

    simulate(seed_for(1), body)


# ---------------------------------------------------------------------- 2. partition + heal
def test_2_minority_replica_partitioned_then_read_repaired() -> None:
    """Dynamo §4.5 (R + W > N keeps quorum reads fresh) and §5 (read repair): with c cut
    off, W=2 writes still succeed and R=2 reads see them; after the heal one read that asks
    c repairs c's replica-local state (a GET asks R replicas, its coordinator first:
    coordinated on c, it asks c)."""

    async def body(c: Cluster) -> None:
        c.net.partition({"a", "b"}, {"c"})
        context = await c.put("a", "v1", w=2)
        assert live_values(await c.get("b", r=2)) == ["v1"]
        await c.put("a", "v2", context=context, w=2)
        await c.settle()
        assert c.values_at("a") == c.values_at("b") == ["v2"]
        assert c.values_at("c") == []  # it missed both writes

        c.net.heal()
        await c.settle()
        assert c.values_at("c") == []  # healing alone repairs nothing (no anti-entropy here)

        assert live_values(await c.get("c", r=2)) == ["v2"]
        await c.settle()  # read repair runs after the reply
        assert c.values_at("c") == ["v2"]
        assert same_versions(c.state(n) for n in ABC)

    simulate(seed_for(2), body)


def _fetches(c: Cluster, src: str) -> list[str]:
    """Nodes `src` sent a fetch to (delivered or not), in order."""
    return [e.dst for e in c.net.trace if e.src == src and e.op == "fetch" and e.dst != src]


def test_2b_a_read_asks_r_replicas_and_more_only_on_error_slowness_or_a_miss() -> None:
    """A GET (R=2) coordinated on a replica asks itself and one other, the others in turn
    (quorum.more_reads); a black-holed replica makes it ask the third after the hedge
    delay; a key no replica asked has is confirmed absent by the rest before the
    not-found."""

    async def body(c: Cluster) -> None:
        await c.put("a", "v1", w=3)
        start = len(c.net.trace)
        assert live_values(await c.get("a", r=2)) == ["v1"]
        assert len([e for e in c.net.trace[start:] if e.op == "fetch" and e.dst != "a"]) == 1

        c.net.cut("a", "b")  # a's requests to b vanish: b looks slow
        for _ in range(2):  # reads rotate whom they ask: one of the two asks b first
            before, start = c.net.now(), len(c.net.trace)
            assert live_values(await c.get("a", r=2)) == ["v1"]
            assert c.elapsed_since(before) < TIMEOUT  # the hedge, not the timeout
            asked = [e.dst for e in c.net.trace[start:] if e.op == "fetch" and e.src == "a"]
            assert "c" in asked and asked[0] in ("b", "c"), asked
        assert _fetches(c, "a").count("b") >= 1
        c.net.heal()
        await c.settle()

        missing = Placement(KeyRef(partition=7, uid=1, key="nobody"), ABC)
        start = len(c.net.trace)
        assert (await c.get("a", r=2, where=missing)).versions == ()
        asked = {e.dst for e in c.net.trace[start:] if e.op == "fetch" and e.src == "a"}
        assert asked == {"b", "c"}  # a miss: every replica answered the not-found

    simulate(seed_for(21), body)


# ---------------------------------------------------------------------- 3. reply lost
def test_3a_store_acks_lost_is_unknown_outcome_and_the_write_is_visible() -> None:
    """Dynamo §4.5: b and c apply a's stores but their acks never reach a. The coordinator
    must say "unknown outcome" (HTTP 504), never "failed" — the value is there."""

    async def body(c: Cluster) -> None:
        c.net.cut("b", "a")  # replies from b to a are lost; a's requests still arrive
        c.net.cut("c", "a")
        start = c.net.now()
        with pytest.raises(UnknownOutcome) as info:
            await c.put("a", "v1", w=2)
        assert not isinstance(info.value, QuorumUnavailable)
        assert (info.value.details["acked"], info.value.details["required"]) == (1, 2)
        assert c.elapsed_since(start) == TIMEOUT
        assert all(c.values_at(n) == ["v1"] for n in ABC)  # applied everywhere

        c.net.heal()
        assert live_values(await c.get("b", r=2)) == ["v1"]

    simulate(seed_for(3), body)


def test_3b_minting_replica_reply_lost_is_unknown_outcome_and_becomes_visible() -> None:
    """Dynamo §4.5 with a coordinator outside the preference list: the replica that mints
    the version (a) stores it, but its reply to d is lost. d cannot tell a slow replica from
    a lost reply, so it reports unknown outcome; read repair (§5) then spreads the value."""

    async def body(c: Cluster) -> None:
        c.net.cut("a", "d")
        with pytest.raises(UnknownOutcome):
            await c.put("d", "v1", w=2)
        assert c.values_at("a") == ["v1"]

        c.net.heal()
        assert live_values(await c.get("d", r=3)) == ["v1"]
        await c.settle()
        assert all(c.values_at(n) == ["v1"] for n in ABC)

    simulate(seed_for(3), body, nodes=(*ABC, "d"))


# ---------------------------------------------------------------------- 4. requests dropped
def test_4a_refused_by_every_replica_is_quorum_unavailable_and_nothing_appears() -> None:
    """Dynamo §4.5: no replica received the request, so the coordinator may say "not
    applied, retry" (503), and the value must never show up."""

    async def body(c: Cluster) -> None:
        for n in ABC:
            c.net.set_link("d", n, LinkRule(drop=1.0, lost_as="unreachable"))
        with pytest.raises(QuorumUnavailable):
            await c.put("d", "ghost", w=2)

        c.net.heal()
        await c.settle()
        assert live_values(await c.get("d", r=3)) == []
        assert all(c.values_at(n) == [] for n in ABC)

    simulate(seed_for(4), body, nodes=(*ABC, "d"))


def test_4b_black_holed_requests_are_unknown_outcome_and_nothing_appears() -> None:
    """The same drops, but silent: d cannot know the request was never delivered, so it
    must not claim "not applied". Unknown outcome is honest both ways."""

    async def body(c: Cluster) -> None:
        for n in ABC:
            c.net.set_link("d", n, LinkRule(drop=1.0, lost_as="timeout"))
        with pytest.raises(UnknownOutcome):
            await c.put("d", "ghost", w=2)

        c.net.heal()
        await c.settle()
        assert live_values(await c.get("d", r=3)) == []
        assert all(c.values_at(n) == [] for n in ABC)

    simulate(seed_for(4), body, nodes=(*ABC, "d"))


# ---------------------------------------------------------------------- 5. siblings
def test_5_concurrent_writes_across_a_partition_become_siblings_then_resolve() -> None:
    """Dynamo §4.4: blind writes on both sides of a partition are concurrent; after the
    heal a read returns both as siblings with a context joining them, and a write with
    that context supersedes both. W=1 so each side can acknowledge on its own (with
    sloppy quorum, §4.6, W=2 would too)."""

    async def body(c: Cluster) -> None:
        c.net.partition({"a", "b"}, {"c"})
        assert await c.put("a", "left", w=1) == ({"a": 1}, ())
        assert await c.put("c", "right", w=1) == ({"c": 1}, ())
        await c.settle()

        c.net.heal()
        result = await c.get("b", r=3)
        assert live_values(result) == ["left", "right"]
        assert result.context == ({"a": 1, "c": 1}, ())

        await c.put("b", "merged", context=result.context, w=2)
        assert live_values(await c.get("c", r=2)) == ["merged"]
        await c.settle()
        assert all(c.values_at(n) == ["merged"] for n in ABC)
        assert same_versions(c.state(n) for n in ABC)

    simulate(seed_for(5), body)


# ---------------------------------------------------------------------- 6. random faults
NODES5 = ("a", "b", "c", "d", "e")
KEYS = tuple(f"k{i}" for i in range(6))
CLIENTS = 8
OPS_PER_CLIENT = 50
FAULT_PHASE = 40.0  # virtual seconds of nemesis activity
THINK = 0.5  # max pause between a client's ops, virtual seconds
LOSSY = LinkRule(drop=0.1, delay=0.002, jitter=0.04)


def placement(key: str) -> Placement:
    """N=3 consecutive nodes from a crc32-chosen start (stable across runs, unlike hash())."""
    start = zlib.crc32(key.encode()) % len(NODES5)
    replicas = tuple(NODES5[(start + i) % len(NODES5)] for i in range(3))
    return Placement(KeyRef(partition=KEYS.index(key), uid=1, key=key), replicas)


@dataclass
class Ledger:
    """Every write id by outcome, and every id a read returned, per key."""

    ok: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in KEYS})
    unknown: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in KEYS})
    failed: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in KEYS})
    seen: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in KEYS})
    acked_at: dict[str, float] = field(default_factory=dict)  # write id -> ack time
    reads: list[tuple[str, float, set[str]]] = field(default_factory=list)  # key, start, ids
    outcomes: list[str] = field(default_factory=list)

    def record(self, key: str, write_id: str, outcome: str, what: str, now: float) -> None:
        {"ok": self.ok, "unknown": self.unknown, "failed": self.failed}[outcome][key].add(write_id)
        if outcome == "ok":
            self.acked_at[write_id] = now
        self.outcomes.append(f"{what}: {outcome}")


def ids_in(result: ReadResult) -> set[str]:
    return {i for v in result.live for i in v.value}


async def client(c: Cluster, ledger: Ledger, name: str, rng: random.Random) -> None:
    """A W=2/R=2 workload: add-set read-modify-writes (the new value is the union of the
    siblings read plus a fresh id), blind writes of a fresh id, and plain reads."""
    for n in range(OPS_PER_CLIENT):
        await c.net.advance(rng.uniform(0.0, THINK))
        key, via, roll = rng.choice(KEYS), rng.choice(NODES5), rng.random()
        where, new_id = placement(key), f"{name}.{n}"
        if roll < 0.25:
            outcome = await write(c, via, where, [new_id], {})
            ledger.record(key, new_id, outcome, f"{name} blind {key} via {via}", c.net.now())
            continue
        started = c.net.now()
        try:
            read = await c.get(via, r=2, where=where)
        except QuorumUnavailable:
            ledger.outcomes.append(f"{name} read {key} via {via}: unavailable")
            continue
        ledger.seen[key] |= ids_in(read)
        ledger.reads.append((key, started, ids_in(read)))
        if roll < 0.4:
            continue
        value = sorted(ids_in(read) | {new_id})
        outcome = await write(c, via, where, value, read.context)
        ledger.record(key, new_id, outcome, f"{name} rmw {key} via {via}", c.net.now())


async def write(
    c: Cluster, via: str, where: Placement, value: list[str], context: dict[str, int]
) -> str:
    try:
        await c.put(via, value, context=context, w=2, where=where)
    except UnknownOutcome:
        return "unknown"
    except (QuorumUnavailable, SiblingLimit):
        return "failed"  # certainly not applied
    return "ok"


async def nemesis(net: SimNetwork, rng: random.Random) -> None:
    """Lossy, jittery links throughout; partitions and one-way cuts come and go."""
    net.set_default(LOSSY)
    while net.now() < FAULT_PHASE:
        await net.advance(rng.uniform(0.5, 2.0))
        net.heal()
        net.set_default(LOSSY)
        fault = rng.choice(("none", "partition", "cut"))
        lost_as: LostAs = rng.choice(("unreachable", "timeout"))
        if fault == "partition":
            side = set(rng.sample(NODES5, rng.randint(1, 2)))
            net.partition(side, set(NODES5) - side, lost_as=lost_as)
        elif fault == "cut":
            for _ in range(3):
                src, dst = rng.sample(NODES5, 2)
                net.cut(src, dst, lost_as=lost_as)
    net.heal()


async def random_run(c: Cluster) -> Ledger:
    ledger = Ledger()
    tasks = [nemesis(c.net, c.net.rng("nemesis"))]
    tasks += [client(c, ledger, f"c{i}", c.net.rng(f"client{i}")) for i in range(CLIENTS)]
    await asyncio.gather(*tasks)
    c.net.heal()
    await c.settle()
    for key in KEYS:  # the full read pass: R = N, then read repair
        final = await c.get(placement(key).replicas[0], r=3, where=placement(key))
        ledger.seen[key] |= ids_in(final)
    await c.settle()
    return ledger


def check(c: Cluster, ledger: Ledger) -> None:
    for key in KEYS:
        where = placement(key)
        states = [c.state(n, where) for n in where.replicas]
        assert same_versions(states), f"{key}: replicas differ after heal + read pass: {states}"
        final = {i for v in states[0] if not v.deleted for i in v.value}
        lost = ledger.ok[key] - final
        assert not lost, f"{key}: acknowledged writes lost: {sorted(lost)}"
        phantoms = (final | ledger.seen[key]) - ledger.ok[key] - ledger.unknown[key]
        assert not phantoms, f"{key}: values never written or certainly not applied: {phantoms}"
    for key, started, ids in ledger.reads:
        # R + W > N: an R=2 read overlaps every W=2 ack set, and the add-set value carries
        # superseded ids, so it sees every write acknowledged before it began.
        missed = {i for i in ledger.ok[key] if ledger.acked_at[i] < started} - ids
        assert not missed, f"{key}: read at t={started:.4f} missed acknowledged {missed}"


@pytest.mark.parametrize("seed", range(100, 110))
def test_6_random_drops_delays_partitions_lose_no_acknowledged_write(seed: int) -> None:
    """Dynamo §4.4, §4.5, §5 under random faults: every R=2 read sees every W=2 write
    acknowledged before it began (R + W > N); every acknowledged write survives and nothing
    certainly-failed or never-written appears, once healed and read at R=N; replicas end
    identical."""
    seed = seed_for(seed)

    async def body(c: Cluster) -> None:
        ledger = await random_run(c)
        summary = {
            kind: sum(len(s) for s in getattr(ledger, kind).values())
            for kind in ("ok", "unknown", "failed")
        }
        print(f"writes {summary}; network {dict(c.net.stats)}")
        check(c, ledger)
        assert summary["ok"] > 0 and c.net.stats["reply lost"] > 0

    simulate(seed, body, nodes=NODES5)


def test_6_random_run_is_deterministic_given_the_seed() -> None:
    def run_once() -> tuple[list[str], list[str]]:
        out: list[tuple[list[str], list[str]]] = []

        async def body(c: Cluster) -> None:
            ledger = await random_run(c)
            out.append((ledger.outcomes, [str(e) for e in c.net.trace]))

        simulate(seed_for(7), body, nodes=NODES5)
        return out[0]

    assert run_once() == run_once()
