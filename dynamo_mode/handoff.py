"""Hinted handoff: deliver the hints this node holds to their owners (Dynamo §4.6).

Every `interval` the loop visits each owner with pending hints that is not known down
(`hints.owners_to_visit`) and sends it up to `batch` hinted version sets, one `store` call
each (a CRDT merge, so a repeated delivery is harmless). A hint is dropped only after the
owner acknowledged it, and only if it did not grow meanwhile (`hints.may_drop`, applied
inside `DynamoReplica.drop_hint` without an `await`, so atomically on the event loop).
A failure of the owner (unreachable, unavailable, timed out) ends that owner's round: the
rest wait for the next one. A hint the owner refuses (too large, invalid: `hints.
entry_refused`) is skipped and reported instead — logged once, counted in `skipped`
(/v1/cluster "hinted_handoff") — and kept, and the round goes on; rounds resume after
the last hint they visited and wrap around, so no run of refused hints holds back the
hints after it. Invariant: a hint is never the only copy of a write (only primaries mint),
so a skipped one only waits for anti-entropy.

A hint for an owner that is no longer a member (a membership plan removed it) goes to the
key's current owners instead (`rehome`), so removed nodes are never addressed again and
nothing they were owed is lost.

Hints live in the StorageEngine (`b"h"`), so they survive a restart of this node; the
loop needs no state of its own beyond counters. Anti-entropy (Dynamo §4.7) is the
backstop for any hint lost or never written (docs/hinted_handoff.md).

    hint stored ──▶ pending ──(owner not down, round)──▶ sent ──ack──▶ dropped
                      ▲                                   │
                      └──── failure / hint grew ◀─────────┘
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from dynamo_mode import hints
from dynamo_mode.messages import STORE, StoreRequest
from dynamo_mode.replica import DynamoReplica, KeyRef
from dynamo_mode.siblings import Version
from kv.keyspace import FSYNC
from kv.periodic import Periodic
from kv.transport import Transport

log = logging.getLogger(__name__)
MAX_REPORTED = 10_000  # skipped hints remembered as logged (then they are logged again)


@dataclass(frozen=True)
class DeliveryReport:
    """One owner's round: what was sent, dropped and kept."""

    at: float
    owner: str
    delivered: int
    dropped: int
    failure: str | None = None
    skipped: int = 0  # refused by the owner: kept, and the round went on


@dataclass
class Handoff:
    replica: DynamoReplica
    transport: Transport
    is_alive: Callable[[str], bool]
    interval: float = 1.0  # seconds between rounds; a returning owner waits at most this
    batch: int = 256  # hints per owner per round: bounds a round's work and bandwidth
    timeout: float = 2.0  # per delivery call
    # None: `owner` is a member, deliver to it; else the key's current owners (() if its
    # keyspace is gone: the hint is dropped)
    rehome: Callable[[str, KeyRef], tuple[str, ...] | None] = lambda owner, ref: None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    reports: list[DeliveryReport] = field(default_factory=list)
    delivered: int = 0  # hints acknowledged by their owners since start
    delivered_to: dict[str, int] = field(default_factory=dict)  # the same, by owner
    skipped: int = 0  # deliveries refused by their owners since start (each round counts)
    _loop: Periodic | None = None
    _resume: dict[str, KeyRef] = field(default_factory=dict)  # owner → last hint visited
    _reported: set[tuple[str, KeyRef]] = field(default_factory=set)  # skips logged already

    def pending(self) -> dict[str, int]:
        """owner → keys with a pending hint on this node (/v1/cluster)."""
        return self.replica.hint_counts()

    def start(self) -> None:
        self._loop = Periodic("hinted handoff", self.interval, self.deliver_once, self.sleep)
        self._loop.start()

    async def stop(self) -> None:
        if self._loop is not None:
            await self._loop.stop()

    async def deliver_once(self) -> list[DeliveryReport]:
        pending = self.replica.hint_counts()
        down = {o for o in pending if not self.is_alive(o) and not self._removed(o)}
        return [await self.deliver(owner) for owner in hints.owners_to_visit(pending, down)]

    def _removed(self, owner: str) -> bool:
        first = self.replica.hints_for(owner, 1)
        return any(self.rehome(owner, ref) is not None for ref, _ in first)

    async def deliver(self, owner: str) -> DeliveryReport:
        delivered = dropped = skipped = 0
        failure = None
        found = self.replica.hints_for(owner, self.batch, self._resume.get(owner))
        for ref, versions in found:
            try:
                await self._send(owner, ref, versions)
            except Exception as exc:  # noqa: BLE001 - whose fault decides: skip or end
                if not hints.entry_refused(exc):
                    failure = _reason(exc)
                    break
                skipped += 1
                self._report_skip(owner, ref, exc)
                continue
            delivered += 1
            dropped += self.replica.drop_hint(owner, ref, versions)
        if failure is None:  # a full batch: the next round goes on after it; else wrap around
            self._resume.pop(owner, None)
            if len(found) == self.batch:
                self._resume[owner] = found[-1][0]
        report = DeliveryReport(self.clock(), owner, delivered, dropped, failure, skipped)
        self.delivered += delivered
        self.delivered_to[owner] = self.delivered_to.get(owner, 0) + delivered
        self.skipped += skipped
        self.reports = [*self.reports[-99:], report]
        return report

    async def _send(self, owner: str, ref: KeyRef, versions: tuple[Version, ...]) -> None:
        """Deliver with `fsync` whatever the keyspace's durability: the hint is dropped once
        the owner acknowledges, so the owner's copy must be on disk by then — the holder
        may have acknowledged the write with fsync (kv/keyspace.py durability)."""
        targets = self.rehome(owner, ref)
        request = StoreRequest(ref, versions, FSYNC)
        for target in (owner,) if targets is None else targets:
            await self.transport.call(target, STORE, request, self.timeout)

    def _report_skip(self, owner: str, ref: KeyRef, exc: BaseException) -> None:
        if (owner, ref) not in self._reported:  # once per hint: rounds come every second
            if len(self._reported) >= MAX_REPORTED:
                self._reported.clear()
            self._reported.add((owner, ref))
            log.warning(
                "hinted handoff: skipped the hint of %s for %s: %s", ref, owner, _reason(exc)
            )


def _reason(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}"
