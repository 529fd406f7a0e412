"""Internode transport: a narrow Protocol and its shell over the framed protocol.

`call(node, op, request, timeout)` sends a typed request of an `Operation`
(kv/internode.py) and returns its typed reply, or raises a `KvError` — every failure is
converted here, at the boundary:
- `PeerUnreachable` (503): the request certainly did not reach the peer's handler
  (connection refused, handshake refused, unknown member, never written) — the operation
  was not performed there;
- `PeerTimeout` (504): sent but no reply in time, the connection was lost with the call in
  flight, or the reply was unreadable — it may have been performed;
- a `KvError` the peer answered with (rebuilt by `kv.errors.from_wire`);
- `TooLarge` (413): the encoded request is over the frame cap; nothing was sent.

`WireTransport` keeps one authenticated, multiplexed connection per peer address
(kv/wire_client.py; docs/internode.md), opened on first use and reopened after a loss; a
failed dial makes further calls to that address fail fast for a backoff (doubling from
`BACKOFF_MIN_S` to `BACKOFF_MAX_S`, reset by a success), so a dead or black-holed peer
costs one dial per window, not one per call.

Calls to this node itself skip the network and go to the local `OpTable` with the typed
request. The in-project twin for the simulation tier is `tests/sim/sim_transport.py`; both
pass tests/sim/test_transport_contract.py.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any, Protocol

from kv import wire
from kv.errors import KvError, PeerTimeout, PeerUnreachable, TooLarge, from_wire
from kv.internode import Operation, OpTable, Req, Resp
from kv.wire import Kind
from kv.wire_client import MAX_IN_FLIGHT, HandshakeFailed, PeerConnection

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3.0  # dial + upgrade + handshake
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 1.0


class Transport(Protocol):
    async def call(
        self, node: str, op: Operation[Req, Resp], request: Req, timeout: float
    ) -> Resp: ...


class WireTransport:
    """Node-to-node calls over kv/wire.py connections, one per peer address."""

    def __init__(
        self,
        self_id: str,
        resolve: Callable[[str], str | None],
        key: bytes,
        local: OpTable,
        *,
        max_in_flight: int = MAX_IN_FLIGHT,
        clock: Callable[[], float] | None = None,
        tls: ssl.SSLContext | None = None,  # the API ports speak TLS (kv/tls.py)
    ) -> None:
        self._self_id = self_id
        self._tls = tls
        self._resolve = resolve
        self._key = key
        self._local = local
        self._max_in_flight = max_in_flight
        self._clock = clock
        self._peers: dict[str, _Peer] = {}
        self.refusals = wire.FirstTimes()  # addresses whose refusal was logged

    def peer_up(self, node: str) -> None:
        """`node` just proved itself on a connection it opened to us: it is up, so a dial
        backoff from while it was down ends now (its calls would fail fast for up to
        `BACKOFF_MAX_S` after it came back: writes it then missed, seen in the cluster
        tier's kill-and-restart test)."""
        address = self._resolve(node)
        peer = self._peers.get(address) if address is not None else None
        if peer is not None:
            peer.redial_now()

    async def call(self, node: str, op: Operation[Req, Resp], request: Req, timeout: float) -> Resp:
        if node == self._self_id:
            return await self._local.call_local(op, request)
        address = self._resolve(node)
        if address is None:
            raise PeerUnreachable(f"node {node!r} is not a member", retry_after=0.5)
        return await self.call_at(address, op, request, timeout, peer=node)

    async def call_at(
        self,
        address: str,
        op: Operation[Req, Resp],
        request: Req,
        timeout: float,
        peer: str | None = None,
    ) -> Resp:
        """Call a node by its HTTP address rather than its member id: a joining node knows
        only the addresses of its seeds (kv/meta_reader.py). Same failures as `call`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn = await self._peer(address).connection(timeout)
        if peer is not None and conn.peer_id != peer:
            raise PeerUnreachable(f"{address} is node {conn.peer_id!r}, not {peer!r}")
        payload = conn.codec.encode(request.to_wire())
        if len(payload) > wire.MAX_PAYLOAD:
            raise TooLarge(f"internode {op.name} request", len(payload), wire.MAX_PAYLOAD)
        left = deadline - loop.time()
        if left <= 0:  # dialling took it all: better unsent than sent and given up on at once
            raise PeerUnreachable(f"{address}: connected too late to send {op.name}")
        return _unwrap(op, conn, await conn.call(op.name, payload, left))

    def _peer(self, address: str) -> _Peer:
        peer = self._peers.get(address)
        if peer is None:
            peer = self._peers[address] = _Peer(address, self)
        return peer

    async def close(self) -> None:
        for peer in list(self._peers.values()):
            await peer.close()
        self._peers.clear()


def _unwrap(op: Operation[Any, Resp], conn: PeerConnection, frame: wire.Frame) -> Resp:
    try:
        body = conn.codec.decode(frame.payload)
        if frame.kind == Kind.ERROR:
            raise from_wire(0, body)
        return op.reply(body)
    except KvError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        who = f"{conn.peer_id} at {conn.address}"
        raise PeerTimeout(f"{who} {op.name}: unreadable reply: {exc}") from None


class _Peer:
    """The connection to one address: at most one open, at most one being opened."""

    def __init__(self, address: str, owner: WireTransport) -> None:
        self.address = address
        self._owner = owner
        self._conn: PeerConnection | None = None
        self._dialing: asyncio.Task[PeerConnection] | None = None
        self._retry_at = 0.0
        self._backoff = BACKOFF_MIN_S
        self._last_error = ""

    async def connection(self, timeout: float) -> PeerConnection:
        conn = self._conn
        if conn is not None and conn.is_open:
            return conn
        if self._now() < self._retry_at:
            wait = self._retry_at - self._now()
            raise PeerUnreachable(
                f"{self.address}: {self._last_error} (next dial in {wait:.2f}s)", retry_after=0.5
            )
        if self._dialing is None:
            self._dialing = asyncio.get_running_loop().create_task(self._dial())
            self._dialing.add_done_callback(_retrieve)  # callers may all have timed out
        try:
            return await asyncio.wait_for(asyncio.shield(self._dialing), timeout)
        except TimeoutError:
            raise PeerUnreachable(
                f"{self.address}: not connected within {timeout:.2f}s", retry_after=0.5
            ) from None

    async def _dial(self) -> PeerConnection:
        owner = self._owner
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                conn = await PeerConnection.open(
                    self.address, owner._self_id, owner._key, owner._max_in_flight, owner._tls
                )
        except (OSError, TimeoutError, HandshakeFailed, ValueError) as exc:
            raise self._failed(exc) from None
        finally:
            self._dialing = None
        self._backoff = BACKOFF_MIN_S
        owner.refusals.forget(self.address)
        conn.on_lost = self._lost
        self._conn = conn
        return conn

    def _failed(self, exc: Exception) -> PeerUnreachable:
        self._last_error = _describe(exc)
        self._retry_at = self._now() + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
        if isinstance(exc, HandshakeFailed | ValueError) and self._owner.refusals.first(
            self.address
        ):
            log.warning("internode connection to %s refused: %s (logged once)", self.address, exc)
        return PeerUnreachable(f"{self.address}: {self._last_error}", retry_after=0.5)

    def redial_now(self) -> None:
        self._retry_at, self._backoff = 0.0, BACKOFF_MIN_S

    def _lost(self, conn: PeerConnection) -> None:
        if self._conn is conn:
            self._conn = None

    def _now(self) -> float:
        clock = self._owner._clock
        return clock() if clock is not None else asyncio.get_running_loop().time()

    async def close(self) -> None:
        if self._dialing is not None:
            self._dialing.cancel()
            await asyncio.gather(self._dialing, return_exceptions=True)
        if self._conn is not None:
            self._conn.close("node shutting down")
            self._conn = None


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _describe(exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return f"not connected within {CONNECT_TIMEOUT_S}s"
    return f"{exc.__class__.__name__}: {exc}" if isinstance(exc, OSError) else str(exc)
