"""One shape for every background loop of a node (gossip, anti-entropy, handoff, tombstone
purge): a cancellable asyncio task that awaits `round()` every `interval` seconds with an
injected `sleep`. A failed round is logged and retried next interval, never fatal.

`cancel_and_wait` is how every background task of a node is stopped: on Python 3.11
`asyncio.wait_for` returns its result and drops a cancellation that arrives in the same
loop turn as the inner future's result (gh-86296, fixed by 3.12's rewrite), so one
`cancel()` may not end a task; seen as a node stop that hung in CI."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

# a re-cancel every RECANCEL_S while a cancelled task still runs
RECANCEL_S = 0.1


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel `tasks` and return once every one has finished; a task that swallowed its
    cancellation is cancelled again. Outcomes are discarded (the caller is stopping)."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
    for task in tasks:  # retrieve, so none is logged as "exception never retrieved"
        if not task.cancelled():
            task.exception()


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
            await cancel_and_wait(self._task)
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
