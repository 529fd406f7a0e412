"""Coalesced read barriers (DESIGN.md §3 "Linearizable reads"; Raft thesis §6.4).

A linearizable read is never served from local state alone: a deposed leader believes it
leads for up to pysyncobj's `leaderFallbackTimeout`. A read waits for a barrier started
after it arrived, then reads local state: every write acknowledged before the read arrived
is applied here by then. `start` starts one barrier and returns its future: a data
group's ReadIndex round (raft_groups/syncobj_adapter/read_index.py: no log entry), the
meta group's `sync` no-op (raft_groups/meta_group.py), or a `sync` sent to a meta voter
from a node that does not vote (kv/meta_reader.py).

Invariant: the barrier a read waits for was proposed AFTER the read arrived. So a read
that arrives while a barrier is in flight does not join it (that barrier may have been
ordered before a write the reader saw acknowledged); it waits for the NEXT one, which is
proposed when the in-flight one completes. Every read arriving during one round trip
shares that next barrier: one barrier per round trip however many reads (35–57 k reads/s
measured when a barrier was a log entry; a data group's is now a ReadIndex round).

```
 wait() ── nothing in flight ──▶ propose barrier B, return B       (B in flight)
        └─ B in flight ────────▶ return `next` (created once, shared)
 B done ──▶ nothing in flight; if `next` has waiters: propose B', B' in flight,
            and B' completes `next` (its result or its exception)
```

A barrier's exception (e.g. no leader) propagates to the reads waiting for it; reads
waiting for the next barrier get a fresh proposal, not the failure. A barrier that has
neither completed nor failed after `repropose_s` is started again for the same reads (a
lost proposal or reply once wedged every later read of the group: they all waited for
the next barrier, started only when the lost one completed); whichever completes first
serves them. The caller bounds its own wait (and shields the shared future from its
cancellation). Runs on the event loop thread only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kv.errors import NotReady

REPROPOSE_S = 1.0  # a barrier not applied by then is started again (module docstring)


class ReadBarriers:
    """Coalesced read barriers of one group (see the module docstring)."""

    def __init__(
        self,
        start: Callable[[], asyncio.Future[Any]],
        loop: asyncio.AbstractEventLoop,
        repropose_s: float = REPROPOSE_S,
    ) -> None:
        self._start = start
        self._loop = loop
        self._repropose_s = repropose_s
        self.reproposed = 0  # barriers started again after `repropose_s` (ops and tests)
        self._in_flight: asyncio.Future[Any] | None = None
        self._next: asyncio.Future[Any] | None = None

    def wait(self) -> asyncio.Future[Any]:
        """A future that completes once a barrier proposed after this call is applied."""
        if self._in_flight is None:
            return self._launch()
        if self._next is None:
            self._next = self._loop.create_future()
        return self._next

    async def passed(self, timeout: float, what: str) -> None:
        """Wait (bounded by `timeout`) for a barrier proposed after this call; NotReady
        naming `what` if none is applied in time. The shared future is shielded: one
        caller's timeout does not cancel it for the others."""
        try:
            await asyncio.wait_for(asyncio.shield(self.wait()), timeout)
        except TimeoutError:
            raise NotReady(f"{what} not confirmed within {timeout:.2f}s", retry_after=0.5) from None

    def _launch(self) -> asyncio.Future[Any]:
        """Start a barrier; the future returned completes like the first of the barriers
        started for it: this one, or one started again after each `repropose_s`."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._in_flight = fut
        fut.add_done_callback(self._done)
        self._propose(fut)
        return fut

    def _propose(self, fut: asyncio.Future[Any]) -> None:
        _chain(self._start(), fut)
        timer = self._loop.call_later(self._repropose_s, self._again, fut)
        fut.add_done_callback(lambda _: timer.cancel())

    def _again(self, fut: asyncio.Future[Any]) -> None:
        """A barrier not applied in time (its proposal or reply lost, a wedged leader):
        start another for the same reads — it too starts after they arrived."""
        if not fut.done():
            self.reproposed += 1
            self._propose(fut)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        self._in_flight = None
        waiting, self._next = self._next, None
        if waiting is not None:
            _chain(self._launch(), waiting)


def _chain(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    """Complete `target` like `source` (result or exception) once `source` is done."""

    def copy(f: asyncio.Future[Any]) -> None:
        if target.done():
            return
        if f.exception() is not None:
            target.set_exception(f.exception())  # type: ignore[arg-type]
        else:
            target.set_result(f.result())

    source.add_done_callback(copy)
