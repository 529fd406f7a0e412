"""The node's HTTP server limits on aiohttp's connections (kv/server_limits.py; docs/security.md
"Server limits"): how many connections, how long a request's head and body may take, how
long an idle keep-alive connection stays.

- **Connections.** A connection over `max_connections` (or over `max_per_source` from one
  address) is closed as soon as it is accepted, before a byte of it is read; the
  connections already held are untouched.
- **Head.** A request's head (request line and headers) must be complete within
  `header_timeout_s` of its first byte — for a connection's first request, of the accept —
  else the connection is closed (slowloris). Checked by a timer per connection, not by a
  task, so a slow client costs a timer and its buffered head (aiohttp caps a head at
  `max_headers` fields of `max_field_size` bytes).
- **Body.** A handler reads the body through `read_body` within `body_timeout_s` of the
  end of the head, else 408 `request_timeout`; aiohttp then discards what still comes for
  at most its `lingering_time` and closes the connection. A body is capped at the app's
  `client_max_size` (kv/http/parse.py MAX_BODY_BYTES).
- **Keep-alive.** aiohttp closes a connection that has been idle `keepalive_timeout_s`
  after its last response (its keep-alive timer).

An internode link (kv/http/internode.py) leaves all of this when its upgrade is answered
(`upgraded`): it no longer holds a connection slot, so clients cannot crowd out peers, and
no HTTP timer runs on it — the internode protocol closes an unauthenticated link after its
handshake deadline (kv/wire_server.py) and an authenticated one lives as long as its peer.

aiohttp has no hook for these, so the listener's protocol is a subclass of its
`RequestHandler`, made by a subclass of its low-level `Server` (`LimitedRunner`); a
middleware (`middleware`) tells the connection when a request's head has been read and
its handler has returned.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from kv.errors import RequestTimeout
from kv.server_limits import ConnectionGate, ServerLimits

log = logging.getLogger(__name__)

LIMITS: web.AppKey[ServerLimits] = web.AppKey("limits", ServerLimits)


class LimitedHandler(RequestHandler):
    """One HTTP connection: a slot of the gate while it lasts, and the head deadline."""

    def __init__(self, manager: Any, *, gate: ConnectionGate, header_timeout: float, **kw: Any):
        super().__init__(manager, **kw)
        self._gate = gate
        self._header_timeout = header_timeout
        self._source: str | None = None  # not None while this connection holds a slot
        self._awaiting_head = True  # no request is being handled: the next head is due
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) and peer else "local"
        if not self._gate.admit(source):
            log.debug("refused a connection from %s: connection limit reached", source)
            self.force_close()
            return
        self._source = source
        self._start_head_timer()

    def data_received(self, data: bytes) -> None:
        if data and self._awaiting_head and self._head_timer is None:
            self._start_head_timer()  # the first byte of the next request on this connection
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_timer()
        self._release()
        super().connection_lost(exc)

    def head_read(self) -> None:
        """A request's head is complete: its handler runs."""
        self._awaiting_head = False
        self._stop_head_timer()

    def handled(self) -> None:
        """The handler returned: whatever arrives next is a new request's head."""
        self._awaiting_head = True

    def upgraded(self) -> None:
        """The connection is an internode link now (module docstring)."""
        self._awaiting_head = False
        self._stop_head_timer()
        self._release()

    def _release(self) -> None:
        if self._source is not None:
            self._gate.release(self._source)
            self._source = None

    def _start_head_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(self._header_timeout, self._head_late)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self._awaiting_head and self.transport is not None:
            self._gate.timed_out += 1
            log.debug(
                "closed a connection from %s: no request head within %.1fs",
                self._source,
                self._header_timeout,
            )
            self.force_close()


class _LimitedServer(web.Server):
    """aiohttp's low-level server, with the same settings, making `LimitedHandler`s."""

    def __init__(self, base: web.Server, limits: ServerLimits) -> None:
        self._base_kwargs: dict[str, Any] = dict(base._kwargs)
        super().__init__(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=base._loop,
            **self._base_kwargs,
        )
        self.gate = ConnectionGate(limits.max_connections, limits.max_per_source)
        self._header_timeout = limits.header_timeout_s

    def __call__(self) -> RequestHandler:
        return LimitedHandler(
            self,
            loop=self._loop,
            gate=self.gate,
            header_timeout=self._header_timeout,
            **self._base_kwargs,
        )


class LimitedRunner(web.AppRunner):
    """`web.AppRunner` whose listener applies `limits` (and aiohttp's keep-alive timer)."""

    def __init__(self, app: web.Application, limits: ServerLimits, **kw: Any) -> None:
        super().__init__(app, keepalive_timeout=limits.keepalive_timeout_s, **kw)
        self._limits = limits

    async def _make_server(self) -> web.Server:
        return _LimitedServer(await super()._make_server(), self._limits)

    def gate(self) -> ConnectionGate | None:
        server = self.server
        return server.gate if isinstance(server, _LimitedServer) else None


@web.middleware
async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Tells the connection (when it is a `LimitedHandler`) that a head was read and when its
    handler returned."""
    protocol = request.protocol
    if not isinstance(protocol, LimitedHandler):  # an app served without the limits (tests)
        return await handler(request)  # type: ignore[no-any-return]
    protocol.head_read()
    try:
        return await handler(request)  # type: ignore[no-any-return]
    finally:
        protocol.handled()


def upgraded(request: web.Request) -> None:
    """The request's connection has been upgraded to an internode link."""
    if isinstance(request.protocol, LimitedHandler):
        request.protocol.upgraded()


async def read_body(request: web.Request) -> bytes:
    """The request's body, within the app's `body_timeout_s` (else 408 `request_timeout`)."""
    limits = request.app.get(LIMITS)
    if limits is None:
        return await request.read()
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {limits.body_timeout_s}s"
        ) from None
