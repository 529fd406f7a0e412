"""Cluster metadata on nodes that do not vote in the meta group — the I/O shells of
kv/meta_ops.py (DESIGN.md §2: the meta group keeps at most 5 voters; other members read the
metadata without voting).

`MetaReader` holds a non-voter's current `Metadata` with the same face as the meta group
(raft_groups/meta_group.py `MetaGroup`): a `metadata` property, `subscribe(listener)` and
`change(change, timeout)`; kv/meta_role.py switches a node between the two at runtime.
It polls (`meta_get`, every `interval`, doubling up to `max_backoff` while no node
answers) the voters, the other members and the seeds — a joining node knows only its
seeds until the first answer. A keyspace change proposed on a non-voter is sent to a voter
(`meta_change`); its outcome and the voter's metadata come back together, so the change is
visible here when it returns.

`MetaServer` serves both operations on every node: `meta_get` from whatever bootstrapped
metadata the node holds (a voter adds its group's leader and configuration), `meta_change`
only on a voter (a non-voter answers `not_ready`, so a change is never forwarded twice).

Listeners run on the event loop, in epoch order; the metadata never moves backwards.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from kv import meta_ops
from kv.barriers import ReadBarriers
from kv.errors import KvError, NoLeader, NotReady, Retryable
from kv.internode import Operation, OpTable, Req, Resp
from kv.meta import Metadata
from kv.meta_machine import SYNC
from kv.meta_ops import META_CHANGE, META_GET, MetaChange, MetaChangeReply, MetaGet, MetaReply
from kv.periodic import cancel_and_wait

log = logging.getLogger(__name__)

# a forwarded change waits on the voter for `timeout`; the call itself waits a little longer
# so that the voter's own answer (e.g. its 504) arrives rather than our transport timeout
CHANGE_CALL_MARGIN_S = 0.5

Listener = Callable[[Metadata], None]


class MetaView(Protocol):
    """What the node reads cluster metadata through: the meta group or a MetaReader."""

    @property
    def voters(self) -> tuple[str, ...]:
        """Node ids of the meta group's voters, as this node knows them."""
        ...

    @property
    def metadata(self) -> Metadata: ...

    def subscribe(self, listener: Listener) -> None: ...

    async def change(self, change: dict[str, Any], timeout: float) -> dict[str, Any]: ...

    def summary(self) -> dict[str, Any]: ...

    def raft_view(self) -> tuple[str | None, tuple[str, ...]]:
        """A voter's meta group: (the leader's Raft address, the configuration's addresses);
        (None, ()) on a node that does not vote."""
        ...


class AddressedTransport(Protocol):
    """kv/transport.py `WireTransport.call_at`: a call by HTTP address, not member id."""

    async def call_at(
        self,
        address: str,
        op: Operation[Req, Resp],
        request: Req,
        timeout: float,
        peer: str | None = None,
    ) -> Resp: ...


class MetaReader:
    def __init__(
        self,
        self_http: str,
        seeds: Sequence[str],
        transport: AddressedTransport,
        *,
        interval: float,
        max_backoff: float,
        call_timeout: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._self_http = self_http
        self._seeds = tuple(seeds)
        self._transport = transport
        self._interval = interval
        self._max_backoff = max_backoff
        self._call_timeout = call_timeout
        self._sleep = sleep
        self._md = Metadata()
        self._listeners: list[Listener] = []
        self._start = 0  # rotation of the poll targets, advanced past each failed one
        self._task: asyncio.Task[None] | None = None
        self.voters: tuple[str, ...] = ()  # the meta group's voters, as the last answer said
        self.source: str | None = None  # the address the current metadata came from
        self.failed_polls = 0  # consecutive polls no node answered
        self._barriers: ReadBarriers | None = None  # `sync` rounds, made on the loop

    @property
    def metadata(self) -> Metadata:
        return self._md

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def raft_view(self) -> tuple[str | None, tuple[str, ...]]:
        return None, ()

    def summary(self) -> dict[str, Any]:
        """This non-voter's view of the meta group, for `GET /v1/cluster`."""
        return {
            "voter": False,
            "voters": list(self.voters),
            "source": self.source,
            "failed_polls": self.failed_polls,
        }

    def adopt(self, md: Metadata | None, source: str) -> bool:
        """Take `md` if it is newer than what this node holds; tell the listeners."""
        if md is None or not meta_ops.newer(self._md, md):
            return False
        self._md, self.source = md, source
        for listener in list(self._listeners):
            listener(md)
        return True

    # ------------------------------------------------------------------ polling
    async def poll(self) -> bool:
        """Ask the targets in turn until one answers; whether one did."""
        md = self._md
        targets = meta_ops.poll_targets(md, self.voters, self._seeds, self._self_http, self._start)
        for address in targets:
            try:
                reply = await self._ask(address, md.epoch)
            except KvError as exc:
                log.debug("meta_get from %s failed: %s", address, exc.message)
                self._start += 1
                continue
            self.voters = reply.voters or self.voters
            self.adopt(reply.metadata, address)
            return True
        return False

    async def _ask(self, address: str, known_epoch: int) -> MetaReply:
        return await self._transport.call_at(
            address, META_GET, MetaGet(known_epoch), self._call_timeout
        )

    async def run(self) -> None:
        """Poll forever: at once (a joiner learns the metadata from its seeds at start),
        then every `interval`, backing off while nobody answers."""
        delay = self._interval
        while True:
            ok = await self._poll_logged()
            self.failed_polls = 0 if ok else self.failed_polls + 1
            if self.failed_polls in (1, 10) or (self.failed_polls and not self._md.bootstrapped):
                log.info("no node answered meta_get (%d polls in a row)", self.failed_polls)
            delay = meta_ops.next_delay(delay, ok, self._interval, self._max_backoff)
            await self._sleep(delay)

    async def _poll_logged(self) -> bool:
        """A poll that fails unexpectedly counts as failed; the loop must not die of it."""
        try:
            return await self.poll()
        except Exception:  # noqa: BLE001 - logged; the next poll retries
            log.exception("metadata poll failed")
            return False

    def start(self) -> None:
        self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    # ------------------------------------------------------------------ changes
    async def change(self, change: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send the change to a voter; its outcome, once applied there. Voters that certainly
        did not apply it (unreachable, no leader, not ready) let us try the next; a timeout
        ends it as UnknownOutcome (504: it may have been applied). A node that knows no voter
        yet asks its seeds (a seed that does not vote answers not_ready: the next is tried)."""
        voters = meta_ops.voter_addresses(self._md, self.voters) or list(self._seeds)
        if not voters:
            raise NotReady("no meta-group voter known yet (metadata not read)", retry_after=1.0)
        errors = []
        for address in voters:
            try:
                reply = await self._send(address, MetaChange(change, timeout))
            except Retryable as exc:
                errors.append(f"{address}: {exc.message}")
                continue
            self.adopt(reply.metadata, address)
            return reply.outcome
        raise NoLeader(f"no meta-group voter took the change: {'; '.join(errors)}", retry_after=1.0)

    async def sync(self, timeout: float) -> None:
        """Return once this node's metadata holds every change committed before the call:
        a `sync` barrier applied on a voter, whose metadata comes back with the outcome
        (concurrent calls share rounds, kv/barriers.py). NotReady if none completes in time."""
        if self._barriers is None:
            loop = asyncio.get_running_loop()
            call = self._call_timeout
            self._barriers = ReadBarriers(
                lambda: asyncio.ensure_future(self.change(SYNC, call)), loop
            )
        await self._barriers.passed(timeout, "cluster metadata (by a meta voter)")

    async def _send(self, address: str, request: MetaChange) -> MetaChangeReply:
        timeout = request.timeout_s + CHANGE_CALL_MARGIN_S
        return await self._transport.call_at(address, META_CHANGE, request, timeout)


class MetaServer:
    """`meta_get` and `meta_change` on this node (kv/node.py registers one on every node)."""

    def __init__(self, view: MetaView, votes: bool | Callable[[], bool]) -> None:
        self._view = view
        # whether this node votes in the meta group: fixed, or asked at each request (a
        # node's role changes at runtime, kv/meta_role.py)
        self._is_voter = votes if callable(votes) else lambda: votes

    def register(self, table: OpTable) -> None:
        table.register(META_GET, self.get)
        table.register(META_CHANGE, self.change)

    async def get(self, req: MetaGet) -> MetaReply:
        md = self._view.metadata
        if not md.bootstrapped:
            raise NotReady("cluster metadata is not bootstrapped here yet", retry_after=0.5)
        newer = md if md.epoch > req.known_epoch else None
        leader, members = self._view.raft_view() if self._is_voter() else (None, ())
        return MetaReply(md.epoch, self._view.voters, newer, leader, members)

    async def change(self, req: MetaChange) -> MetaChangeReply:
        if not self._is_voter():
            raise NotReady(
                "this node does not vote in the meta group; send the change to a voter",
                retry_after=0.2,
                voters=list(self._view.voters),
            )
        if not self._view.metadata.bootstrapped:
            raise NotReady("cluster metadata is not bootstrapped here yet", retry_after=0.5)
        outcome = await self._view.change(req.change, req.timeout_s)
        return MetaChangeReply(outcome, self._view.metadata)
