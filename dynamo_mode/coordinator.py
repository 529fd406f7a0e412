"""The Dynamo coordinator: the I/O shell around the pure quorum accumulators (Riak get/put FSM).

GET  (Dynamo §4.5): fetch from R replicas of the preference list (this node first when it
     is one), and from the others only after an error, a miss or the hedge delay
     (`quorum.more_reads`); answer after R replies with the reconciled siblings and their
     joined context; then wait (bounded) for the rest of the calls made and send each
     stale or empty replier the merged result (read repair).
PUT  (Dynamo §4.4, DVV): one replica mints the new version's dot and stores it (the first
     reachable replica, this node when it is one); the coordinator then sends that replica's
     whole reconciled set to the other replicas and answers after W acknowledgements.
     The context returned to the client is the one it sent plus the new dot — never the
     join of siblings it has not seen, so its next write cannot silently supersede them.
DELETE: a PUT of a tombstone. Without a context, the coordinator first reads (R) and
     deletes what it saw.
TTL (docs/ttl.md): a PUT's `ttl_ms` goes to the minting replica, whose clock fixes the
     version's expiry; a GET hides versions expired on this node's clock (`ReadResult.live`).

Sloppy quorum (Dynamo §4.6, docs/hinted_handoff.md): a primary known down, or unreachable
when its copy is sent, has that copy sent to the next usable fallback of the ring walk as
a hint (`hint` op); a hint's ack counts toward W but not toward `pw`. The pure accounting is
`hints.SloppyWrite`; sends still in flight when the client is answered are followed to the
end (bounded by the request deadline), so a hint is placed even after a quick W. Reads go
to the primaries only; `pr` demands that many primary replies.

Outcomes, as the error table promises: fewer than R (W, pw, pr) replicas answering, with
nothing written anywhere → 503 `quorum_unavailable` (retry); this includes `pw`/`pr`/`w`
that the alive primaries and fallbacks cannot meet, refused before the mint (Riak
put_fsm's `pw_val_unsatisfied`). A write stored on some replicas but not acknowledged by
W (or pw) in time → 504 `timeout` (may have been applied; it will spread by read repair,
hinted handoff and anti-entropy).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dynamo_mode import expiry, hints, quorum, siblings, vclock
from dynamo_mode.hints import Send, SloppyWrite
from dynamo_mode.messages import (
    COORDINATE,
    FETCH,
    HINT,
    STORE,
    CoordinateRequest,
    HintRequest,
    KeyRequest,
    StoreRequest,
)
from dynamo_mode.quorum import ReadQuorum
from dynamo_mode.replica import KeyRef
from dynamo_mode.siblings import Version
from dynamo_mode.vclock import Dot
from kv.errors import KvError, PeerTimeout, PeerUnreachable, QuorumUnavailable, UnknownOutcome
from kv.keyspace import PROCESS
from kv.periodic import cancel_and_wait
from kv.transport import Transport

Context = tuple[dict[str, int], tuple[Dot, ...]]  # clock + extra dots (vclock docstring)

log = logging.getLogger(__name__)
FIRST = asyncio.FIRST_COMPLETED
# a GET asks R replicas; if they have not decided after this long, it asks the others too
# (a hedged read: a slow or silently dead replica costs this much, not the whole timeout)
HEDGE_S = 0.1


@dataclass(frozen=True)
class Placement:
    """Where one key lives: its reference, its preference list (the primaries), the rest
    of its ring walk (the fallbacks, in sloppy-quorum order, Dynamo §4.6) and, while a
    membership plan moves the partition, its incoming owners (sent every write, not
    counted toward W: the transfer's completeness check does not depend on them)."""

    ref: KeyRef
    replicas: tuple[str, ...]
    fallbacks: tuple[str, ...] = ()
    incoming: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReadResult:
    versions: tuple[Version, ...]  # reconciled, tombstones and expired versions included
    context: Context  # covers every one of `versions`, expired ones too
    now_ms: int | None = None  # the coordinator's clock when it answered (None: no expiry)

    @property
    def live(self) -> tuple[Version, ...]:
        """What the read shows: neither tombstones nor versions expired at `now_ms`."""
        if self.now_ms is None:
            return siblings.live(self.versions)
        return expiry.visible(self.versions, self.now_ms)


class DynamoCoordinator:
    def __init__(
        self,
        self_id: str,
        transport: Transport,
        is_alive: Callable[[str], bool],
        hedge_s: float = HEDGE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.self_id = self_id
        self._clock = clock  # decides which versions a read shows as expired
        self._hedge_s = hedge_s
        self._rng = random.Random(self_id)  # whom a read asks besides this node
        self._transport = transport
        self._is_alive = is_alive
        self._background: set[asyncio.Task[Any]] = set()
        self.read_repairs = 0  # replicas sent the merged result after a read, since start
        self.writes = 0  # puts and deletes coordinated here, since start (anti-entropy's throttle)
        self.siblings_seen: dict[int, int] = {}  # live versions of a found key → reads

    # ------------------------------------------------------------------ GET
    async def get(self, where: Placement, r: int, timeout: float, pr: int = 0) -> ReadResult:
        """Every reply is a primary's (reads never go to fallbacks), so `pr` raises the
        number of replies needed to max(r, pr) and is refused up front when fewer primaries
        are alive."""
        if pr:
            refusal = hints.read_refusal(where.replicas, self._down(where.replicas), pr)
            if refusal is not None:
                raise QuorumUnavailable(refusal, retry_after=0.5)
        need = max(r, pr)
        acc = ReadQuorum(where.replicas, need)
        calls = await self._read(where, acc, need, timeout)
        if acc.status() != "ok":
            raise QuorumUnavailable(
                f"only {len(acc.replied)} of {need} replicas answered (r={r}, pr={pr}; "
                f"{_errors(acc.errors)})",
                retry_after=0.5,
            )
        result = acc.result()
        if acc.repair_due(calls):  # else every asked replica answered alike: no task
            self._track(asyncio.ensure_future(self._read_repair(where, acc, calls, timeout)))
        read = ReadResult(result, siblings.join_full(result), int(self._clock() * 1000))
        if found := len(read.live):
            self.siblings_seen[found] = self.siblings_seen.get(found, 0) + 1
        return read

    async def _read(
        self, where: Placement, acc: ReadQuorum, need: int, timeout: float
    ) -> dict[str, asyncio.Task[Any]]:
        """Ask `need` replicas (this node first), and spares as `quorum.more_reads` says,
        until `acc` decides (and, after a miss, the spares answered) or the deadline; the
        calls made, for read repair."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        hedge_at = loop.time() + min(self._hedge_s, timeout / 2)
        spares = self._read_order(where.replicas)
        calls: dict[str, asyncio.Task[Any]] = {}
        pending: dict[asyncio.Task[Any], str] = {}

        def ask(count: int) -> None:
            for node in spares[:count]:
                calls[node] = task = self._spawn(self._fetch(node, where.ref, timeout))
                pending[task] = node
            del spares[:count]

        ask(need)
        confirming = False  # a miss: waiting for the spares' answers too
        while pending and (confirming or acc.status() == "pending"):
            now = loop.time()
            if now >= deadline:
                break
            wake = hedge_at if spares and now < hedge_at else deadline
            done, _ = await asyncio.wait(pending, timeout=wake - now, return_when=FIRST)
            for task in [t for t in pending if t in done]:  # in asking order: deterministic
                self._feed_read(acc, pending.pop(task), _outcome(task))
            missed = acc.status() == "ok" and not any(acc.replied.values())
            more = quorum.more_reads(
                need, len(acc.replied), len(pending), len(spares), loop.time() >= hedge_at, missed
            )
            confirming = confirming or (missed and more > 0)
            ask(more)
        return calls

    async def _fetch(self, node: str, ref: KeyRef, timeout: float) -> tuple[Version, ...]:
        reply = await self._transport.call(node, FETCH, KeyRequest(ref), timeout)
        return reply.versions

    @staticmethod
    def _feed_read(acc: Any, node: str, outcome: Any) -> None:
        if isinstance(outcome, BaseException):
            acc.add_error(node, _reason(outcome))
        else:
            acc.add_reply(node, outcome)

    async def _read_repair(
        self, where: Placement, acc: ReadQuorum, calls: dict[str, asyncio.Task[Any]], timeout: float
    ) -> None:
        await self._until_decided(acc, calls, timeout, self._feed_read, settle_all=True)
        merged = acc.result()
        for node, _ in acc.repairs().items():
            try:
                await self._store(node, where.ref, merged, timeout)
            except KvError as exc:
                log.debug("read repair of %s on %s failed: %s", where.ref, node, exc)
            else:
                self.read_repairs += 1

    # ------------------------------------------------------------------ PUT / DELETE
    async def put(
        self,
        where: Placement,
        context: Context | dict[str, int],
        value: Any,
        deleted: bool,
        w: int,
        max_siblings: int,
        timeout: float,
        pw: int = 0,
        durability: str = PROCESS,
        ttl_ms: int | None = None,
    ) -> Context:
        """`context`: what the client has seen — a clock plus extra dots, or a plain clock.
        `durability`: the keyspace's, sent with every copy (dynamo_mode/messages.py).
        `ttl_ms`: the new version's time to live (docs/ttl.md)."""
        self.writes += 1
        context = context if isinstance(context, tuple) else (dict(context), ())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        down = self._down((*where.replicas, *where.fallbacks))
        refusal = hints.write_refusal(where.replicas, where.fallbacks, down, w, pw)
        if refusal is not None:
            raise QuorumUnavailable(refusal, retry_after=0.5)
        request = CoordinateRequest(
            where.ref, context[0], context[1], value, deleted, max_siblings, durability, ttl_ms
        )
        minted_by, new, merged = await self._mint(where, request, timeout, down)
        copy = StoreRequest(where.ref, tuple(merged), durability)
        for node in where.incoming:  # a partition moving to `node`: it must not miss this write
            self._spawn(self._transport.call(node, STORE, copy, timeout))
        plan = SloppyWrite(where.replicas, where.fallbacks, w, pw, down)
        await self._replicate(plan, minted_by, copy, deadline)
        if plan.status() != "ok":
            raise UnknownOutcome(
                f"stored on {len(plan.filled)} of w={w} (pw={pw}) replicas before the "
                f"deadline ({_errors(plan.errors)}); the write may become visible",
                acked=len(plan.filled),
                required=w,
            )
        # exactly what the client has seen: its context and the new dot (vclock docstring)
        clock, dots = context
        return vclock.compact(clock, (*dots, new.dot))

    async def _mint(
        self, where: Placement, request: CoordinateRequest, timeout: float, down: frozenset[str]
    ) -> tuple[str, Version, tuple[Version, ...]]:
        """Ask replicas in turn to mint the dot; only `PeerUnreachable` lets us try the next."""
        tried: list[str] = []
        for node in self._nearest_first(where.replicas, down):
            try:
                reply = await self._transport.call(node, COORDINATE, request, timeout)
            except PeerUnreachable as exc:
                tried.append(f"{node}: {exc}")
                continue
            except PeerTimeout as exc:
                raise UnknownOutcome(f"{node} did not confirm the write: {exc}") from None
            return node, reply.version, reply.versions
        raise QuorumUnavailable(f"no replica reachable ({'; '.join(tried)})", retry_after=0.5)

    def _read_order(self, replicas: Sequence[str]) -> list[str]:
        """Whom a read asks, in order: this node first when it is a replica, then the alive
        others rotated by a random turn (so every replica is asked, and read-repaired,
        sooner or later: a counter made some keys never reach one replica when the same keys
        were read again in the same order), then the rest. Seeded per node: a simulation
        replays the same choices."""
        down = self._down(replicas)  # once: each answer is a failure detector's computation
        ordered = self._nearest_first(replicas, down)
        mine = ordered[:1] if ordered and ordered[0] == self.self_id else []
        alive = [n for n in ordered[len(mine) :] if n not in down]
        turn = self._rng.randrange(len(alive)) if alive else 0
        return [*mine, *alive[turn:], *alive[:turn], *ordered[len(mine) + len(alive) :]]

    def _nearest_first(self, replicas: Sequence[str], down: frozenset[str]) -> list[str]:
        """This node first when it is a replica (saves a hop), then alive ones, then those in
        `down`: whom a write asks to mint and a read asks first."""
        return sorted(replicas, key=lambda n: (n != self.self_id, n in down))

    async def _store(
        self, node: str, ref: KeyRef, versions: Sequence[Version], timeout: float
    ) -> None:
        await self._transport.call(node, STORE, StoreRequest(ref, tuple(versions)), timeout)

    async def _replicate(
        self,
        plan: SloppyWrite,
        minted_by: str,
        copy: StoreRequest,
        deadline: float,
    ) -> None:
        """Send every other slot's copy; return once `plan` decides. Sends still in flight
        are followed in the background (same deadline), so their hints are still placed."""
        inflight = self._send_all(plan.start(minted_by), copy, deadline)
        await self._drive(plan, inflight, copy, deadline, settle_all=False)
        if inflight:
            follow = self._drive(plan, inflight, copy, deadline, settle_all=True)
            self._track(asyncio.ensure_future(follow))

    def _send_all(
        self, sends: Sequence[Send], copy: StoreRequest, deadline: float
    ) -> dict[asyncio.Task[Any], Send]:
        left = max(deadline - asyncio.get_running_loop().time(), 0.001)
        return {self._spawn(self._deliver(s, copy, left)): s for s in sends}

    async def _deliver(self, send: Send, copy: StoreRequest, timeout: float) -> None:
        if not send.is_hint:
            await self._transport.call(send.node, STORE, copy, timeout)
            return
        request = HintRequest(send.owner, copy.ref, copy.versions, copy.durability)
        await self._transport.call(send.node, HINT, request, timeout)

    async def _drive(
        self,
        plan: SloppyWrite,
        inflight: dict[asyncio.Task[Any], Send],
        copy: StoreRequest,
        deadline: float,
        settle_all: bool,
    ) -> None:
        """Feed finished sends into `plan` and perform the reroutes it returns, until it
        decides (or, with settle_all, nothing is in flight) or the deadline passes."""
        loop = asyncio.get_running_loop()
        while inflight and (settle_all or plan.status() == "pending"):
            left = deadline - loop.time()
            if left <= 0:
                return
            done, _ = await asyncio.wait(
                inflight, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                send = inflight.pop(task)
                exc = task.exception()
                if exc is None:
                    plan.on_ack(send)
                    continue
                reroute = isinstance(exc, PeerUnreachable)  # certainly not stored there
                retries = plan.on_error(send, _reason(exc), reroute)
                inflight.update(self._send_all(retries, copy, deadline))

    def _down(self, nodes: Sequence[str]) -> frozenset[str]:
        return frozenset(n for n in nodes if not self._is_alive(n))

    # ------------------------------------------------------------------ plumbing
    async def _until_decided(
        self,
        acc: Any,
        calls: dict[str, asyncio.Task[Any]],
        timeout: float,
        feed: Callable[[Any, str, Any], None],
        settle_all: bool = False,
    ) -> None:
        """Feed finished calls into `acc` until it decides (or, with settle_all, all finish)."""
        pending = {t: n for n, t in calls.items() if n in acc.waiting}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while pending and (settle_all or acc.status() == "pending"):
            left = deadline - loop.time()
            if left <= 0:
                return
            done, _ = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                node = pending.pop(task)
                feed(acc, node, task.exception() if task.exception() else task.result())

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._track(task)
        return task

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_consume)

    async def close(self) -> None:
        await cancel_and_wait(*self._background)


def _outcome(task: asyncio.Task[Any]) -> Any:
    return task.exception() or task.result()


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a failed replica call is data, not an unhandled error


def _reason(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}"


def _errors(errors: Any) -> str:
    return "; ".join(f"{n}: {r}" for n, r in sorted(errors.items())) or "no errors"
