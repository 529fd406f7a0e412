"""One connection of the Raft port (link.py): a non-blocking socket, TLS when configured,
the handshake of link_codec.py, then sealed frames — one direction only: the dialling side
sends, the accepting side receives. Driven by `RaftLink.poll` on the driver thread.

Stages: a dialled connection connects, then (TLS) handshakes, then reads HELLO, sends
AUTH, reads WELCOME and is open; an accepted one (TLS) handshakes, sends HELLO, reads AUTH,
sends WELCOME and is open. Until open, a frame is at most 4 KiB and the connection must
open before its deadline (link.py `_maintain`).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import selectors
import socket
import ssl
from typing import TYPE_CHECKING

from kv import wire
from kv.wire import Frame, FrameDecoder, Kind
from raft_groups.syncobj_adapter import link_codec as codec

if TYPE_CHECKING:
    from raft_groups.syncobj_adapter.link import RaftLink

log = logging.getLogger(__name__)
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
READS_PER_EVENT = 64  # recv calls per readiness event, so one busy peer cannot starve others
_AGAIN = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class Handshake(enum.Enum):
    DIALLED = "dialled"
    ACCEPTED = "accepted"


class Refused(Exception):
    """The other side refused us or failed to prove itself (logged once per address)."""


class Conn:
    def __init__(
        self,
        link: RaftLink,
        sock: socket.socket,
        side: Handshake,
        who: str,
        source: str,
        deadline: float,
    ) -> None:
        self.link = link
        self.sock: socket.socket = sock
        self.side = side
        self.who = who  # the dialled address, or the accepted peer's IP address
        self.source = source
        self.deadline = deadline
        self.peer = ""  # the authenticated peer's Raft address (accepted side)
        self.open = False
        self.closed = False
        self._connected = side is Handshake.ACCEPTED
        self._tls: ssl.SSLSocket | None = None
        self._tls_pending = False
        self._wbuf = bytearray()
        self._decoder = FrameDecoder(1, wire.HANDSHAKE_MAX_PAYLOAD)
        self._hello: wire.Hello | None = None
        self._auth: wire.Auth | None = None
        self._session = b""
        self._seq = 0
        self._version = 1
        self._events = READ | WRITE  # what the link registered it for

    def start(self) -> None:
        """Once registered with the link's selector: an accepted connection begins its
        handshake (a dialled one begins when its connect completes, `on_ready`)."""
        if self._connected:
            try:
                self._begin()
            except ssl.SSLError as exc:
                self.fail(f"TLS: {exc.reason or exc}")
            except OSError:
                self.close()

    # -- readiness ----------------------------------------------------------------------
    def on_ready(self, mask: int) -> None:
        try:
            if not self._connected:
                error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    self.close()  # not listening (yet): the dialer retries quietly
                    return
                self._connected = True
                self._begin()
            if self._tls_pending:
                self._tls_step()
            if not self._tls_pending and not self.closed:
                if mask & READ:
                    self._read()
                self._flush()
        except ssl.SSLError as exc:
            self.fail(f"TLS: {exc.reason or exc}")
        except (Refused, wire.FrameError, codec.Refused, ValueError) as exc:
            self.fail(str(exc))
        except OSError as exc:
            log.debug("raft link %s %s: %s", self.side.value, self.who, exc)
            self.close()

    def _begin(self) -> None:
        dialled = self.side is Handshake.DIALLED
        settings = self.link.settings
        ctx = settings.client_tls if dialled else settings.server_tls
        if ctx is None:
            self._after_tls()
            return
        self.link.forget_socket(self)
        host = self.who.rpartition(":")[0].strip("[]") if dialled else None
        self._tls = ctx.wrap_socket(
            self.sock, server_side=not dialled, do_handshake_on_connect=False, server_hostname=host
        )
        self.sock = self._tls
        self.link.watch_socket(self, READ | WRITE)
        self._tls_pending = True
        self._tls_step()

    def _tls_step(self) -> None:
        assert self._tls is not None
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._want(READ)
            return
        except ssl.SSLWantWriteError:
            self._want(READ | WRITE)
            return
        self._tls_pending = False
        self._after_tls()

    def _after_tls(self) -> None:
        if self.side is Handshake.ACCEPTED:
            me, nonce = self.link.settings.self_address, os.urandom(wire.NONCE_BYTES)
            self._hello = wire.Hello(codec.VERSIONS, codec.CODECS, nonce, me)
            self._write(wire.encode_frame(Kind.HELLO, 0, wire.json_payload(self._hello.to_wire())))

    def _read(self) -> None:
        for _ in range(READS_PER_EVENT):
            try:
                data = self.sock.recv(65536)
            except _AGAIN:
                return
            if not data:
                self.close()
                return
            for frame in self._decoder.feed(data):
                self._frame(frame)
                if self.closed:
                    return

    # -- frames -------------------------------------------------------------------------
    def _frame(self, frame: Frame) -> None:
        if self.side is Handshake.ACCEPTED:
            if self.open:
                self._data(frame)
            else:
                self._authenticate(frame)
        elif frame.kind == Kind.CLOSE:
            raise Refused(f"refused: {wire.reason(frame)}")
        elif self.open:
            raise Refused(f"unexpected frame kind {frame.kind} from the accepting side")
        elif self._hello is None:
            self._on_hello(frame)
        else:
            self._on_welcome(frame)

    def _expect(self, frame: Frame, kind: Kind) -> object:
        if frame.kind != kind:
            raise Refused(f"expected {kind.name}, got frame kind {frame.kind}")
        return wire.json_value(frame.payload)

    def _on_hello(self, frame: Frame) -> None:
        hello = wire.Hello.from_wire(self._expect(frame, Kind.HELLO))
        if hello.node != self.who:
            raise Refused(f"the node at {self.who} says it is {hello.node}")
        version = wire.choose_version(codec.VERSIONS, hello.versions)
        chosen = wire.choose_codec(codec.CODECS, hello.codecs)
        key, me = self.link.settings.key, self.link.settings.self_address
        unsigned = wire.Auth(version, chosen, os.urandom(wire.NONCE_BYTES), me, b"")
        self._auth = dataclasses.replace(unsigned, proof=wire.proof(key, "client", hello, unsigned))
        self._hello = hello
        self._write(wire.encode_frame(Kind.AUTH, 0, wire.json_payload(self._auth.to_wire())))

    def _on_welcome(self, frame: Frame) -> None:
        welcome = self._expect(frame, Kind.WELCOME)
        hello, auth, key = self._hello, self._auth, self.link.settings.key
        assert hello is not None and auth is not None
        given = bytes.fromhex(str(welcome.get("proof", ""))) if isinstance(welcome, dict) else b""
        if not wire.verify(key, "server", hello, auth, given):
            raise Refused(f"{self.who} could not prove the cluster secret")
        self._session = codec.session_key(key, hello, auth)
        self._version = auth.version
        self._opened()

    def _authenticate(self, frame: Frame) -> None:
        hello = self._hello
        if hello is None:
            raise Refused("a frame before the TLS handshake completed")
        auth = wire.Auth.from_wire(self._expect(frame, Kind.AUTH))
        if auth.version not in codec.VERSIONS or auth.codec not in codec.CODECS:
            raise Refused(f"unsupported version {auth.version} or codec {auth.codec!r}")
        key = self.link.settings.key
        if not wire.verify(key, "client", hello, auth, auth.proof):
            raise Refused("authentication failed: the cluster secrets differ")
        proof = wire.proof(key, "server", hello, auth)
        self._write(wire.encode_frame(Kind.WELCOME, 0, wire.json_payload({"proof": proof.hex()})))
        self._session = codec.session_key(key, hello, auth)
        self._decoder.max_payload = codec.MAX_FRAME
        self.peer = auth.node
        self._opened()

    def _opened(self) -> None:
        self.open = True
        self.link.opened(self)

    def _data(self, frame: Frame) -> None:
        if frame.kind != Kind.REQUEST:
            raise Refused(f"unexpected frame kind {frame.kind}")
        data = codec.unseal(self._session, self._seq, frame.payload)
        self._seq += 1
        self.link.received(self, codec.loads(data))

    # -- writing ------------------------------------------------------------------------
    def send_frames(self, frames: list[bytes]) -> None:
        """Seal and queue `frames` (an open dialled connection), then write what fits."""
        for data in frames:
            payload = codec.seal(self._session, self._seq, data)
            self._seq += 1
            self._wbuf += wire.encode_frame(Kind.REQUEST, 0, payload, version=self._version)
        self._flush()
        if len(self._wbuf) > self.link.settings.max_buffered:
            log.warning("raft link to %s: peer not reading; connection dropped", self.who)
            self.close()

    def _write(self, frame: bytes) -> None:
        self._wbuf += frame
        self._flush()

    def _flush(self) -> None:
        while self._wbuf and not self.closed:
            try:
                sent = self.sock.send(self._wbuf)
            except _AGAIN:
                break
            except OSError as exc:
                log.debug("raft link %s %s: %s", self.side.value, self.who, exc)
                self.close()
                return
            del self._wbuf[:sent]
        self._want(READ | WRITE if self._wbuf else READ)

    def _want(self, events: int) -> None:
        if events != self._events and not self.closed:
            self._events = events
            self.link.interest(self, events)

    # -- ending -------------------------------------------------------------------------
    def fail(self, reason: str) -> None:
        """End the connection for `reason`, counted and logged once per address."""
        if self.closed:
            return
        if self.side is Handshake.DIALLED:
            self.link.refuse(self.who, reason, dialled=True)
        else:
            who = f"{self.peer} ({self.source})" if self.peer else self.source
            self.link.refuse(who, reason)
            if not self.open and not self._tls_pending:
                close = wire.encode_frame(Kind.CLOSE, 0, wire.json_payload({"reason": reason}))
                try:
                    self.sock.send(close)  # best effort: it may not fit
                except (OSError, ValueError):
                    pass
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.link.closed(self)
        try:
            self.sock.close()
        except OSError:
            pass
