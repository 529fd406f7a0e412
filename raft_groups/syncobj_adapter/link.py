"""The Raft port's connections (docs/raft.md "The Raft port"), on a thread of their own.

`RaftLink` runs an asyncio loop on the `raft-link` thread: it listens on the node's Raft
port, dials every peer the mux names (one connection per direction of a pair: a node sends
on the connection it dialled and receives on those it accepted), runs the handshake and
checks every frame (link_codec.py). The driver thread never reads a socket: what the link
receives waits in `events` — ("connected" | "disconnected" | "message", peer address,
messages) — until the mux drains it in its poll, and `on_event` wakes that poll. So no
byte from the network is read, buffered or unpickled under the driver lock every group
needs, and an unauthenticated peer can make the link buffer at most 4 KiB per connection
for at most `handshake_timeout`, on at most `AcceptLimits` connections at a time.

Every method but those marked "loop thread" may be called from any thread.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from kv import wire
from kv.wire import Frame, FrameDecoder, Kind
from kv.wire_client import keepalive
from raft_groups.syncobj_adapter import link_codec as codec

log = logging.getLogger(__name__)
Event = tuple[str, str, Any]


@dataclass(frozen=True)
class LinkSettings:
    self_address: str  # this node's Raft id: what its HELLO says, what peers dial
    bind_address: str
    key: bytes  # kv/keys.py raft_key(secret)
    server_tls: ssl.SSLContext | None = None  # mutual TLS (kv/tls.py) or none
    client_tls: ssl.SSLContext | None = None
    handshake_timeout: float = 5.0  # TLS and ours, each
    retry: float = 0.5  # between dials to one peer
    max_buffered: int = 64 << 20  # unsent bytes to one peer before its connection is dropped
    limits: codec.AcceptLimits = dataclasses.field(default_factory=codec.AcceptLimits)


class HandshakeFailed(Exception):
    pass


class RaftLink:
    def __init__(self, settings: LinkSettings, on_event: Callable[[], None]) -> None:
        self.settings = settings
        self.events: collections.deque[Event] = collections.deque()
        self.refused = 0  # connections closed at accept or in the handshake, and bad frames
        self.bound = threading.Event()  # set once the Raft port listens
        self._on_event = on_event
        self._loop = asyncio.new_event_loop()
        self._dialers: dict[str, asyncio.Task[None]] = {}  # loop thread
        self._out: dict[str, _Outbound] = {}  # open outgoing connections, loop thread
        self._inbound: set[_Inbound] = set()
        self._server: asyncio.AbstractServer | None = None
        self._first = wire.FirstTimes()  # a refusal is logged once per address
        self._thread = threading.Thread(target=self._run, name="raft-link", daemon=True)
        self._thread.start()

    # -- any thread ---------------------------------------------------------------------
    def add_peer(self, address: str) -> None:
        self._call(self._add_peer, address)

    def drop_peer(self, address: str) -> None:
        self._call(self._drop_peer, address)

    def send(self, batches: dict[str, list[bytes]]) -> None:
        """Write each peer's frames on its connection, in order (dropped if it is down)."""
        self._call(self._send, batches)

    def close(self) -> None:
        self._call(self._stop)
        self._thread.join(timeout=5)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the link is shutting down
            pass

    # -- loop thread --------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.create_task(self._listen())
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _listen(self) -> None:
        """Bind the Raft port, retrying (kv/startup.py has already checked it is free)."""
        host, _, port = self.settings.bind_address.rpartition(":")
        while self._server is None:
            try:
                self._server = await self._loop.create_server(
                    lambda: _Inbound(self),
                    host.strip("[]"),
                    int(port),
                    ssl=self.settings.server_tls,
                    ssl_handshake_timeout=self.settings.handshake_timeout
                    if self.settings.server_tls
                    else None,
                    reuse_address=True,
                )
                self.bound.set()
            except OSError as exc:
                if self._first.first("bind"):
                    log.warning("raft port %s not bound yet: %s", self.settings.bind_address, exc)
                await asyncio.sleep(self.settings.retry)

    def emit(self, kind: str, address: str, value: Any = None) -> None:
        self.events.append((kind, address, value))
        self._on_event()

    def refuse(self, who: str, reason: str, *, dialled: bool = False) -> None:
        """Count a refused connection or frame; log it once per address."""
        self.refused += 1
        if self._first.first(who):
            way = "to" if dialled else "from"
            log.warning("raft port: connection %s %s: %s (logged once)", way, who, reason)

    def _add_peer(self, address: str) -> None:
        if address not in self._dialers:
            self._dialers[address] = self._loop.create_task(self._dial_loop(address))

    def _drop_peer(self, address: str) -> None:
        task = self._dialers.pop(address, None)
        if task is not None:
            task.cancel()
        conn = self._out.pop(address, None)
        if conn is not None:
            conn.close()

    def _send(self, batches: dict[str, list[bytes]]) -> None:
        for address, frames in batches.items():
            conn = self._out.get(address)
            if conn is not None:
                for data in frames:
                    conn.write(data)

    async def _dial_loop(self, address: str) -> None:
        while True:
            try:
                async with asyncio.timeout(2 * self.settings.handshake_timeout):
                    conn = await self._dial(address)
            except (OSError, TimeoutError, HandshakeFailed, ValueError) as exc:
                if isinstance(exc, HandshakeFailed | ssl.SSLError):
                    self.refuse(address, str(exc), dialled=True)
                await asyncio.sleep(self.settings.retry)
                continue
            self._first.forget(address)
            self._out[address] = conn
            self.emit("connected", address)
            try:
                await conn.lost
            finally:
                if self._out.get(address) is conn:
                    del self._out[address]
            self.emit("disconnected", address)
            await asyncio.sleep(self.settings.retry)

    async def _dial(self, address: str) -> _Outbound:
        host, _, port = address.rpartition(":")
        conn = _Outbound(self, address)
        tls = self.settings.client_tls
        await self._loop.create_connection(
            lambda: conn,
            host.strip("[]"),
            int(port),
            ssl=tls,
            server_hostname=host.strip("[]") if tls else None,
            ssl_handshake_timeout=self.settings.handshake_timeout if tls else None,
        )
        try:
            await conn.handshake()
        except BaseException:
            conn.close()
            raise
        return conn

    def _stop(self) -> None:
        for task in self._dialers.values():
            task.cancel()
        for out in self._out.values():
            out.close()
        for inbound in self._inbound:
            inbound.close()
        if self._server is not None:
            self._server.close()
        self._loop.call_later(0.05, self._loop.stop)  # let the cancellations run


class _Outbound(asyncio.Protocol):
    """A connection this node dialled: it sends, and reads only the handshake."""

    def __init__(self, link: RaftLink, address: str) -> None:
        self.link = link
        self.address = address
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder(1, wire.HANDSHAKE_MAX_PAYLOAD)
        self._inbox: asyncio.Queue[Frame | None] = asyncio.Queue()
        self._session = b""
        self._seq = 0
        self._version = 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        keepalive(self._transport.get_extra_info("socket"))

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except wire.FrameError as exc:
            self._inbox.put_nowait(None)
            self.link.refuse(self.address, str(exc), dialled=True)
            self.close()
            return
        if self._session and frames:  # a peer sends nothing after WELCOME but a CLOSE
            reason = f"closed by the peer: {wire.reason(frames[0])}"
            self.link.refuse(self.address, reason, dialled=True)
            self.close()
            return
        for frame in frames:
            self._inbox.put_nowait(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self._inbox.put_nowait(None)
        if not self.lost.done():
            self.lost.set_result(None)

    async def handshake(self) -> None:
        key = self.link.settings.key
        hello = wire.Hello.from_wire(wire.json_value((await self._expect(Kind.HELLO)).payload))
        if hello.node != self.address:
            raise HandshakeFailed(f"the node at {self.address} says it is {hello.node}")
        version = wire.choose_version(codec.VERSIONS, hello.versions)
        chosen = wire.choose_codec(codec.CODECS, hello.codecs)
        me = self.link.settings.self_address
        unsigned = wire.Auth(version, chosen, os.urandom(wire.NONCE_BYTES), me, b"")
        auth = dataclasses.replace(unsigned, proof=wire.proof(key, "client", hello, unsigned))
        self._write(wire.encode_frame(Kind.AUTH, 0, wire.json_payload(auth.to_wire())))
        welcome = wire.json_value((await self._expect(Kind.WELCOME)).payload)
        given = bytes.fromhex(str(welcome.get("proof", ""))) if isinstance(welcome, dict) else b""
        if not wire.verify(key, "server", hello, auth, given):
            raise HandshakeFailed(f"{self.address} could not prove the cluster secret")
        self._session = codec.session_key(key, hello, auth)
        self._version = version

    async def _expect(self, kind: Kind) -> Frame:
        frame = await self._inbox.get()
        if frame is None:
            raise HandshakeFailed("closed during the handshake")
        if frame.kind == Kind.CLOSE:
            raise HandshakeFailed(f"refused: {wire.reason(frame)}")
        if frame.kind != kind:
            raise HandshakeFailed(f"expected {kind.name}, got frame kind {frame.kind}")
        return frame

    def write(self, data: bytes) -> None:
        """Send one frame of pickled messages, sealed with the next sequence number."""
        payload = codec.seal(self._session, self._seq, data)
        self._seq += 1
        self._write(wire.encode_frame(Kind.REQUEST, 0, payload, version=self._version))
        stream = self._transport
        if stream is not None and stream.get_write_buffer_size() > self.link.settings.max_buffered:
            log.warning("raft link to %s: peer not reading; connection dropped", self.address)
            stream.abort()

    def _write(self, frame: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _Inbound(asyncio.Protocol):
    """A connection a peer dialled: handshake, then frames of messages from that peer."""

    def __init__(self, link: RaftLink) -> None:
        self.link = link
        self.source = "?"
        self.peer = ""  # the authenticated peer's Raft address
        self._admitted = False
        self._transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder(1, wire.HANDSHAKE_MAX_PAYLOAD)
        self._hello: wire.Hello | None = None
        self._session = b""
        self._seq = 0
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = stream = cast(asyncio.Transport, transport)
        peername = stream.get_extra_info("peername")
        self.source = str(peername[0]) if peername else "?"
        link = self.link
        if not link.settings.limits.admit(self.source):
            link.refused += 1  # a flood: not logged per connection
            stream.abort()
            return
        self._admitted = True
        link._inbound.add(self)
        keepalive(stream.get_extra_info("socket"))
        nonce = os.urandom(wire.NONCE_BYTES)
        self._hello = wire.Hello(codec.VERSIONS, codec.CODECS, nonce, link.settings.self_address)
        stream.write(wire.encode_frame(Kind.HELLO, 0, wire.json_payload(self._hello.to_wire())))
        timeout = link.settings.handshake_timeout
        self._deadline = asyncio.get_running_loop().call_later(
            timeout, self._refuse, f"handshake not completed within {timeout}s"
        )

    def data_received(self, data: bytes) -> None:
        try:
            for frame in self._decoder.feed(data):
                if self.peer:
                    self._receive(frame)
                else:
                    self._authenticate(frame)
        except (wire.FrameError, codec.Refused, ValueError) as exc:
            self._refuse(str(exc))

    def _authenticate(self, frame: Frame) -> None:
        hello = self._hello
        if frame.kind != Kind.AUTH or hello is None:
            raise ValueError(f"expected AUTH, got frame kind {frame.kind}")
        auth = wire.Auth.from_wire(wire.json_value(frame.payload))
        if auth.version not in codec.VERSIONS or auth.codec not in codec.CODECS:
            raise ValueError(f"unsupported version {auth.version} or codec {auth.codec!r}")
        key = self.link.settings.key
        if not wire.verify(key, "client", hello, auth, auth.proof):
            raise ValueError("authentication failed: the cluster secrets differ")
        proof = wire.proof(key, "server", hello, auth)
        assert self._transport is not None
        self._transport.write(
            wire.encode_frame(Kind.WELCOME, 0, wire.json_payload({"proof": proof.hex()}))
        )
        self._session = codec.session_key(key, hello, auth)
        self._decoder.max_payload = codec.MAX_FRAME
        self.peer = auth.node
        self._settle()
        self.link._first.forget(self.source)

    def _receive(self, frame: Frame) -> None:
        if frame.kind != Kind.REQUEST:
            raise ValueError(f"unexpected frame kind {frame.kind}")
        data = codec.unseal(self._session, self._seq, frame.payload)
        self._seq += 1
        self.link.emit("message", self.peer, codec.loads(data))

    def _settle(self) -> None:
        """Give the connection's place among those waiting for a handshake back."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._admitted:
            self._admitted = False
            self.link.settings.limits.release(self.source)

    def _refuse(self, reason: str) -> None:
        who = f"{self.peer} ({self.source})" if self.peer else self.source
        self.link.refuse(who, reason)
        stream = self._transport
        if stream is not None and not stream.is_closing():
            if not self.peer:
                stream.write(
                    wire.encode_frame(Kind.CLOSE, 0, wire.json_payload({"reason": reason}))
                )
            stream.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle()
        self.link._inbound.discard(self)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
