"""Peer liveness as this node sees it — a simple probe-based detector.

Each node probes every member's `/v1/internal/ping` once per `interval`; a member is
`alive` if a probe succeeded within `down_after` seconds, `down` otherwise, `unknown` before
the first answer. The decision is the pure function `status_of`; `PeerMonitor` is the shell.
The gossip / phi-accrual detector of the failure-handling issue replaces the shell, not the
callers (`is_alive`, `snapshot`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Literal

import aiohttp

log = logging.getLogger(__name__)

Status = Literal["alive", "down", "unknown"]


def status_of(
    last_ok: float | None, first_probe: float | None, now: float, down_after: float
) -> Status:
    if last_ok is not None and now - last_ok <= down_after:
        return "alive"
    if last_ok is None and (first_probe is None or now - first_probe <= down_after):
        return "unknown"
    return "down"


class PeerMonitor:
    def __init__(
        self,
        self_id: str,
        members: Callable[[], dict[str, str]],  # id → advertised http address
        secret: str,
        clock: Callable[[], float],
        interval: float = 0.5,
        down_after: float = 2.0,
    ) -> None:
        self._self_id = self_id
        self._members = members
        self._secret = secret
        self._clock = clock
        self._interval = interval
        self._down_after = down_after
        self._last_ok: dict[str, float] = {}
        self._first_probe: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def status(self, node: str) -> Status:
        if node == self._self_id:
            return "alive"
        now = self._clock()
        return status_of(
            self._last_ok.get(node), self._first_probe.get(node), now, self._down_after
        )

    def is_alive(self, node: str) -> bool:
        return self.status(node) != "down"

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._interval * 2)
        headers = {"X-Kv-Cluster-Secret": self._secret}
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            while True:
                peers = {n: a for n, a in self._members().items() if n != self._self_id}
                await asyncio.gather(*(self._probe(session, n, a) for n, a in peers.items()))
                await asyncio.sleep(self._interval)

    async def _probe(self, session: aiohttp.ClientSession, node: str, address: str) -> None:
        self._first_probe.setdefault(node, self._clock())
        try:
            async with session.get(f"http://{address}/v1/internal/ping") as resp:
                if resp.status == 200:
                    self._last_ok[node] = self._clock()
        except (aiohttp.ClientError, TimeoutError):
            pass
