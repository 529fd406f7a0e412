"""Per-call CPU of the candidate carriers of the internode protocol (docs/internode.md,
"Carrier"): one process, loopback, a ~300-byte JSON request echoed back.

    ops/carrier_bench [--calls 20000] [--in-flight 1,16] [--carriers raw,upgrade,ws,http]

- raw      asyncio protocols on a port of their own, kv/wire.py frames
- upgrade  an aiohttp app answering `Upgrade: kv-internode` with 101, then the same frames
           through `set_parser` (what kv/http/internode.py does)
- ws       aiohttp WebSocket, one binary message per frame
- http     one aiohttp POST per call (what internode calls were before)

Client and server share the process, so "cpu" is both sides of a call together, JSON
encoding and decoding included. A stand-alone model of each carrier, not the node's code:
it needs no cluster and compares carriers only. Run A/B pairs alternately on a quiet
machine; a loaded one swings by 2x (docs/notes on performance).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import ClientSession, web

from kv import wire
from kv.wire import FrameDecoder, Kind

PAYLOAD = {
    "ref": {"partition": 3, "uid": 1, "key": "some-key-0001"},
    "versions": [{"value": {"n": 1, "s": "x" * 120}, "clock": {"n1": 3}, "dot": ["n1", 3]}],
}
Call = Callable[[bytes], Awaitable[bytes]]


def echo(payload: bytes) -> bytes:
    return json.dumps(json.loads(payload), separators=(",", ":")).encode()


class FrameServer:
    """The server half: a task per REQUEST frame, the reply written when done."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]]) -> None:
        self.send, self.decoder = send, FrameDecoder(1, wire.MAX_PAYLOAD)
        self.tasks: set[asyncio.Task[None]] = set()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        for frame in self.decoder.feed(data):
            task = asyncio.ensure_future(self.serve(frame))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return False, b""

    def feed_eof(self) -> None:
        pass

    async def serve(self, frame: wire.Frame) -> None:
        await self.send(wire.encode_frame(Kind.REPLY, frame.request_id, echo(frame.payload)))


class FrameClient(asyncio.Protocol):
    def __init__(self, upgrade: bool) -> None:
        self.decoder, self.next_id = FrameDecoder(1, wire.MAX_PAYLOAD), 0
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.head: bytearray | None = bytearray() if upgrade else None
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.head is None:
            self.ready.set_result(None)
        else:
            up = f"Connection: Upgrade\r\nUpgrade: {wire.UPGRADE}\r\n\r\n"
            transport.write(f"GET {wire.PATH} HTTP/1.1\r\nHost: x\r\n{up}".encode())

    def data_received(self, data: bytes) -> None:
        if self.head is not None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            data, self.head = bytes(self.head[end + 4 :]), None
            self.ready.set_result(None)
        for frame in self.decoder.feed(data):
            self.pending.pop(frame.request_id).set_result(frame.payload)

    async def call(self, payload: bytes) -> bytes:
        self.next_id += 1
        fut = self.pending[self.next_id] = asyncio.get_running_loop().create_future()
        self.transport.write(wire.encode_frame(Kind.REQUEST, self.next_id, payload, "fetch"))
        result: bytes = await fut
        return result


def bound() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


async def serve_app(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = bound()
    await web.SockSite(runner, sock).start()
    return runner, sock.getsockname()[1]


async def raw(run: Callable[[Call], Awaitable[float]]) -> float:
    loop = asyncio.get_running_loop()

    class Server(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            async def send(data: bytes) -> None:
                transport.write(data)

            self.frames = FrameServer(send)

        def data_received(self, data: bytes) -> None:
            self.frames.feed_data(data)

    server = await loop.create_server(Server, sock=bound())
    port = server.sockets[0].getsockname()[1]
    _, client = await loop.create_connection(lambda: FrameClient(False), "127.0.0.1", port)
    await client.ready
    try:
        return await run(client.call)
    finally:
        client.transport.close()
        server.close()


async def upgrade(run: Callable[[Call], Awaitable[float]]) -> float:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=101, headers={"Upgrade": wire.UPGRADE})
        response.headers["Connection"] = "Upgrade"
        await response.prepare(request)
        done = asyncio.get_running_loop().create_future()
        frames = FrameServer(response.write)
        frames.feed_eof = lambda: None if done.done() else done.set_result(None)  # type: ignore[method-assign]
        request.protocol.set_parser(frames)  # type: ignore[arg-type]
        request.protocol.keep_alive(False)
        await done
        return response

    app = web.Application()
    app.router.add_get(wire.PATH, handler)
    runner, port = await serve_app(app)
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: FrameClient(True), "127.0.0.1", port)
    await client.ready
    try:
        return await run(client.call)
    finally:
        client.transport.close()
        await runner.cleanup()


async def ws(run: Callable[[Call], Awaitable[float]]) -> float:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        frames = FrameServer(sock.send_bytes)
        async for message in sock:
            frames.feed_data(message.data)
        return sock

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner, port = await serve_app(app)
    session = ClientSession()
    conn = await session.ws_connect(f"http://127.0.0.1:{port}/ws")
    pending: dict[int, asyncio.Future[bytes]] = {}
    decoder, ids = FrameDecoder(1, wire.MAX_PAYLOAD), [0]

    async def reader() -> None:
        async for message in conn:
            for frame in decoder.feed(message.data):
                pending.pop(frame.request_id).set_result(frame.payload)

    async def call(payload: bytes) -> bytes:
        ids[0] += 1
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        pending[ids[0]] = fut
        await conn.send_bytes(wire.encode_frame(Kind.REQUEST, ids[0], payload, "fetch"))
        return await fut

    task = asyncio.ensure_future(reader())
    try:
        return await run(call)
    finally:
        await conn.close()
        task.cancel()
        await session.close()
        await runner.cleanup()


async def http(run: Callable[[Call], Awaitable[float]]) -> float:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=echo(await request.read()), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/internal/rpc/{op}", handler)
    runner, port = await serve_app(app)
    session = ClientSession()
    url = f"http://127.0.0.1:{port}/v1/internal/rpc/fetch"

    async def call(payload: bytes) -> bytes:
        async with session.post(url, data=payload) as reply:
            body: bytes = await reply.read()
            return body

    try:
        return await run(call)
    finally:
        await session.close()
        await runner.cleanup()


def driver(calls: int, in_flight: int) -> Callable[[Call], Awaitable[float]]:
    async def run(call: Call) -> float:
        async def worker(n: int) -> None:
            for _ in range(n):
                json.loads(await call(json.dumps(PAYLOAD, separators=(",", ":")).encode()))

        await worker(200)  # warm up
        started = time.process_time()
        await asyncio.gather(*(worker(calls // in_flight) for _ in range(in_flight)))
        return (time.process_time() - started) / calls * 1e6

    return run


CARRIERS = {"raw": raw, "upgrade": upgrade, "ws": ws, "http": http}


async def main(args: argparse.Namespace) -> None:
    for in_flight in (int(n) for n in args.in_flight.split(",")):
        for name in args.carriers.split(","):
            calls = args.calls // 4 if name == "http" else args.calls  # 4x slower
            cpu = await CARRIERS[name](driver(calls, in_flight))
            print(f"{name:8} in flight {in_flight:3}  {cpu:7.1f} us CPU per call")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--in-flight", default="1,16")
    parser.add_argument("--carriers", default=",".join(CARRIERS))
    asyncio.run(main(parser.parse_args()))
