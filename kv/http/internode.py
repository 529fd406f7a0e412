"""The internode protocol's door on the API port: `GET /v1/internal/stream` with
`Connection: Upgrade` and `Upgrade: kv-internode` is answered `101 Switching Protocols`, and
from then on the connection belongs to kv/wire_server.py (docs/internode.md).

This is the pattern aiohttp's own WebSocketResponse uses: prepare a 101 response, then
`request.protocol.set_parser(...)` routes every later byte of the connection to our frame
decoder instead of the HTTP parser; keep-alive is off, so the connection closes when the
handler returns (the link ended). The HTTP server limits stop applying to it at the
upgrade (kv/http/limits.py `upgraded`). Node shutdown ends every link first (`on_shutdown`), so
the runner's graceful shutdown does not wait on them.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from kv import wire
from kv.errors import InvalidRequest
from kv.http import limits
from kv.wire_client import keepalive
from kv.wire_server import InternodeServer

INTERNODE: web.AppKey[InternodeServer] = web.AppKey("internode", InternodeServer)


class _Carrier:
    """kv/wire_server.py `Carrier` over an upgraded aiohttp connection."""

    def __init__(self, response: web.StreamResponse, transport: asyncio.Transport, peer: str):
        self._response = response
        self._transport = transport
        self._outgoing: list[bytes] = []  # `send_soon`'s frames of this loop turn
        self.peer = peer

    async def send(self, data: bytes) -> None:
        if self._transport.is_closing():  # also: the handler may have ended the response
            raise ConnectionResetError("internode connection closed")
        self._flush()  # keeps the frames in the order they were sent
        await self._response.write(data)  # aiohttp drains past its high-water mark

    def send_soon(self, data: bytes) -> None:
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outgoing.append(data)

    def _flush(self) -> None:
        """One write for the replies of a loop turn (a `send` per frame was ~7 % of a
        node's samples under eventual puts, docs/benchmarks.md)."""
        frames, self._outgoing = self._outgoing, []
        if frames and not self._transport.is_closing():
            self._transport.write(b"".join(frames))

    def abort(self, last: bytes) -> None:
        self._flush()
        if not self._transport.is_closing():
            self._transport.write(last)
            self._transport.close()


def _check_upgrade(request: web.Request) -> None:
    connection = {t.strip().lower() for t in request.headers.get("Connection", "").split(",")}
    if "upgrade" not in connection or request.headers.get("Upgrade", "").lower() != wire.UPGRADE:
        raise InvalidRequest(
            "upgrade", f"this route speaks only 'Connection: Upgrade', 'Upgrade: {wire.UPGRADE}'"
        )


async def stream(request: web.Request) -> web.StreamResponse:
    _check_upgrade(request)
    response = web.StreamResponse(
        status=101, headers={"Connection": "Upgrade", "Upgrade": wire.UPGRADE}
    )
    response.force_close()
    await response.prepare(request)
    transport = request.transport
    # duck-typed: uvloop's transports are not asyncio.Transport subclasses
    if transport is None or transport.is_closing():
        return response
    keepalive(transport.get_extra_info("socket"))
    limits.upgraded(request)  # no HTTP connection slot or timer from now on (kv/http/limits.py)
    peer = request.remote or "?"
    link = request.app[INTERNODE].accept(_Carrier(response, transport, peer))
    request.protocol.set_parser(link)  # type: ignore[arg-type]
    request.protocol.keep_alive(False)  # as WebSocketResponse: no keep-alive timer
    await link.run()
    return response


def add_routes(app: web.Application, server: InternodeServer) -> None:
    app[INTERNODE] = server
    app.router.add_get(wire.PATH, stream)

    async def end_links(_: web.Application) -> None:
        await server.close()

    app.on_shutdown.append(end_links)
