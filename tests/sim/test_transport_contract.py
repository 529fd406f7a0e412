"""One contract suite for every Transport (STYLE rule 4; trio `testing/_check_streams.py`):
SimTransport on a virtual-time loop, and WireTransport against real in-process aiohttp
servers (kv.http.app with its `/v1/internal/stream` upgrade to the framed protocol,
kv/wire_server.py) on 127.0.0.1. Behaviour only the real protocol has (handshake, framing,
multiplexing, reconnects) is in tests/sim/test_wire_transport.py, on the same harness.

The contract is the one kv/transport.py states: a typed reply, or `PeerUnreachable`
(never delivered), `PeerTimeout` (maybe performed), or the peer's `KvError` rebuilt with its
type and details; calls to this node itself skip the network. The operations are the
eventual mode's (dynamo_mode/messages.py) served by dynamo_mode/replica_server.py, plus a
test-only operation that never answers.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, cast

import pytest
from aiohttp import web

from dynamo_mode.messages import COORDINATE, FETCH, CoordinateRequest, KeyRequest, Versions
from dynamo_mode.replica import DynamoReplica, KeyRef
from dynamo_mode.replica_server import serve
from kv.errors import InvalidRequest, PeerTimeout, PeerUnreachable, SiblingLimit
from kv.http.app import make_app
from kv.internode import Operation
from kv.keys import internode_key
from kv.memory import MemoryEngine
from kv.service import Service
from kv.transport import Transport, WireTransport
from kv.wire_server import Carrier, InternodeServer, ServerLink
from tests.sim.sim_transport import SimNetwork, SimTransport, run_virtual

NODES = ("a", "b", "c")
SECRET = "contract-secret-0123456789abcdef"
REF = KeyRef(partition=3, uid=1, key="k")
TIMEOUT = 5.0
HANG_TIMEOUT = 0.2  # real seconds for WireTransport; virtual for SimTransport


@dataclass(frozen=True)
class Raw:
    """A payload sent as it is: lets a test put any wire form on an operation's name."""

    payload: Any

    def to_wire(self) -> Any:
        return self.payload


HANG = Operation("test_hang", Raw, Raw)  # a test-only op whose handler never answers


class Harness(Protocol):
    """Three nodes a, b, c, each serving `handle_internal` over its own MemoryEngine replica."""

    def transport(self, node: str) -> Transport: ...

    def replica(self, node: str) -> DynamoReplica: ...

    async def unplug(self, node: str) -> None:
        """Make `node` refuse every connection from the network (itself included)."""


class Node:
    def __init__(self, node_id: str) -> None:
        self.replica = DynamoReplica(MemoryEngine(), node_id)
        self.release = asyncio.Event()  # lets hung handlers end at teardown
        self.hanging = 0  # hung handlers entered so far
        self.entered = asyncio.Condition()
        self.table = serve(self.replica)
        self.table.register(HANG, self.hang)
        self.handle = self.table.dispatch

    async def hang(self, request: Raw) -> Raw:
        async with self.entered:
            self.hanging += 1
            self.entered.notify_all()
        await self.release.wait()
        return Raw({})

    async def wait_hanging(self, count: int) -> None:
        async with asyncio.timeout(TIMEOUT), self.entered:
            await self.entered.wait_for(lambda: self.hanging >= count)


# ---------------------------------------------------------------------- SimTransport
class SimHarness:
    def __init__(self) -> None:
        self.net = SimNetwork(seed=0)
        self.nodes = {n: Node(n) for n in NODES}
        for n, node in self.nodes.items():
            self.net.add_node(n, node.handle)

    def transport(self, node: str) -> Transport:
        return SimTransport(self.net, node)

    def replica(self, node: str) -> DynamoReplica:
        return self.nodes[node].replica

    async def unplug(self, node: str) -> None:
        for other in NODES:
            self.net.cut(other, node, lost_as="unreachable")


@asynccontextmanager
async def sim_harness() -> AsyncIterator[Harness]:
    yield SimHarness()


# ---------------------------------------------------------------------- WireTransport
class CountingServer(InternodeServer):
    accepted = 0  # connections handed to this server

    def accept(self, carrier: Carrier) -> ServerLink:
        self.accepted += 1
        return super().accept(carrier)


class WireHarness:
    """Each node an aiohttp app (kv.http.app) on its own OS-chosen port of 127.0.0.1."""

    def __init__(self) -> None:
        self.nodes = {n: Node(n) for n in NODES}
        self.addresses: dict[str, str] = {}
        self.runners: dict[str, web.AppRunner] = {}
        self.servers: dict[str, CountingServer] = {}
        self.transports: list[WireTransport] = []

    async def start(self, node: str, secret: str = SECRET, **server: Any) -> None:
        """Serve `node` (again, on its old port if it had one)."""
        table = self.nodes[node].table
        self.servers[node] = CountingServer(node, internode_key(secret), table, **server)
        # Only the internode route is exercised; it never touches the Service.
        app = make_app(cast(Service, None), self.servers[node], TIMEOUT)
        runner = web.AppRunner(app)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        port = int(self.addresses.get(node, ":0").rpartition(":")[2])
        sock.bind(("127.0.0.1", port))  # DESIGN.md §7: the OS picks the port
        await web.SockSite(runner, sock).start()
        self.runners[node] = runner
        self.addresses[node] = f"127.0.0.1:{sock.getsockname()[1]}"

    def transport(self, node: str, secret: str = SECRET, **options: Any) -> WireTransport:
        key = internode_key(secret)
        made = WireTransport(node, self.addresses.get, key, self.nodes[node].table, **options)
        self.transports.append(made)
        return made

    def replica(self, node: str) -> DynamoReplica:
        return self.nodes[node].replica

    async def unplug(self, node: str) -> None:
        """Stop serving `node`: its connections end and its port refuses new ones."""
        await self.runners.pop(node).cleanup()

    async def stop(self) -> None:
        for node in self.nodes.values():
            node.release.set()
        for t in self.transports:
            await t.close()
        for runner in self.runners.values():
            await runner.cleanup()


@asynccontextmanager
async def wire_harness() -> AsyncIterator[WireHarness]:
    harness = WireHarness()
    try:
        for node in NODES:
            await harness.start(node)
        yield harness
    finally:
        await harness.stop()


# ---------------------------------------------------------------------- the suite
Body = Callable[[Harness], Awaitable[None]]
Factory = Callable[[], AbstractAsyncContextManager[Harness]]
KINDS: dict[str, tuple[Factory, Callable[[Any], Any]]] = {
    "sim": (sim_harness, run_virtual),
    "wire": (wire_harness, asyncio.run),
}


@pytest.fixture(params=sorted(KINDS))
def run(request: pytest.FixtureRequest) -> Callable[[Body], None]:
    factory, runner = KINDS[request.param]

    def go(body: Body) -> None:
        async def main() -> None:
            async with factory() as harness:
                await body(harness)

        runner(main())

    return go


def coordinate(value: Any, max_siblings: int = 8) -> CoordinateRequest:
    """A blind write (empty context) minted at the called replica."""
    return CoordinateRequest(REF, {}, (), value, False, max_siblings)


def values(replica: DynamoReplica) -> list[Any]:
    return [v.value for v in replica.fetch(REF)]


def test_call_returns_the_reply_and_is_performed_at_the_peer(run: Callable[[Body], None]) -> None:
    async def body(h: Harness) -> None:
        reply = await h.transport("a").call("b", COORDINATE, coordinate({"n": 1}), TIMEOUT)
        assert reply.version.dot == ("b", 1)
        assert reply.version.value == {"n": 1}
        fetched = await h.transport("c").call("b", FETCH, KeyRequest(REF), TIMEOUT)
        assert [v.value for v in fetched.versions] == [{"n": 1}]
        assert values(h.replica("b")) == [{"n": 1}]
        assert values(h.replica("a")) == values(h.replica("c")) == []

    run(body)


def test_unknown_node_is_unreachable_and_nothing_is_performed(
    run: Callable[[Body], None],
) -> None:
    async def body(h: Harness) -> None:
        with pytest.raises(PeerUnreachable):
            await h.transport("a").call("zz", COORDINATE, coordinate(1), TIMEOUT)
        assert all(values(h.replica(n)) == [] for n in NODES)

    run(body)


def test_a_refusing_node_is_unreachable_but_self_calls_skip_the_network(
    run: Callable[[Body], None],
) -> None:
    async def body(h: Harness) -> None:
        await h.unplug("a")
        with pytest.raises(PeerUnreachable):
            await h.transport("b").call("a", COORDINATE, coordinate(1), TIMEOUT)
        assert values(h.replica("a")) == []
        reply = await h.transport("a").call("a", COORDINATE, coordinate(2), TIMEOUT)
        assert reply.version.dot == ("a", 1)
        assert values(h.replica("a")) == [2]

    run(body)


def test_a_kv_error_comes_back_with_its_type_and_details(run: Callable[[Body], None]) -> None:
    async def body(h: Harness) -> None:
        t = h.transport("a")
        await t.call("b", COORDINATE, coordinate("first", max_siblings=1), TIMEOUT)
        with pytest.raises(SiblingLimit) as info:
            await t.call("b", COORDINATE, coordinate("second", max_siblings=1), TIMEOUT)
        assert info.value.code == "sibling_limit"
        assert info.value.details == {"count": 2, "limit": 1}
        assert values(h.replica("b")) == ["first"]  # refused without writing

    run(body)


@pytest.mark.parametrize(
    ("op", "payload", "field"),
    [
        ("fetch", {}, "body"),
        ("fetch", {"ref": {"partition": -1, "uid": 1, "key": "k"}}, "body"),
        ("fetch", [], "body"),
        ("nope", {}, "op"),
    ],
)
def test_a_payload_that_does_not_decode_comes_back_as_invalid_request(
    run: Callable[[Body], None], op: str, payload: Any, field: str
) -> None:
    async def body(h: Harness) -> None:
        raw = Operation(op, Raw, Versions.from_wire)
        with pytest.raises(InvalidRequest) as info:
            await h.transport("a").call("b", raw, Raw(payload), TIMEOUT)
        assert info.value.details["field"] == field

    run(body)


def test_no_reply_within_the_timeout_is_peer_timeout(run: Callable[[Body], None]) -> None:
    async def body(h: Harness) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PeerTimeout):
            await h.transport("a").call("b", HANG, Raw({}), HANG_TIMEOUT)
        assert HANG_TIMEOUT <= loop.time() - started + 0.01  # waited the timeout out

    run(body)
