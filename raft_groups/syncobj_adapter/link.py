"""The Raft port's connections (docs/raft.md "The Raft port"): non-blocking sockets the
driver thread polls, outside the lock every group needs.

`RaftLink.poll` waits on a selector for the port (accepts), the connections (handshakes,
frames) and a wake socket, does the I/O, checks every frame (link_codec.py) and leaves
what arrived in `events` — ("connected" | "disconnected" | "message", peer address,
messages) — for the mux to hand to the groups under the lock (`RaftMux.deliver`). The
driver calls `poll` without holding its lock (driver.py `cycle`), so no byte from the
network is read, buffered or unpickled under it, and no thread hop lies between a frame's
arrival and its group: a measured first version on a thread of its own (asyncio) cost
linearizable reads half their throughput in thread handoffs (docs/benchmarks.md).

One connection per direction of a pair: a node sends on the connection it dialled and
receives on those it accepted. An unauthenticated peer can make the link buffer at most
4 KiB per connection for at most `handshake_timeout`, on at most `AcceptLimits`
connections at a time. `send` and `poll` run on the driver thread; `add_peer`,
`drop_peer`, `call_soon` and `wake` on any thread.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kv import wire
from kv.wire_client import keepalive
from raft_groups.syncobj_adapter import link_codec as codec
from raft_groups.syncobj_adapter.link_conn import Conn, Handshake

log = logging.getLogger(__name__)
Event = tuple[str, str, Any]
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


@dataclass(frozen=True)
class LinkSettings:
    self_address: str  # this node's Raft id: what its HELLO says, what peers dial
    bind_address: str
    key: bytes  # kv/keys.py raft_key(secret)
    server_tls: ssl.SSLContext | None = None  # mutual TLS (kv/tls.py) or none
    client_tls: ssl.SSLContext | None = None
    handshake_timeout: float = 5.0  # from connect (or accept) to an open connection
    retry: float = 0.5  # between dials to one peer; between bind attempts
    max_buffered: int = 64 << 20  # unsent bytes to one peer before its connection is dropped
    limits: codec.AcceptLimits = dataclasses.field(default_factory=codec.AcceptLimits)


@dataclass
class _Dialer:
    address: str
    conn: Conn | None = None
    next_at: float = 0.0


class RaftLink:
    def __init__(self, settings: LinkSettings, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.events: collections.deque[Event] = collections.deque()
        self.refused = 0  # connections closed at accept or in the handshake, and bad frames
        self.bound = threading.Event()  # set once the Raft port listens
        self.clock = clock
        self.first = wire.FirstTimes()  # a refusal is logged once per address
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        for end in (self._wake_r, self._wake_w):
            end.setblocking(False)
        self._sel.register(self._wake_r, READ, None)
        self._ops: collections.deque[Callable[[], None]] = collections.deque()
        self._dialers: dict[str, _Dialer] = {}
        self._out: dict[str, Conn] = {}  # open connections this node dialled, by address
        self._conns: set[Conn] = set()
        self._listener: socket.socket | None = None
        self._bind_at = 0.0

    # -- any thread ---------------------------------------------------------------------
    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the polling thread at the start of its next poll."""
        self._ops.append(fn)
        self.wake()

    def add_peer(self, address: str) -> None:
        self.call_soon(lambda: self._add(address))

    def drop_peer(self, address: str) -> None:
        self.call_soon(lambda: self._drop(address))

    def wake(self) -> None:
        """End the current `poll` early."""
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (a wake is pending anyway) or closed
            pass

    # -- the polling thread -------------------------------------------------------------
    def send(self, batches: dict[str, list[bytes]]) -> None:
        """Write each peer's frames on its connection, in order (dropped if it is down)."""
        for address, frames in batches.items():
            conn = self._out.get(address)
            if conn is not None:
                conn.send_frames(frames)

    def poll(self, timeout: float) -> None:
        """Wait up to `timeout` for socket events or `wake`, and handle them."""
        while self._ops:
            self._ops.popleft()()
        now = self.clock()
        self._maintain(now)
        for key, mask in self._sel.select(min(timeout, self._next_duty(now))):
            if key.data is None:
                self._drain_wake()
            elif key.data is self:
                self._accept()
            else:
                key.data.on_ready(mask)

    def _next_duty(self, now: float) -> float:
        """How long until a dial, a bind retry or a handshake deadline is due."""
        due = [d.next_at for d in self._dialers.values() if d.conn is None]
        due += [c.deadline for c in self._conns if not c.open]
        if self._listener is None:
            due.append(self._bind_at)
        return max(min(due, default=now + 3600.0) - now, 0.0)

    def _maintain(self, now: float) -> None:
        if self._listener is None and now >= self._bind_at:
            self._bind(now)
        for conn in [c for c in self._conns if not c.open and now >= c.deadline]:
            conn.fail(f"handshake not completed within {self.settings.handshake_timeout}s")
        for dialer in self._dialers.values():
            if dialer.conn is None and now >= dialer.next_at:
                dialer.next_at = now + self.settings.retry
                self._dial(dialer, now)

    def _bind(self, now: float) -> None:
        host, _, port = self.settings.bind_address.rpartition(":")
        try:
            listener = socket.create_server((host.strip("[]"), int(port)), backlog=128)
        except OSError as exc:
            self._bind_at = now + self.settings.retry
            if self.first.first("bind"):
                log.warning("raft port %s not bound yet: %s", self.settings.bind_address, exc)
            return
        listener.setblocking(False)
        self._sel.register(listener, READ, self)
        self._listener = listener
        self.bound.set()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: try again at the next event
                log.warning("raft port: accept failed: %s", exc)
                return
            source = str(peer[0])
            if not self.settings.limits.admit(source):
                self.refused += 1  # a flood: not logged per connection
                sock.close()
                continue
            self._start(sock, Handshake.ACCEPTED, source, source)

    def _dial(self, dialer: _Dialer, now: float) -> None:
        host, _, port = dialer.address.rpartition(":")
        try:
            info = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)[0]
            sock = socket.socket(info[0], info[1], info[2])
        except OSError as exc:
            log.debug("raft link to %s: %s", dialer.address, exc)
            return
        sock.setblocking(False)
        code = sock.connect_ex(info[4])
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            return
        dialer.conn = self._start(sock, Handshake.DIALLED, dialer.address, dialer.address)

    def _start(self, sock: socket.socket, side: Handshake, who: str, source: str) -> Conn:
        sock.setblocking(False)  # an accepted socket is blocking whatever the listener is
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        keepalive(sock)
        conn = Conn(self, sock, side, who, source, self.clock() + self.settings.handshake_timeout)
        self._conns.add(conn)
        self._sel.register(sock, READ | WRITE, conn)
        conn.start()
        return conn

    # -- callbacks from Conn ------------------------------------------------------------
    def interest(self, conn: Conn, events: int) -> None:
        self._sel.modify(conn.sock, events, conn)

    def forget_socket(self, conn: Conn) -> None:
        """Before `conn` wraps its socket in TLS (the plain one is detached by it)."""
        self._sel.unregister(conn.sock)

    def watch_socket(self, conn: Conn, events: int) -> None:
        self._sel.register(conn.sock, events, conn)

    def opened(self, conn: Conn) -> None:
        if conn.side is Handshake.DIALLED:
            self.first.forget(conn.who)
            self._out[conn.who] = conn
            self.events.append(("connected", conn.who, None))
        else:
            self.first.forget(conn.source)
            self.settings.limits.release(conn.source)

    def received(self, conn: Conn, messages: list[codec.Message]) -> None:
        self.events.append(("message", conn.peer, messages))

    def closed(self, conn: Conn) -> None:
        self._conns.discard(conn)
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        if conn.side is Handshake.ACCEPTED:
            if not conn.open:
                self.settings.limits.release(conn.source)
            return
        dialer = self._dialers.get(conn.who)
        if dialer is not None and dialer.conn is conn:
            dialer.conn = None
            dialer.next_at = max(dialer.next_at, self.clock() + self.settings.retry)
        if self._out.get(conn.who) is conn:
            del self._out[conn.who]
            self.events.append(("disconnected", conn.who, None))

    def refuse(self, who: str, reason: str, *, dialled: bool = False) -> None:
        """Count a refused connection or frame; log it once per address."""
        self.refused += 1
        if self.first.first(who):
            way = "to" if dialled else "from"
            log.warning("raft port: connection %s %s: %s (logged once)", way, who, reason)

    def _add(self, address: str) -> None:
        self._dialers.setdefault(address, _Dialer(address))

    def _drop(self, address: str) -> None:
        dialer = self._dialers.pop(address, None)
        conn = self._out.pop(address, None) or (dialer.conn if dialer else None)
        if conn is not None:
            conn.close()  # no "disconnected" event: the mux forgot the peer first

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def close(self) -> None:
        for conn in list(self._conns):
            conn.close()
        if self._listener is not None:
            self._listener.close()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()
