"""The calling side of the internode protocol: one authenticated connection to one peer
(kv/wire.py, docs/internode.md).

`PeerConnection.open` dials the peer's API port, asks for the `kv-internode` upgrade, and
runs the client half of the handshake. `call` then writes a REQUEST frame with a fresh
request id and waits for the REPLY or ERROR frame carrying that id; any number of calls
share the connection, up to `max_in_flight` (further callers wait for a slot, within their
timeout). Failures keep the transport's contract (kv/transport.py):

- `PeerUnreachable`: the request was never written — no slot or no write buffer room
  before the deadline, or the connection was already closed;
- `PeerTimeout`: written, and no reply before the deadline, or the connection was lost
  while the call was in flight — it may have been performed.

A failed upgrade or handshake raises `HandshakeFailed` (kv/transport.py turns it into
`PeerUnreachable` and logs it once per address).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import ssl
from collections.abc import Callable
from typing import cast

from kv import wire
from kv.errors import PeerTimeout, PeerUnreachable
from kv.wire import Frame, FrameDecoder, Kind

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 512  # calls on one connection; a peer's handlers run concurrently
MAX_RESPONSE_HEAD = 8192


class HandshakeFailed(Exception):
    """The peer did not upgrade, refused us, or could not prove the cluster secret."""


class PeerConnection(asyncio.Protocol):
    def __init__(self, address: str, self_id: str, key: bytes, max_in_flight: int) -> None:
        self.address = address
        self.peer_id = "?"  # the peer's node id, from its HELLO
        self.codec: wire.Codec = wire.CODECS["json"]
        self._self_id = self_id
        self._key = key
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._head: bytearray | None = bytearray()  # the HTTP response head until read
        self._upgraded = False
        self._decoder = FrameDecoder(1, wire.HANDSHAKE_MAX_PAYLOAD)
        self._inbox: asyncio.Queue[Frame | None] = asyncio.Queue()
        self._open = False
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._outgoing: list[bytes] = []  # REQUEST frames of this loop turn (`_send`)
        self._next_id = 0
        self._version = 1
        self._slots = asyncio.Semaphore(max_in_flight)
        self._writable = asyncio.Event()
        self._writable.set()
        self.closed: str | None = None  # why, once closed
        self.on_lost: Callable[[PeerConnection], None] = lambda _: None

    @staticmethod
    async def open(
        address: str,
        self_id: str,
        key: bytes,
        max_in_flight: int = MAX_IN_FLIGHT,
        tls: ssl.SSLContext | None = None,
    ) -> PeerConnection:
        """Connect (over TLS with `tls`, checking the peer's certificate), upgrade and
        authenticate; OSError (ssl.SSLError included) if the peer cannot be dialled."""
        host, _, port = address.rpartition(":")
        conn = PeerConnection(address, self_id, key, max_in_flight)
        host = host.strip("[]")
        await conn._loop.create_connection(
            lambda: conn, host, int(port), ssl=tls, server_hostname=host if tls else None
        )
        try:
            await conn._handshake()
        except BaseException:
            conn.close("handshake failed")
            raise
        return conn

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a cast, not an isinstance check: uvloop's transports are not asyncio.Transport
        # subclasses, yet have its methods (measured; docs/benchmarks.md, event loop A/B)
        self._transport = stream = cast(asyncio.Transport, transport)
        keepalive(stream.get_extra_info("socket"))
        head = f"GET {wire.PATH} HTTP/1.1\r\nHost: {self.address}\r\n"
        upgrade = f"Connection: Upgrade\r\nUpgrade: {wire.UPGRADE}\r\n\r\n"
        stream.write((head + upgrade).encode("latin-1"))

    def data_received(self, data: bytes) -> None:
        if self._head is not None:
            data = self._response_head(data)
        try:
            frames = self._decoder.feed(data) if data else []
        except wire.FrameError as exc:
            self._protocol_error(str(exc))
            return
        for frame in frames:
            self._receive(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.closed or f"connection lost ({exc or 'closed by the peer'})"
        self._writable.set()  # wake writers: they see `closed`
        self._inbox.put_nowait(None)
        pending, self._pending = self._pending, {}
        lost = f"{self._who}: {self.closed} with the call in flight; it may have been performed"
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(PeerTimeout(lost))
        self.on_lost(self)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- calls --------------------------------------------------------------------------
    async def call(self, name: str, payload: bytes, timeout: float) -> Frame:
        """The REPLY or ERROR frame answering one REQUEST."""
        deadline = self._loop.time() + timeout
        await self._wait_writable(deadline, name)
        try:
            rid = self._send(name, payload)
            fut = self._pending[rid]
            timer = self._loop.call_at(deadline, self._expire, rid, name, timeout)
            try:
                return await fut
            finally:
                timer.cancel()
                self._pending.pop(rid, None)
        finally:
            self._slots.release()

    async def _wait_writable(self, deadline: float, name: str) -> None:
        """A slot and write buffer room, or `PeerUnreachable`: nothing was written."""
        if self._slots.locked() or not self._writable.is_set():
            await self._wait_for_room(deadline, name)
        else:
            await self._slots.acquire()  # free: returns at once
        transport = self._transport
        if self.closed is not None or transport is None or transport.is_closing():
            self._slots.release()
            raise PeerUnreachable(f"{self._who}: {self.closed or 'closing'}", retry_after=0.5)

    async def _wait_for_room(self, deadline: float, name: str) -> None:
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            raise PeerUnreachable(f"{self._who}: every slot busy, {name} not sent") from None
        try:
            async with asyncio.timeout_at(deadline):
                await self._writable.wait()
        except BaseException as exc:
            self._slots.release()
            if isinstance(exc, TimeoutError):
                raise PeerUnreachable(f"{self._who}: write buffer full, {name} not sent") from None
            raise

    def _send(self, name: str, payload: bytes) -> int:
        rid = self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        while rid == 0 or rid in self._pending:
            rid = self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        self._pending[rid] = self._loop.create_future()
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        self._outgoing.append(wire.encode_frame(Kind.REQUEST, rid, payload, name, self._version))
        return rid

    def _flush(self) -> None:
        """Write the REQUEST frames of one loop turn with one `send` (measured: a `send`
        per frame was 7 % of a node's samples under an eventual put load). A frame not
        written because the connection closed first fails its call like one lost in
        flight (`PeerTimeout`: it may have been performed), which is only cautious."""
        frames, self._outgoing = self._outgoing, []
        transport = self._transport
        if frames and transport is not None and not transport.is_closing():
            transport.write(b"".join(frames))

    def _expire(self, rid: int, name: str, timeout: float) -> None:
        fut = self._pending.pop(rid, None)
        if fut is not None and not fut.done():
            fut.set_exception(
                PeerTimeout(f"{self._who} did not answer {name} within {timeout:.2f}s")
            )

    # -- upgrade and handshake ----------------------------------------------------------
    def _response_head(self, data: bytes) -> bytes:
        """Consume the HTTP response head; return what follows it (frames)."""
        assert self._head is not None
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_RESPONSE_HEAD:
                self._head = None
                self._inbox.put_nowait(None)
                self.close("HTTP response head too long")
            return b""
        head, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
        self._head = None
        status = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
        if status.split(" ")[1:2] != ["101"]:
            why = f"answered {status!r} to the internode upgrade (not a kv node of this release?)"
            self.close(why)
            return b""
        self._upgraded = True
        return rest

    async def _handshake(self) -> None:
        hello = wire.Hello.from_wire(wire.json_value((await self._expect(Kind.HELLO)).payload))
        self.peer_id = hello.node
        try:
            version = wire.choose_version(wire.VERSIONS, hello.versions)
            codec = wire.choose_codec(tuple(wire.CODECS), hello.codecs)
        except ValueError as exc:
            self.close(str(exc))
            raise HandshakeFailed(f"{self._who}: {exc}") from None
        unsigned = wire.Auth(version, codec, os.urandom(wire.NONCE_BYTES), self._self_id, b"")
        auth = dataclasses.replace(unsigned, proof=wire.proof(self._key, "client", hello, unsigned))
        self._write(Kind.AUTH, wire.json_payload(auth.to_wire()))
        welcome = wire.json_value((await self._expect(Kind.WELCOME)).payload)
        given = bytes.fromhex(str(welcome.get("proof", ""))) if isinstance(welcome, dict) else b""
        if not wire.verify(self._key, "server", hello, auth, given):
            self.close("authentication failed")
            raise HandshakeFailed(f"{self._who} could not prove the cluster secret")
        self._version = self._decoder.version = version
        self._decoder.max_payload = wire.MAX_PAYLOAD
        self.codec = wire.CODECS[codec]
        self._open = True

    async def _expect(self, kind: Kind) -> Frame:
        frame = await self._inbox.get()
        if frame is None:
            raise HandshakeFailed(f"{self._who}: {self.closed or 'closed'} during the handshake")
        if frame.kind == Kind.CLOSE:
            raise HandshakeFailed(f"{self._who} refused the connection: {wire.reason(frame)}")
        if frame.kind != kind:
            raise HandshakeFailed(f"{self._who}: expected {kind.name}, got frame kind {frame.kind}")
        return frame

    # -- frames -------------------------------------------------------------------------
    def _receive(self, frame: Frame) -> None:
        if frame.kind in (Kind.REPLY, Kind.ERROR) and self._open:
            fut = self._pending.pop(frame.request_id, None)
            if fut is not None and not fut.done():
                fut.set_result(frame)  # else: a late reply to a call that timed out
        elif frame.kind == Kind.CLOSE and self._open:
            self.closed = f"closed by the peer: {wire.reason(frame)}"
            self.close(None)
        elif not self._open:
            self._inbox.put_nowait(frame)
        else:
            self._protocol_error(f"unexpected frame kind {frame.kind} from a server")

    def _protocol_error(self, reason: str) -> None:
        log.warning("internode connection to %s: %s", self._who, reason)
        self.close(reason)

    def _write(self, kind: Kind, payload: bytes) -> None:
        self._flush()  # the requests queued before it go first
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(wire.encode_frame(kind, 0, payload, version=self._version))

    def close(self, reason: str | None) -> None:
        """Close (telling the peer why, if `reason`); in-flight calls end as `PeerTimeout`."""
        if self._transport is None or self._transport.is_closing():
            return
        if reason is not None and self._upgraded:
            self._write(Kind.CLOSE, wire.json_payload({"reason": reason}))
        self.closed = self.closed or reason or "closed"
        self._transport.close()

    @property
    def is_open(self) -> bool:
        return self._open and self.closed is None

    @property
    def _who(self) -> str:
        return f"{self.peer_id} at {self.address}"


def keepalive(sock: socket.socket | None) -> None:
    """TCP keepalive tuned to notice a silently dead peer within ~25 s (Linux options), so
    a connection to a vanished host ends and its calls fail instead of waiting forever."""
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
