"""Active anti-entropy: periodic Merkle exchanges between replicas (Dynamo §4.7).

Every `interval` (while the node serves a write load, at most once per
`Throttle.busy_interval`) this node takes the next partition it replicates (round robin), picks
one other replica of it (seeded rng), walks the two trees with `merkle_diff.diff_steps` — each
query is one internode call, awaited between steps — and then repairs the differing keys
in both directions by sending whole reconciled version sets (`store`, a CRDT merge, so a
repair is idempotent and order-free). At most `budget` keys are repaired per exchange; a
truncated exchange resumes from `resume_bucket` next time, so unrepairable keys cannot
hide the rest of a partition.

The queries and answers are typed internode messages (dynamo_mode/messages.py, `ae_query`);
the peer answers them in dynamo_mode/replica_server.py.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dynamo_mode import merkle_diff
from dynamo_mode.messages import AE_QUERY, FETCH, STORE, KeyRequest, StoreRequest, TreeQuery
from dynamo_mode.replica import DynamoReplica, KeyRef
from kv import routing
from kv.meta import Metadata
from kv.periodic import Periodic
from kv.transport import Transport

log = logging.getLogger(__name__)


def replicated_partitions(md: Metadata, node_id: str) -> dict[int, tuple[str, ...]]:
    """Partitions this node replicates for some eventual keyspace → their replicas (pure)."""
    widest = max((k.replication for k in md.keyspaces if k.consistency == "eventual"), default=0)
    out = {}
    for p in range(md.partitions):
        replicas = routing.replicas(md, "eventual", p, widest) if widest else ()
        if node_id in replicas:
            out[p] = replicas
    return out


@dataclass
class ExchangeReport:
    partition: int
    peer: str
    differing: int
    repaired: int
    truncated: bool
    stats: merkle_diff.DiffStats
    bytes_repaired: int = 0


@dataclass
class Totals:
    """Cumulative counters since start-up (`AntiEntropy.reports` keeps only the last 100)."""

    exchanges: int = 0
    keys_differing: int = 0
    keys_repaired: int = 0
    queries: int = 0  # Merkle walk round trips
    hashes: int = 0  # node hashes + bucket entries received
    bytes_transferred: int = 0  # Merkle walk: hash and key bytes received
    bytes_repaired: int = 0  # repair: version sets sent to the peer

    def add(self, r: ExchangeReport) -> None:
        self.exchanges += 1
        self.keys_differing += r.differing
        self.keys_repaired += r.repaired
        self.queries += r.stats.queries
        self.hashes += r.stats.hashes
        self.bytes_transferred += r.stats.bytes_transferred
        self.bytes_repaired += r.bytes_repaired


@dataclass
class Throttle:
    """Anti-entropy yields to a write load, as Riak's entropy manager slows its exchanges
    while vnode queues are long: while this node coordinates more than `busy_writes_per_s`
    client writes a second, its exchanges are at least `busy_interval` apart instead of
    one per round. Under such a load an exchange re-hashes every Merkle path the writes
    dirtied and compares trees that the writes in flight keep apart anyway: measured 10-
    15 % of the server CPU of a 16-client put load (docs/benchmarks.md, session 9).
    Exchanges never stop: a busy node still sweeps its partitions, `busy_interval` apart."""

    writes: Callable[[], int]  # client writes this node coordinated since it started
    clock: Callable[[], float] = time.monotonic
    busy_writes_per_s: float = 100.0  # NodeConfig.anti_entropy_busy_writes_per_s
    busy_interval: float = 4.0  # NodeConfig.anti_entropy_busy_interval_s
    deferred: int = 0  # rounds that skipped their exchange
    _seen: tuple[float, int] | None = None
    _last: float = float("-inf")

    def allow(self) -> bool:
        """Whether this round may exchange (called once per round)."""
        now, writes = self.clock(), self.writes()
        seen, self._seen = self._seen, (now, writes)
        busy = seen is not None and writes - seen[1] > self.busy_writes_per_s * (now - seen[0])
        if busy and now - self._last < self.busy_interval:
            self.deferred += 1
            return False
        self._last = now
        return True


@dataclass
class AntiEntropy:
    replica: DynamoReplica
    transport: Transport
    self_id: str
    metadata: Callable[[], Metadata]
    interval: float = 0.25  # seconds between exchanges (NodeConfig.anti_entropy_interval_s)
    budget: int = 1000  # keys repaired per exchange (bounds bandwidth and CPU)
    timeout: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    reports: list[ExchangeReport] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    _next: int = 0
    _resume: dict[tuple[int, str], int] = field(default_factory=dict)
    _loop: Periodic | None = None
    throttle: Throttle | None = None

    def start(self) -> None:
        # start the round robin at a random partition: nodes that start together would
        # otherwise sweep in step and repair the same keys twice (measured 1.15-1.8x)
        self._next = self.rng.randrange(1 << 16)
        self._loop = Periodic("anti-entropy", self.interval, self.round_once)
        self._loop.start()

    async def round_once(self) -> ExchangeReport | None:
        """One round of the loop: the next exchange, unless the throttle defers it."""
        if self.throttle is not None and not self.throttle.allow():
            return None
        return await self.exchange_once()

    async def stop(self) -> None:
        if self._loop is not None:
            await self._loop.stop()

    async def exchange_once(self, partition: int | None = None) -> ExchangeReport | None:
        md = self.metadata()
        if not md.bootstrapped:
            return None
        partitions = replicated_partitions(md, self.self_id)
        if not partitions:
            return None
        if partition is None:
            ordered = sorted(partitions)
            partition = ordered[self._next % len(ordered)]
            self._next += 1
        peers = [n for n in partitions.get(partition, ()) if n != self.self_id]
        if not peers:
            return None
        return await self.exchange(partition, self.rng.choice(peers))

    async def exchange(self, partition: int, peer: str) -> ExchangeReport:
        tree = self.replica.tree(partition)
        start = self._resume.pop((partition, peer), 0)
        steps = merkle_diff.diff_steps(tree, self.budget, start)
        query = next(steps)
        try:
            while True:
                reply = await self.transport.call(
                    peer, AE_QUERY, TreeQuery(partition, query), self.timeout
                )
                query = steps.send(reply.answer)
        except StopIteration as stop:
            result: merkle_diff.DiffResult = stop.value
        if result.resume_bucket is not None:
            self._resume[(partition, peer)] = result.resume_bucket
        repaired, sent = await self._repair(peer, result.keys)
        report = ExchangeReport(
            partition, peer, len(result.keys), repaired, result.truncated, result.stats, sent
        )
        self.reports = [*self.reports[-99:], report]
        self.totals.add(report)
        return report

    async def _repair(self, peer: str, keys: tuple[bytes, ...]) -> tuple[int, int]:
        repaired, sent = 0, 0
        for raw in keys:
            ref = KeyRef.from_storage_key(raw)
            theirs = await self.transport.call(peer, FETCH, KeyRequest(ref), self.timeout)
            merged = self.replica.store(ref, theirs.versions)
            request = StoreRequest(ref, merged)
            await self.transport.call(peer, STORE, request, self.timeout)
            repaired += 1
            sent += len(str(request.to_wire()["versions"]))
        return repaired, sent
