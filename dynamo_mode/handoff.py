"""Hinted handoff: deliver the hints this node holds to their owners (Dynamo §4.6).

Every `interval` the loop visits each owner with pending hints that is not known down
(`hints.owners_to_visit`) and sends it up to `batch` hinted version sets, one `store` call
each (a CRDT merge, so a repeated delivery is harmless). A hint is dropped only after the
owner acknowledged it, and only if it did not grow meanwhile (`hints.may_drop`, applied
inside `DynamoReplica.drop_hint` without an `await`, so atomically on the event loop).
The first failed delivery ends that owner's round: the rest wait for the next one.

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
from kv.errors import KvError
from kv.periodic import Periodic
from kv.transport import Transport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryReport:
    """One owner's round: what was sent, dropped and kept."""

    at: float
    owner: str
    delivered: int
    dropped: int
    failure: str | None = None


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
    _loop: Periodic | None = None

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
        delivered = dropped = 0
        failure = None
        for ref, versions in self.replica.hints_for(owner, self.batch):
            targets = self.rehome(owner, ref)
            try:
                for target in (owner,) if targets is None else targets:
                    request = StoreRequest(ref, versions)
                    await self.transport.call(target, STORE, request, self.timeout)
            except KvError as exc:
                failure = f"{exc.__class__.__name__}: {exc}"
                break
            delivered += 1
            dropped += self.replica.drop_hint(owner, ref, versions)
        report = DeliveryReport(self.clock(), owner, delivered, dropped, failure)
        self.delivered += delivered
        self.reports = [*self.reports[-99:], report]
        return report
