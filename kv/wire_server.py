"""The serving side of the internode protocol (kv/wire.py, docs/internode.md).

A `ServerLink` is one upgraded connection: it sends HELLO, checks the client's AUTH proof
within `handshake_timeout` while accepting only small frames, answers WELCOME, and from then
on runs each REQUEST as its own task against the node's `OpTable` (kv/internode.py),
writing each REPLY or ERROR as it completes — replies leave in completion order, paired with
their requests by id. A handler runs to completion even if its connection drops (as an HTTP
handler did): the caller sees `PeerTimeout`, "may have been performed".

Carrier-agnostic: kv/http/internode.py feeds it the bytes of an upgraded HTTP connection
(`feed_data`/`feed_eof`, the interface of aiohttp's payload parsers) and gives it a
`Carrier` to write to. A refused handshake (wrong secret, no common version) or a broken
frame ends the connection with a CLOSE frame naming the reason; a wrong secret is logged once
per peer address.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any, Protocol

from kv import wire
from kv.errors import InvalidRequest, KvError, StorageFailed, TooLarge
from kv.internode import OpTable
from kv.storage import StorageError
from kv.wire import Frame, FrameDecoder, Kind

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 5.0  # an unauthenticated connection is closed after this
_INTERNAL = {"error": {"code": "internal", "message": "internal error (logged)"}}


class Carrier(Protocol):
    """The byte stream under one connection."""

    peer: str  # the remote address, for logs

    async def send(self, data: bytes) -> None:
        """Write, waiting while the write buffer is full; ConnectionError once closed."""

    def send_soon(self, data: bytes) -> None:
        """Write at the end of this loop turn, with whatever else was sent in it (one
        `send` for several replies); dropped if the connection closed first."""

    def abort(self, last: bytes) -> None:
        """Write `last` if still possible, then close."""


class Refused(Exception):
    """The handshake failed: the reason goes to the client in a CLOSE frame."""


class InternodeServer:
    """The node's side of every internode connection it accepts."""

    def __init__(
        self,
        node_id: str,
        key: bytes,
        table: OpTable,
        *,
        versions: tuple[int, ...] = wire.VERSIONS,
        handshake_timeout: float = HANDSHAKE_TIMEOUT_S,
        nonce: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.node_id = node_id
        self.key = key
        self.table = table
        self.versions = versions
        self.handshake_timeout = handshake_timeout
        self.nonce = nonce
        self.refused = wire.FirstTimes()  # peer addresses whose refusal was logged
        self._links: set[ServerLink] = set()
        self._closing = False
        # told the node id of every client that authenticates: that node is up now
        self.on_authenticated: Callable[[str], None] = lambda node: None

    def accept(self, carrier: Carrier) -> ServerLink:
        """A link for an upgraded connection; once the node shuts down, one that is closed
        at once (an upgrade in flight while `close` ran would otherwise live on, and the
        HTTP runner's graceful shutdown wait for it: seen as a node stop over 30 s)."""
        link = ServerLink(self, carrier)
        self._links.add(link)
        if self._closing:
            link.close("node shutting down")
        return link

    def forget(self, link: ServerLink) -> None:
        self._links.discard(link)

    async def close(self) -> None:
        """Node shutdown: end every connection and cancel the requests still running."""
        self._closing = True
        for link in list(self._links):
            link.close("node shutting down")
            link.cancel_requests()
        await asyncio.sleep(0)  # one loop turn: the cancelled requests and closed links unwind


class ServerLink:
    def __init__(self, server: InternodeServer, carrier: Carrier) -> None:
        self._server = server
        self._carrier = carrier
        self._decoder = FrameDecoder(1, wire.HANDSHAKE_MAX_PAYLOAD)
        self._inbox: asyncio.Queue[Frame | None] = asyncio.Queue()
        self._codec: wire.Codec | None = None  # set once authenticated
        self._version = 1
        self._closed = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task[None]] = set()
        self.client = "?"  # the client's node id, once it said it

    # -- the carrier's interface (aiohttp's payload parser) ----------------------------
    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._closed.done():
            return False, b""
        try:
            frames = self._decoder.feed(data)
        except wire.FrameError as exc:
            self._protocol_error(str(exc))
            return False, b""
        for frame in frames:
            self._receive(frame)
        return False, b""

    def feed_eof(self) -> None:
        self._finish()

    # -- lifecycle ----------------------------------------------------------------------
    async def run(self) -> None:
        """Authenticate, then serve until the connection ends."""
        try:
            async with asyncio.timeout(self._server.handshake_timeout):
                await self._handshake()
        except Refused as exc:
            self._refuse(str(exc))
        except TimeoutError:
            log.debug("internode connection from %s: no handshake in time", self._carrier.peer)
            self.close(f"handshake not completed within {self._server.handshake_timeout}s")
        except ConnectionError:
            self._finish()
        await self._closed
        self._server.forget(self)

    def close(self, reason: str) -> None:
        if not self._closed.done():
            payload = wire.json_payload({"reason": reason})
            self._carrier.abort(wire.encode_frame(Kind.CLOSE, 0, payload, version=self._version))
            self._finish()

    def cancel_requests(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def _finish(self) -> None:
        if not self._closed.done():
            self._closed.set_result(None)
            self._inbox.put_nowait(None)  # wakes a handshake waiting for AUTH

    def _protocol_error(self, reason: str) -> None:
        if self._codec is None:  # not authenticated: anyone may send junk, log it once
            self._refuse(reason)
            return
        peer = self._carrier.peer
        log.warning("internode connection from %s (%s): %s", peer, self.client, reason)
        self.close(reason)

    def _refuse(self, reason: str) -> None:
        """End an unauthenticated connection; a warning once per peer address (until one
        from there succeeds), so a misconfigured or hostile peer cannot flood the log."""
        peer = self._carrier.peer
        if self._server.refused.first(peer):
            log.warning(
                "internode connection from %s (says it is %s) refused: %s "
                "(logged once per address)",
                peer,
                self.client,
                reason,
            )
        self.close(reason)

    # -- handshake ----------------------------------------------------------------------
    async def _handshake(self) -> None:
        server = self._server
        hello = wire.Hello(
            server.versions, tuple(wire.CODECS), server.nonce(wire.NONCE_BYTES), server.node_id
        )
        await self._carrier.send(
            wire.encode_frame(Kind.HELLO, 0, wire.json_payload(hello.to_wire()))
        )
        auth = await self._auth()
        self.client = auth.node
        if auth.version not in server.versions:
            raise Refused(f"protocol version {auth.version} is not one of {list(server.versions)}")
        if auth.codec not in wire.CODECS:
            raise Refused(f"payload codec {auth.codec!r} is not one of {list(wire.CODECS)}")
        if not wire.verify(server.key, "client", hello, auth, auth.proof):
            raise Refused("authentication failed: the cluster secrets differ")
        welcome = {"proof": wire.proof(server.key, "server", hello, auth).hex()}
        await self._carrier.send(wire.encode_frame(Kind.WELCOME, 0, wire.json_payload(welcome)))
        self._open(auth)

    async def _auth(self) -> wire.Auth:
        frame = await self._inbox.get()
        if frame is None:
            raise ConnectionError("closed during the handshake")
        if frame.kind == Kind.CLOSE:
            raise Refused(f"the client gave up: {wire.reason(frame)}")
        if frame.kind != Kind.AUTH:
            raise Refused(f"expected AUTH, got frame kind {frame.kind}")
        try:
            return wire.Auth.from_wire(wire.json_value(frame.payload))
        except ValueError as exc:
            raise Refused(f"malformed AUTH: {exc}") from None

    def _open(self, auth: wire.Auth) -> None:
        self._version = self._decoder.version = auth.version
        self._decoder.max_payload = wire.MAX_PAYLOAD
        self._codec = wire.CODECS[auth.codec]
        self._server.refused.forget(self._carrier.peer)
        self._server.on_authenticated(auth.node)
        while not self._inbox.empty():
            frame = self._inbox.get_nowait()
            if frame is not None:
                self._receive(frame)

    # -- serving ------------------------------------------------------------------------
    def _receive(self, frame: Frame) -> None:
        if self._codec is None:
            self._inbox.put_nowait(frame)
        elif frame.kind == Kind.REQUEST:
            task = asyncio.get_running_loop().create_task(self._serve(frame))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif frame.kind == Kind.CLOSE:
            log.debug("internode client %s closed: %s", self.client, wire.reason(frame))
            self.close("closed by the client")
        else:
            self._protocol_error(f"unexpected frame kind {frame.kind} from a client")

    async def _serve(self, frame: Frame) -> None:
        # a reply that is not written because the connection closed: its caller sees the
        # connection lost (PeerTimeout: may have been performed). Outstanding replies are
        # bounded by the client's calls in flight (kv/wire_client.py MAX_IN_FLIGHT).
        self._carrier.send_soon(await self._reply(frame))

    async def _reply(self, frame: Frame) -> bytes:
        codec = self._codec
        assert codec is not None
        rid, version = frame.request_id, self._version
        try:
            payload = codec.encode(
                await self._server.table.dispatch(frame.name, _decode(codec, frame))
            )
            if len(payload) > wire.MAX_PAYLOAD:
                raise TooLarge(f"{frame.name} reply", len(payload), wire.MAX_PAYLOAD)
            return wire.encode_frame(Kind.REPLY, rid, payload, version=version)
        except (KvError, StorageError) as exc:
            if isinstance(exc, StorageError):  # a failing disk: loud here (kv/errors.py)
                log.error("internode %s from %s: storage failed: %s", frame.name, self.client, exc)
                exc = StorageFailed(f"storage failed on {self._server.node_id}: {exc}")
            return wire.encode_frame(Kind.ERROR, rid, codec.encode(exc.to_wire()), version=version)
        except Exception:
            log.exception("internode %s from %s failed", frame.name, self.client)
            return wire.encode_frame(Kind.ERROR, rid, codec.encode(_INTERNAL), version=version)


def _decode(codec: wire.Codec, frame: Frame) -> Any:
    try:
        return codec.decode(frame.payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("body", f"{frame.name}: not valid {codec.name}: {exc}") from None
