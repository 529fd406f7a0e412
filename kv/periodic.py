"""One shape for every background loop of a node (gossip, anti-entropy, handoff, tombstone
purge): a cancellable asyncio task that awaits `round()` every `interval` seconds with an
injected `sleep`. A failed round is logged and retried next interval, never fatal."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


class Periodic:
    def __init__(
        self,
        name: str,
        interval: float,
        round: Callable[[], Awaitable[Any]],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        sleep_first: bool = True,
    ) -> None:
        self.name = name
        self.interval = interval
        self._round = round
        self._sleep = sleep
        self._sleep_first = sleep_first
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        first = True
        while True:
            if self._sleep_first or not first:
                await self._sleep(self.interval)
            first = False
            try:
                await self._round()
            except Exception as exc:  # noqa: BLE001 - the next round retries
                log.info("%s round failed: %s", self.name, exc)
