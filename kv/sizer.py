"""Partition sizes over the wire: a node answers `part_sizes` from its tallies
(`SizeServer`), and the node serving a membership plan asks the partitions' owners
(`PlanSizer`). The decisions — whom to ask, what a move carries — are in kv/sizes.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from kv import sizes
from kv.errors import KvError
from kv.internode import OpTable
from kv.meta import Metadata, MoveKey
from kv.sizes import PART_SIZES, ScopeSize, Size, SizesReply, SizesRequest
from kv.tally import TalliedEngine
from kv.transport import Transport

log = logging.getLogger(__name__)


@dataclass
class SizeServer:
    """This node's sizes: eventual partitions from the replica's engine, Raft groups from
    the groups' engine (only groups this node runs as an owner: a joining member's copy is
    still arriving)."""

    eventual: TalliedEngine
    linearizable: TalliedEngine
    owned_groups: Callable[[], Collection[int]]  # Raft group numbers this node owns
    _wanted: tuple[set[int], set[int]] = field(default_factory=lambda: (set(), set()))
    _counting: asyncio.Task[None] | None = field(default=None, repr=False)

    def register(self, table: OpTable) -> None:
        table.register(PART_SIZES, self.part_sizes)

    async def part_sizes(self, req: SizesRequest) -> SizesReply:
        """What is counted after at most `req.wait_s` of counting the rest."""
        groups = self._owned(req.linearizable)
        counting = self._count(req.eventual, groups)
        if counting is not None and req.wait_s > 0:
            await asyncio.wait([counting], timeout=req.wait_s)
        return self.known(req.eventual, groups)

    def known(self, partitions: Iterable[int], groups: Iterable[int]) -> SizesReply:
        """The sizes counted so far (no waiting, no I/O)."""
        return SizesReply(_known(self.eventual, partitions), _known(self.linearizable, groups))

    def of_moves(self, md: Metadata, node: str) -> list[dict[str, Any]]:
        """`/v1/cluster` "sizes": each pending move whose partition this node serves now,
        with its size here; those not counted yet are left out (and counted meanwhile)."""
        mine = sizes.held(md, node)
        req = sizes.requests(mine).get(node, SizesRequest())
        groups = self._owned(req.linearizable)
        self._count(req.eventual, groups)
        found = sizes.move_sizes(md, mine, {node: self.known(req.eventual, groups)})
        return [_wire(key, size) for key, size in sorted(found.items())]

    def by_uid(self, partitions: int) -> dict[int, Size]:
        """Keyspace uid → its size here, summed over every eventual partition (of
        `partitions`) and owned Raft group counted so far; the rest are counted meanwhile
        (`/metrics`, docs/metrics.md)."""
        scopes = (range(partitions), tuple(self.owned_groups()))
        self._count(*scopes)
        total: dict[int, Size] = {}
        for tally, wanted in zip((self.eventual, self.linearizable), scopes, strict=True):
            for scope in tally.counted(wanted):
                for uid, size in (tally.sizes(scope) or {}).items():
                    total[uid] = total.get(uid, Size()) + size
        return total

    def _owned(self, groups: Iterable[int]) -> tuple[int, ...]:
        owned = set(self.owned_groups())
        return tuple(g for g in groups if g in owned)

    def _count(self, partitions: Iterable[int], groups: Iterable[int]) -> asyncio.Task[None] | None:
        """Have what is not counted yet counted, on a worker thread; one counting task at
        a time, which counts until nothing asked for is left (so a poll of `/v1/cluster`
        never piles up threads). The task counting, or None if nothing is left to count."""
        self._wanted[0].update(s for s in partitions if not self.eventual.counted([s]))
        self._wanted[1].update(s for s in groups if not self.linearizable.counted([s]))
        running = self._counting is not None and not self._counting.done()
        if not running and any(self._wanted):
            self._counting = asyncio.ensure_future(self._count_wanted())
            self._counting.add_done_callback(_log_failure)
        return self._counting if self._counting is not None and not self._counting.done() else None

    async def stop(self) -> None:
        """Stop counting (a scan under way gives up) and wait for it: the node closes the
        engine next."""
        self._wanted[0].clear()
        self._wanted[1].clear()
        self.eventual.close()
        self.linearizable.close()
        if self._counting is not None:
            await asyncio.gather(self._counting, return_exceptions=True)

    async def _count_wanted(self) -> None:
        tallies = (self.eventual, self.linearizable)
        while any(self._wanted):
            for tally, wanted in zip(tallies, self._wanted, strict=True):
                scopes = sorted(wanted)
                wanted.clear()
                if scopes:
                    await asyncio.to_thread(tally.count, scopes)


def _known(tally: TalliedEngine, scopes: Iterable[int]) -> tuple[ScopeSize, ...]:
    found = ((scope, tally.sizes(scope)) for scope in scopes)
    return tuple(ScopeSize(scope, by_uid) for scope, by_uid in found if by_uid is not None)


def _wire(key: MoveKey, size: Size) -> dict[str, Any]:
    mode, n, p = key
    return {"mode": mode, "replication": n, "partition": p, "keys": size.keys, "bytes": size.bytes}


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("counting partition sizes failed", exc_info=task.exception())


@dataclass
class PlanSizer:
    """Asks the moving partitions' owners for their sizes, concurrently: one call per owner
    asked, each with `timeout`; an owner that fails or is late leaves its partitions
    unknown."""

    transport: Transport
    alive: Callable[[str], bool]
    timeout: float = 3.0

    async def __call__(self, md: Metadata, moving: Iterable[MoveKey]) -> dict[MoveKey, Size]:
        asked = sizes.sources(md, moving, self.alive)
        reqs = sizes.requests(asked, wait_s=self.timeout / 2)
        answers = await asyncio.gather(*(self._ask(node, req) for node, req in reqs.items()))
        replies = {node: reply for node, reply in zip(reqs, answers, strict=True) if reply}
        return sizes.move_sizes(md, asked, replies)

    async def _ask(self, node: str, req: SizesRequest) -> SizesReply | None:
        try:
            return await self.transport.call(node, PART_SIZES, req, self.timeout)
        except KvError as exc:
            log.info("sizes from %s: %s (its partitions stay unsized)", node, exc)
            return None
