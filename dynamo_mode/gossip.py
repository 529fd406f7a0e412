"""Gossip failure detection, the I/O shell around dynamo_mode.membership and
membership_status (Dynamo §4.8).

Every `cfg.interval` this node bumps its heartbeat, pushes its digest to `cfg.fanout` random
members (the `gossip` internode operation) and merges the digests they answer with (push-pull).
Each advance of a member's version is a heartbeat arrival for that member's phi-accrual
window; `status(node)` is the pure `membership_status.node_status` of that window.

The generation is a counter persisted in the data directory and bumped at every start, so a
restarted node outranks everything it gossiped before and is alive again from its first
new heartbeat (docs/gossip.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable, Collection

from dynamo_mode import membership, membership_status
from dynamo_mode.membership_status import GossipConfig, Status
from dynamo_mode.messages import GOSSIP, GossipDigest
from dynamo_mode.phi import PhiWindow
from kv.internode import OpTable
from kv.periodic import Periodic
from kv.transport import Transport

log = logging.getLogger(__name__)


def next_generation(path: str, now: float) -> int:
    """Read, bump and durably store the generation (grows across restarts).

    At least the wall-clock second of this start (Cassandra's generation): a node whose
    data directory was wiped starts above the generation its peers remember, so its new
    heartbeats are believed instead of being ignored as old ones forever."""
    try:
        with open(path) as f:
            previous = int(f.read().strip() or 0)
    except FileNotFoundError:
        previous = 0
    generation = max(previous + 1, int(now))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(generation))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return generation


class GossipDetector:
    def __init__(
        self,
        self_id: str,
        members: Callable[[], Collection[str]],
        transport: Transport,
        generation: int,
        clock: Callable[[], float],
        cfg: GossipConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.self_id = self_id
        self._members = members
        self._transport = transport
        self._generation = generation
        self._clock = clock
        self.cfg = cfg or GossipConfig()
        self._rng = rng or random.Random()
        self._state: dict[str, membership.Entry] = {}
        self._windows: dict[str, PhiWindow] = {}
        self._started = clock()
        self._loop: Periodic | None = None

    # ------------------------------------------------------------------ decisions
    def status(self, node: str) -> Status:
        if node == self.self_id:
            return "alive"
        now = self._clock()
        n = max(len(self._members()), 1)
        return membership_status.node_status(
            self._windows.get(node), now, n, self.cfg, self._started
        )

    def is_alive(self, node: str) -> bool:
        return self.status(node) != "down"

    def digest(self) -> GossipDigest:
        return GossipDigest(membership.digest(self._state))

    # ------------------------------------------------------------------ effects
    def _absorb(self, remote: GossipDigest) -> None:
        now = self._clock()
        after, changed = membership.merge(self._state, remote.digest, now)
        changed = frozenset(changed - {self.self_id})
        membership_status.record_arrivals(self._windows, self._state, after, changed, now, self.cfg)
        self._state = after

    def register(self, table: OpTable) -> None:
        table.register(GOSSIP, self.handle)

    async def handle(self, theirs: GossipDigest) -> GossipDigest:
        """The peer side of a push-pull round (`gossip` op): merge theirs, answer with ours."""
        self._absorb(theirs)
        return self.digest()

    async def round(self) -> None:
        now = self._clock()
        self._state = membership.beat(self._state, self.self_id, self._generation, now)
        peers = membership.choose_peers(self._rng, self._members(), self.self_id, self.cfg.fanout)
        replies = await asyncio.gather(
            *(self._push(peer) for peer in peers), return_exceptions=True
        )
        for reply in replies:
            if isinstance(reply, GossipDigest):
                self._absorb(reply)

    async def _push(self, peer: str) -> GossipDigest:
        return await self._transport.call(peer, GOSSIP, self.digest(), self.cfg.interval * 2)

    def start(self) -> None:
        self._loop = Periodic("gossip", self.cfg.interval, self.round, sleep_first=False)
        self._loop.start()

    async def stop(self) -> None:
        if self._loop is not None:
            await self._loop.stop()
