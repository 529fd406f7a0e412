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

A tombstone the reaper cannot purge never stops it: a replica that is down or slow only
leaves that tombstone for a later sweep; one that refuses a fetch or purge (an error of the
entry: `hints.entry_refused`), or any error while handling one tombstone, is skipped and
reported — logged, counted in `skipped` (/v1/cluster "tombstones_skipped"). Sweeps resume
after the last tombstone they examined and wrap around, so no run of unpurgeable
tombstones holds back the ones after it.

Each sweep first turns this replica's expired versions (TTL, docs/ttl.md) into tombstones
(`DynamoReplica.expire`, on this node's clock); from then on they are purged like any
tombstone, by the rules above, so an expired value never brings back what it overwrote.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from dynamo_mode import hints, siblings
from dynamo_mode.messages import FETCH, PURGE, KeyRequest, PurgeRequest, Versions
from dynamo_mode.replica import DynamoReplica, KeyRef
from dynamo_mode.siblings import Version
from dynamo_mode.vclock import Dot
from kv import routing
from kv.internode import Operation, Req, Resp
from kv.meta import Metadata
from kv.periodic import Periodic
from kv.transport import Transport

log = logging.getLogger(__name__)
MAX_REPORTED = 10_000  # skipped tombstones remembered as logged (then logged again)


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
    skipped: int = 0  # a tombstone's fetch or purge refused by a replica, since start
    expired: int = 0  # keys whose expired versions became tombstones here, since start
    _loop: Periodic | None = field(default=None, repr=False)
    _resume: KeyRef | None = field(default=None, repr=False)  # the last tombstone examined
    _reported: set[KeyRef] = field(default_factory=set, repr=False)  # skips logged already

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
        self.expired += self.replica.expire(int(self.clock() * 1000), self.batch)
        found = self.replica.tombstones(self.clock() - self.grace, self.batch, self._resume)
        self._resume = found[-1][0] if len(found) == self.batch else None
        done = 0
        for ref, _ in found:
            try:
                replicas = _replicas(md, ref)
                if replicas and await self._purge_everywhere(ref, replicas):
                    done += 1
            except Exception as exc:  # noqa: BLE001 - one tombstone never stops the sweep
                self._skip(ref, "this node", exc)
        self.purged += done
        return done

    async def _purge_everywhere(self, ref: KeyRef, replicas: tuple[str, ...]) -> bool:
        replies = await self._ask(replicas, FETCH, KeyRequest(ref), ref)
        answered = {n: r.versions for n, r in replies.items() if isinstance(r, Versions)}
        dots = purgeable(replicas, answered)
        if dots is None:
            return False
        purged = await self._ask(replicas, PURGE, PurgeRequest(ref, frozenset(dots)), ref)
        return all(not isinstance(r, BaseException) for r in purged.values())

    async def _ask(
        self, replicas: tuple[str, ...], op: Operation[Req, Resp], request: Req, ref: KeyRef
    ) -> dict[str, Resp | BaseException]:
        """Every replica's reply or error; an error of the entry itself is reported."""
        calls = (self.transport.call(n, op, request, self.timeout) for n in replicas)
        replies = await asyncio.gather(*calls, return_exceptions=True)
        for node, reply in zip(replicas, replies, strict=True):
            if isinstance(reply, BaseException) and hints.entry_refused(reply):
                self._skip(ref, node, reply)
        return dict(zip(replicas, replies, strict=True))

    def _skip(self, ref: KeyRef, node: str, exc: BaseException) -> None:
        self.skipped += 1
        if ref in self._reported:  # once per tombstone: sweeps come again and again
            return
        if len(self._reported) >= MAX_REPORTED:
            self._reported.clear()
        self._reported.add(ref)
        log.warning(
            "tombstone purge: skipped %s (%s: %s: %s)", ref, node, exc.__class__.__name__, exc
        )


def _replicas(md: Metadata, ref: KeyRef) -> tuple[str, ...]:
    ks = next((k for k in md.keyspaces if k.uid == ref.uid), None)
    if ks is None:
        return ()  # keyspace deleted: its data is dropped with it, not tombstone by tombstone
    return routing.replicas(md, "eventual", ref.partition, ks.replication)
