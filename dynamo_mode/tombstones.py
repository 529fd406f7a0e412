"""Tombstone purge: deletes stay deleted (DESIGN.md §4).

A delete is a tombstone version whose context covers the values it deletes. Purging it
early would let a replica that missed the delete bring the old value back (resurrection).
So a tombstone-only key is purged only when

1. it has been tombstone-only on this node for `grace` seconds (in-flight hints and
   repairs land before that — Cassandra's gc_grace), and
2. EVERY replica of its preference list answers with exactly the same tombstone-only
   version set (confirmed, not assumed: a down replica blocks the purge);

then each replica is told to compare-and-delete that exact set (`DynamoReplica.purge`), so
a version written since the check survives. The decision is the pure `purgeable`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from dynamo_mode import siblings
from dynamo_mode.messages import FETCH, PURGE, KeyRequest, PurgeRequest, Versions
from dynamo_mode.replica import DynamoReplica, KeyRef
from dynamo_mode.siblings import Version
from dynamo_mode.vclock import Dot
from kv import routing
from kv.meta import Metadata
from kv.periodic import Periodic
from kv.transport import Transport

log = logging.getLogger(__name__)


def purgeable(replicas: Sequence[str], replies: Mapping[str, Sequence[Version]]) -> set[Dot] | None:
    """The dots to purge iff every replica replied with the same tombstone-only set."""
    if not replicas or set(replies) != set(replicas):
        return None
    sets = []
    for versions in replies.values():
        if not siblings.is_tombstone_only(versions):
            return None
        sets.append({v.dot for v in versions})
    return sets[0] if all(s == sets[0] for s in sets) else None


@dataclass
class TombstoneReaper:
    replica: DynamoReplica
    transport: Transport
    metadata: Callable[[], Metadata]
    clock: Callable[[], float]
    grace: float = 3600.0
    interval: float = 10.0
    batch: int = 100  # tombstones examined per sweep
    timeout: float = 2.0
    purged: int = 0
    _loop: Periodic | None = field(default=None, repr=False)

    def start(self) -> None:
        self._loop = Periodic("tombstone purge", self.interval, self.sweep_once)
        self._loop.start()

    async def stop(self) -> None:
        if self._loop is not None:
            await self._loop.stop()

    async def sweep_once(self) -> int:
        md = self.metadata()
        if not md.bootstrapped:
            return 0
        done = 0
        for ref, _ in self.replica.tombstones(self.clock() - self.grace, self.batch):
            replicas = _replicas(md, ref)
            if replicas and await self._purge_everywhere(ref, replicas):
                done += 1
        self.purged += done
        return done

    async def _purge_everywhere(self, ref: KeyRef, replicas: tuple[str, ...]) -> bool:
        replies = await asyncio.gather(
            *(self.transport.call(n, FETCH, KeyRequest(ref), self.timeout) for n in replicas),
            return_exceptions=True,
        )
        answered = {
            n: r.versions for n, r in zip(replicas, replies, strict=True) if isinstance(r, Versions)
        }
        dots = purgeable(replicas, answered)
        if dots is None:
            return False
        purge = PurgeRequest(ref, frozenset(dots))
        await asyncio.gather(
            *(self.transport.call(n, PURGE, purge, self.timeout) for n in replicas),
            return_exceptions=True,
        )
        return True


def _replicas(md: Metadata, ref: KeyRef) -> tuple[str, ...]:
    ks = next((k for k in md.keyspaces if k.uid == ref.uid), None)
    if ks is None:
        return ()  # keyspace deleted: its data is dropped with it, not tombstone by tombstone
    return routing.replicas(md, "eventual", ref.partition, ks.replication)
