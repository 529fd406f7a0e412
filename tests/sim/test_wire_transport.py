"""What only the real internode protocol has (docs/internode.md): the handshake, framing
caps and versions, many calls on one connection, connection loss and reconnects.

Runs on tests/sim/test_transport_contract.py's WireHarness (aiohttp apps on 127.0.0.1,
OS-chosen ports). `RawPeer` speaks the protocol by hand — upgrade, handshake and frames
from kv/wire.py — to send what a correct peer never would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from dynamo_mode.messages import COORDINATE, FETCH, KeyRequest
from kv import wire
from kv.errors import PeerTimeout, PeerUnreachable, TooLarge
from kv.internode import Operation
from kv.keys import internode_key
from kv.wire import Frame, Kind
from tests.sim.test_transport_contract import (
    HANG,
    REF,
    SECRET,
    TIMEOUT,
    Raw,
    WireHarness,
    coordinate,
    values,
    wire_harness,
)

Body = Callable[[WireHarness], Awaitable[None]]


def run(body: Body) -> None:
    async def main() -> None:
        async with wire_harness() as harness:
            await body(harness)

    asyncio.run(main())


# ---------------------------------------------------------------------- a peer by hand
class RawPeer:
    """A client connection written by hand: upgrade, then frames as the test says."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @staticmethod
    async def upgrade(address: str) -> RawPeer:
        host, _, port = address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"GET {wire.PATH} HTTP/1.1\r\nHost: {address}\r\nConnection: Upgrade\r\n"
            f"Upgrade: {wire.UPGRADE}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        return RawPeer(reader, writer)

    @staticmethod
    async def authenticated(address: str, secret: str = SECRET, version: int = 1) -> RawPeer:
        peer = await RawPeer.upgrade(address)
        hello = wire.Hello.from_wire(wire.json_value((await peer.frame()).payload))
        unsigned = wire.Auth(version, "json", os.urandom(32), "raw", b"")
        auth = dataclasses.replace(
            unsigned, proof=wire.proof(internode_key(secret), "client", hello, unsigned)
        )
        peer.send(Kind.AUTH, wire.json_payload(auth.to_wire()))
        return peer

    def send(self, kind: Kind, payload: bytes, name: str = "", rid: int = 0, v: int = 1) -> None:
        self.writer.write(wire.encode_frame(kind, rid, payload, name, v))

    async def frame(self) -> Frame:
        async with asyncio.timeout(TIMEOUT):
            head = await self.reader.readexactly(wire.HEADER.size)
            _, kind, name_len, rid, length = wire.HEADER.unpack(head)
            name = (await self.reader.readexactly(name_len)).decode()
            return Frame(kind, rid, name, await self.reader.readexactly(length))

    async def closed_with(self) -> str:
        """The reason of the CLOSE frame that ends the connection (which then ends)."""
        frame = await self.frame()
        assert frame.kind == Kind.CLOSE, frame
        async with asyncio.timeout(TIMEOUT):
            assert await self.reader.read() == b""  # and the server closed it
        self.writer.close()
        return wire.reason(frame)


# ---------------------------------------------------------------------- authentication
def test_a_wrong_secret_is_unreachable_at_once_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body(h: WireHarness) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(2):  # two transports: two connections from the same address
            t = h.transport("a", secret="another-secret-0123456789abcdef")
            with pytest.raises(PeerUnreachable, match="authentication failed"):
                await t.call("b", COORDINATE, coordinate(1), TIMEOUT)
        assert loop.time() - started < TIMEOUT / 2  # refused, not left to time out
        assert values(h.replica("b")) == []

    with caplog.at_level(logging.WARNING):
        run(body)
    server_logs = [r for r in caplog.records if "refused: authentication failed" in r.getMessage()]
    assert len(server_logs) == 1, server_logs
    assert SECRET not in caplog.text


def test_a_server_that_cannot_prove_the_secret_is_refused() -> None:
    """Mutual authentication: a listener that accepts our proof but cannot make its own (a
    node of another cluster, an impostor) gets no request."""

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        hello = wire.Hello((1,), ("json",), os.urandom(32), "b")
        writer.write(wire.encode_frame(Kind.HELLO, 0, wire.json_payload(hello.to_wire())))
        await reader.readexactly(wire.HEADER.size)  # AUTH: accepted, whatever it says
        welcome = wire.json_payload({"proof": "00" * 32})
        writer.write(wire.encode_frame(Kind.WELCOME, 0, welcome))
        assert await reader.read() is not None  # until the client hangs up

    async def body(h: WireHarness) -> None:
        server = await asyncio.start_server(impostor, "127.0.0.1", 0)
        async with server:
            h.addresses["b"] = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
            with pytest.raises(PeerUnreachable, match="could not prove the cluster secret"):
                await h.transport("a").call("b", FETCH, KeyRequest(REF), TIMEOUT)

    run(body)


def test_an_unauthenticated_connection_is_closed_at_its_deadline() -> None:
    async def body(h: WireHarness) -> None:
        await h.unplug("b")
        await h.start("b", handshake_timeout=0.2)
        peer = await RawPeer.upgrade(h.addresses["b"])
        assert (await peer.frame()).kind == Kind.HELLO
        assert "handshake not completed within 0.2s" in await peer.closed_with()

    run(body)


def test_an_upgrade_after_shutdown_began_is_closed_and_the_stop_does_not_wait() -> None:
    """An upgrade that reaches the handler after the node's shutdown ended every link gets
    a link closed at once; before, it lived on and the HTTP runner's graceful shutdown
    waited for it (a node stop over 30 s in the integration tier)."""

    async def body(h: WireHarness) -> None:
        await h.servers["b"].close()  # what the app's on_shutdown runs
        peer = await RawPeer.upgrade(h.addresses["b"])
        assert await peer.closed_with() == "node shutting down"
        async with asyncio.timeout(TIMEOUT):
            await h.unplug("b")

    run(body)


def test_a_peer_that_connects_to_us_ends_our_dial_backoff_toward_it() -> None:
    """A restarted node's first connection to us (gossip, a hint) proves it is up: calls to
    it go through at once instead of failing fast for the rest of the backoff."""

    async def body(h: WireHarness) -> None:
        frozen = h.transport("a", clock=lambda: 0.0)  # the backoff never runs out by itself
        h.servers["a"].on_authenticated = frozen.peer_up
        await h.unplug("b")
        with pytest.raises(PeerUnreachable):
            await frozen.call("b", FETCH, KeyRequest(REF), TIMEOUT)
        await h.start("b")
        with pytest.raises(PeerUnreachable, match="next dial in"):
            await frozen.call("b", FETCH, KeyRequest(REF), TIMEOUT)
        await h.transport("b").call("a", FETCH, KeyRequest(REF), TIMEOUT)
        assert (await frozen.call("b", FETCH, KeyRequest(REF), TIMEOUT)).versions == ()

    run(body)


def test_a_listener_that_does_not_upgrade_is_unreachable() -> None:
    """A node of the previous release (no stream route) answers the upgrade with a 404."""

    async def body(h: WireHarness) -> None:
        runner = web.AppRunner(web.Application())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            h.addresses["b"] = f"127.0.0.1:{runner.addresses[0][1]}"
            with pytest.raises(PeerUnreachable, match="answered 'HTTP/1.1 404 Not Found'"):
                await h.transport("a").call("b", FETCH, KeyRequest(REF), TIMEOUT)
        finally:
            await runner.cleanup()

    run(body)


# ---------------------------------------------------------------------- versions and caps
def test_no_common_version_is_refused_with_a_clear_error() -> None:
    async def body(h: WireHarness) -> None:
        await h.unplug("b")
        await h.start("b", versions=(2,))  # a release that no longer speaks v1
        with pytest.raises(PeerUnreachable, match=r"no common internode protocol version"):
            await h.transport("a").call("b", FETCH, KeyRequest(REF), TIMEOUT)
        peer = await RawPeer.authenticated(h.addresses["b"], version=1)
        assert "protocol version 1 is not one of [2]" in await peer.closed_with()

    run(body)


def test_a_frame_of_another_version_ends_the_connection() -> None:
    async def body(h: WireHarness) -> None:
        peer = await RawPeer.authenticated(h.addresses["b"])
        assert (await peer.frame()).kind == Kind.WELCOME
        peer.send(Kind.REQUEST, b"{}", "fetch", rid=1, v=7)
        assert "frame of protocol version 7; this connection speaks 1" in await peer.closed_with()

    run(body)


@pytest.mark.parametrize("authenticated", [False, True])
def test_an_oversized_frame_is_refused_from_its_header(authenticated: bool) -> None:
    """The cap is checked before the payload is read: the header alone ends the connection
    (4 KiB before authentication, wire.MAX_PAYLOAD after)."""

    async def body(h: WireHarness) -> None:
        if authenticated:
            peer = await RawPeer.authenticated(h.addresses["b"])
            assert (await peer.frame()).kind == Kind.WELCOME
            limit = wire.MAX_PAYLOAD
        else:
            peer = await RawPeer.upgrade(h.addresses["b"])
            assert (await peer.frame()).kind == Kind.HELLO
            limit = wire.HANDSHAKE_MAX_PAYLOAD
        peer.writer.write(wire.HEADER.pack(1, Kind.REQUEST, 5, 1, limit + 1) + b"fetch")
        assert f"the limit is {limit}" in await peer.closed_with()

    run(body)


def test_a_request_over_the_cap_is_too_large_and_never_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wire, "MAX_PAYLOAD", 1000)

    async def body(h: WireHarness) -> None:
        t = h.transport("a")
        with pytest.raises(TooLarge) as info:
            await t.call("b", COORDINATE, coordinate("x" * 2000), TIMEOUT)
        assert info.value.details["limit"] == 1000
        assert values(h.replica("b")) == []
        await t.call("b", COORDINATE, coordinate("small"), TIMEOUT)  # the connection lives on
        assert values(h.replica("b")) == ["small"]
        h.replica("b").coordinate(REF, {}, "y" * 2000, False, 10)  # written there directly
        with pytest.raises(TooLarge, match="fetch reply"):  # the peer's error, not a broken link
            await t.call("b", FETCH, KeyRequest(REF), TIMEOUT)
        other = KeyRequest(dataclasses.replace(REF, key="other"))
        assert (await t.call("b", FETCH, other, TIMEOUT)).versions == ()

    run(body)


# ---------------------------------------------------------------------- multiplexing
GATE = Operation("test_gate", Raw, Raw)


def test_many_calls_share_one_connection_and_replies_return_out_of_order() -> None:
    """Replies leave as their handlers finish, here in the reverse order of the requests,
    and each reaches its own caller (request ids)."""
    count = 40

    async def body(h: WireHarness) -> None:
        gates: dict[int, asyncio.Future[None]] = {}
        entered = asyncio.Event()
        finished: list[int] = []

        async def gate(request: Raw) -> Raw:
            n = request.payload["n"]
            gates[n] = asyncio.get_running_loop().create_future()
            if len(gates) == count:
                entered.set()
            await gates[n]
            return Raw({"n": n})

        async def one(n: int) -> None:
            reply = await t.call("b", GATE, Raw({"n": n}), TIMEOUT)
            assert reply.payload == {"n": n}
            finished.append(n)

        h.nodes["b"].table.register(GATE, gate)
        t = h.transport("a")
        calls = asyncio.gather(*(one(n) for n in range(count)))
        async with asyncio.timeout(TIMEOUT):
            await entered.wait()  # every request is in its handler at once
        for n in reversed(range(count)):
            gates[n].set_result(None)
        await calls
        assert finished == list(reversed(range(count)))
        assert h.servers["b"].accepted == 1

    run(body)


def test_calls_beyond_the_in_flight_bound_wait_and_are_never_sent() -> None:
    async def body(h: WireHarness) -> None:
        t = h.transport("a", max_in_flight=2)
        hung = [asyncio.ensure_future(t.call("b", HANG, Raw({}), TIMEOUT)) for _ in range(2)]
        await h.nodes["b"].wait_hanging(2)
        with pytest.raises(PeerUnreachable, match="every slot busy"):
            await t.call("b", COORDINATE, coordinate(1), 0.1)
        assert values(h.replica("b")) == []
        h.nodes["b"].release.set()
        await asyncio.gather(*hung)
        await t.call("b", COORDINATE, coordinate(2), TIMEOUT)  # slots are free again

    run(body)


# ---------------------------------------------------------------------- loss and reconnect
def test_a_connection_lost_mid_call_fails_the_calls_in_flight_as_peer_timeout() -> None:
    async def body(h: WireHarness) -> None:
        t = h.transport("a")
        loop = asyncio.get_running_loop()
        hung = [asyncio.ensure_future(t.call("b", HANG, Raw({}), TIMEOUT)) for _ in range(3)]
        await h.nodes["b"].wait_hanging(3)
        started = loop.time()
        await h.unplug("b")
        for call in hung:
            with pytest.raises(PeerTimeout, match="may have been performed"):
                await call
        assert loop.time() - started < TIMEOUT / 2  # at the loss, not at the deadline

    run(body)


def test_a_reply_finished_after_its_caller_left_is_dropped_quietly() -> None:
    """Regression: the reply of a handler that outlived its connection was written to the
    ended HTTP response and failed its task ("Cannot call write() after write_eof()").
    kv/http/internode.py `_Carrier.send_soon` drops a reply once its connection is
    closing."""
    failures: list[dict[str, Any]] = []

    async def body(h: WireHarness) -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: failures.append(ctx))
        t = h.transport("a")
        call = asyncio.ensure_future(t.call("b", HANG, Raw({}), TIMEOUT))
        await h.nodes["b"].wait_hanging(1)
        await t.close()  # the caller goes away with the call in flight
        with pytest.raises(PeerTimeout):
            await call
        h.nodes["b"].release.set()
        for _ in range(20):  # let the handler finish and its reply task run
            await asyncio.sleep(0)
        gc.collect()  # an unretrieved task exception is reported when the task is freed

    run(body)
    assert failures == []


def test_calls_reconnect_after_the_peer_restarts() -> None:
    async def body(h: WireHarness) -> None:
        t = h.transport("a")
        await t.call("b", COORDINATE, coordinate(1), TIMEOUT)
        await h.unplug("b")
        await h.start("b")  # same port, a new server
        await t.call("b", COORDINATE, coordinate(2), TIMEOUT)
        assert h.servers["b"].accepted == 1  # the new server's first connection

    run(body)


def test_a_failed_dial_backs_off_then_reconnects() -> None:
    async def body(h: WireHarness) -> None:
        now = [0.0]
        t = h.transport("a", clock=lambda: now[0])
        await h.unplug("b")
        with pytest.raises(PeerUnreachable, match="Connect|refused"):
            await t.call("b", FETCH, KeyRequest(REF), TIMEOUT)
        await h.start("b")
        with pytest.raises(PeerUnreachable, match="next dial in"):  # fails fast meanwhile
            await t.call("b", FETCH, KeyRequest(REF), TIMEOUT)
        assert h.servers["b"].accepted == 0
        now[0] += 1.0  # past the first backoff
        await t.call("b", FETCH, KeyRequest(REF), TIMEOUT)
        assert h.servers["b"].accepted == 1

    run(body)


def test_a_call_by_member_id_checks_who_answers() -> None:
    async def body(h: WireHarness) -> None:
        h.addresses["b"] = h.addresses["c"]  # stale address: c now listens where b was
        with pytest.raises(PeerUnreachable, match="is node 'c', not 'b'"):
            await h.transport("a").call("b", COORDINATE, coordinate(1), TIMEOUT)
        assert values(h.replica("c")) == []

    run(body)
