"""Group commit: many writers wait for one sync (kv/storage.py `StorageEngine.sync`).

`await commit.durable()` returns once a sync that started after the call has finished, so
every write made before the call is on disk (invariant). One sync runs at a time, in a
thread (it blocks on the disk); the callers that arrive while it runs share the next one,
so under load one sync covers every write made during the previous sync. A failed sync
fails every caller waiting for it (their writes may not be durable).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class GroupCommit:
    def __init__(self, sync: Callable[[], None]) -> None:
        self._sync = sync
        self._running: asyncio.Future[None] | None = None  # the sync in flight
        self._next: asyncio.Future[None] | None = None  # the one that starts after it
        self.syncs = 0  # syncs finished
        self.waits = 0  # callers served

    async def durable(self) -> None:
        self.waits += 1
        if self._running is None:
            done = self._start()
        else:  # the running sync may have begun before the caller's write: wait for the next
            if self._next is None:
                self._next = asyncio.get_running_loop().create_future()
            done = self._next
        await asyncio.shield(done)

    def _start(self) -> asyncio.Future[None]:
        running = asyncio.get_running_loop().run_in_executor(None, self._sync)
        self._running = running
        running.add_done_callback(self._finished)
        return running

    def _finished(self, done: asyncio.Future[None]) -> None:
        self._running = None
        self.syncs += 1
        waiting, self._next = self._next, None
        if waiting is not None:
            self._start().add_done_callback(lambda run: _copy(run, waiting))
        if not done.cancelled():
            done.exception()  # retrieved: the callers awaiting it got it


def _copy(source: asyncio.Future[None], target: asyncio.Future[None]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        target.set_result(None)
