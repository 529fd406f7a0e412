"""The simulation tier's network: a virtual-time event loop, seeded links, and SimTransport.

SimTransport is the in-project twin of `kv.transport.WireTransport` (DESIGN.md §7, §8.3):
both pass tests/sim/test_transport_contract.py. Scenarios run the real DynamoCoordinator
over it (tests/sim/test_scenarios.py); docs/simulation.md explains how to add one.

Time. `VirtualTimeLoop` is an asyncio selector loop whose `time()` is a number that moves
only when the loop would otherwise block: it then jumps straight to the next timer (trio's
autojump MockClock). `asyncio.sleep`, `wait_for` and every coordinator deadline are
therefore instant in real time and exact in virtual time. The loop is single-threaded and
socket-free by contract: if every task waits and no timer is scheduled it raises
`SimDeadlock` instead of blocking forever.

Messages. `SimTransport.call` is one request and one reply, each a message on a directed
link. For every message the network decides, in this order:

1. the two ends are in different partition groups  → lost (`partition(..., lost_as=)`);
2. the link is cut one way                          → lost (`cut(src, dst, lost_as=)`);
3. the link's `LinkRule` (or the default rule): lost with probability `drop`, otherwise
   delivered after `delay + uniform(0, jitter)` seconds of virtual time.

What the caller sees (the Transport contract in kv/transport.py):

    request lost, lost_as="unreachable"  → PeerUnreachable at once; never delivered
                                           (connection refused: the node is known not to
                                           have the request)
    request lost, lost_as="timeout"      → PeerTimeout after the caller's timeout; never
                                           delivered (a black hole: the caller can't tell)
    reply lost (any rule on dst → src)   → PeerTimeout after the caller's timeout, and the
                                           operation WAS applied at dst — the interesting
                                           "unknown outcome" case
    reply later than the timeout         → PeerTimeout; applied
    otherwise                            → the handler's reply, or its KvError rebuilt
                                           as it would be from the wire

A lost reply always surfaces as a timeout, whatever its rule's `lost_as`, since the caller
cannot tell it apart from a slow peer. Calls a node makes to itself skip the network
entirely, as WireTransport's do.

Determinism: each directed link draws from its own `random.Random` seeded from
`(seed, src, dst)`, so a link's fate sequence does not depend on traffic elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import selectors
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from dynamo_mode.replica import DynamoReplica
from dynamo_mode.replica_server import serve
from kv.errors import InvalidRequest, KvError, PeerTimeout, PeerUnreachable, from_wire
from kv.http.errors import status_for
from kv.internode import Operation, Req, Resp
from kv.memory import MemoryEngine

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[str, Any], Awaitable[Any]]  # wire level: kv.internode.OpTable.dispatch
LostAs = Literal["unreachable", "timeout"]
_LOST_AS: frozenset[str] = frozenset({"unreachable", "timeout"})


# ---------------------------------------------------------------------- virtual time
class SimDeadlock(RuntimeError):
    """Every task is waiting and no timer is scheduled: the simulation can never progress."""


class _JumpingSelector(selectors.BaseSelector):
    """Polls the real selector without blocking; where the loop would block for `timeout`
    seconds, advances the virtual clock by exactly that much instead."""

    def __init__(self, jump: Callable[[float], None]) -> None:
        self._inner = selectors.DefaultSelector()
        self._jump = jump

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._inner.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise SimDeadlock("every task is waiting and no timer is scheduled")
        self._jump(timeout)
        return []

    def close(self) -> None:
        self._inner.close()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on a virtual clock that starts at 0.0 and autojumps to the next timer.

    Invariant: the clock never moves while a callback runs, so code between two awaits
    takes zero virtual time, and a timer set for t fires with `time() == t` (up to float
    rounding of `now + delay`).
    """

    def __init__(self) -> None:
        self._virtual_now = 0.0
        super().__init__(selector=_JumpingSelector(self._jump))

    def time(self) -> float:
        return self._virtual_now

    def _jump(self, seconds: float) -> None:
        self._virtual_now += seconds


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on a fresh VirtualTimeLoop."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)


# ---------------------------------------------------------------------- link rules
@dataclass(frozen=True)
class LinkRule:
    """How messages on one directed link fare; see the module docstring for the order."""

    drop: float = 0.0  # probability that a message is lost
    delay: float = 0.001  # fixed one-way latency, seconds of virtual time
    jitter: float = 0.0  # plus uniform(0, jitter)
    lost_as: LostAs = "timeout"  # how a lost *request* shows up to its caller

    def __post_init__(self) -> None:
        if not 0.0 <= self.drop <= 1.0:
            raise ValueError(f"LinkRule.drop must be within [0, 1], got {self.drop!r}")
        if self.delay < 0 or self.jitter < 0:
            raise ValueError(
                f"LinkRule.delay and jitter must be >= 0, got {self.delay!r}, {self.jitter!r}"
            )
        _check_lost_as(self.lost_as)


@dataclass(frozen=True)
class _Lost:
    lost_as: LostAs
    why: str


@dataclass(frozen=True)
class TraceEvent:
    at: float
    src: str
    dst: str
    op: str
    what: str  # refused | black-holed | delivered | replied | reply lost | unknown node

    def __str__(self) -> str:
        return f"t={self.at:9.4f}  {self.src}->{self.dst}  {self.op:<10} {self.what}"


@dataclass(frozen=True)
class _Outcome:
    reply: dict[str, Any] | None = None
    error: tuple[int, dict[str, Any]] | None = None  # (HTTP status, wire body)

    def unwrap(self) -> dict[str, Any]:
        if self.error is not None:
            raise from_wire(*self.error)
        assert self.reply is not None
        return self.reply


@dataclass
class SimNode:
    """One simulated node: its replica over a MemoryEngine and the handler that serves it."""

    node_id: str
    replica: DynamoReplica
    handler: Handler


@dataclass
class SimNetwork:
    """Nodes, seeded per-link randomness, partitions, cuts and link rules.

    Must be used from inside a running loop (normally a VirtualTimeLoop via `run_virtual`).
    """

    seed: int
    base: LinkRule = field(default_factory=LinkRule)  # the healthy network; heal() returns here
    trace: list[TraceEvent] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._nodes: dict[str, SimNode] = {}
        self._default = self.base
        self._links: dict[tuple[str, str], LinkRule] = {}
        self._cuts: dict[tuple[str, str], LostAs] = {}
        self._groups: dict[str, int] = {}
        self._partition_lost_as: LostAs = "timeout"
        self._rngs: dict[tuple[str, str], random.Random] = {}
        self._serving: set[asyncio.Task[None]] = set()

    # -- membership -------------------------------------------------------------------
    def add_node(self, node_id: str, handler: Handler | None = None) -> SimNode:
        """A node with an empty replica; `handler` defaults to its replica's operations
        (dynamo_mode/replica_server.py)."""
        if node_id in self._nodes:
            raise ValueError(f"node {node_id!r} already exists")
        replica = DynamoReplica(MemoryEngine(), node_id)
        node = SimNode(node_id, replica, handler or serve(replica).dispatch)
        self._nodes[node_id] = node
        return node

    def node(self, node_id: str) -> SimNode:
        return self._nodes[node_id]

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(self._nodes)

    def rng(self, name: str) -> random.Random:
        """A named random stream derived from the seed (for workloads and nemeses)."""
        return random.Random(f"{self.seed}/{name}")

    # -- faults -----------------------------------------------------------------------
    def set_default(self, rule: LinkRule) -> None:
        """The rule for every link without its own."""
        self._default = rule

    def set_link(self, src: str, dst: str, rule: LinkRule) -> None:
        self._links[(src, dst)] = rule

    def partition(self, *groups: Iterable[str], lost_as: LostAs = "timeout") -> None:
        """Split the nodes into groups that cannot exchange messages. Groups must be
        disjoint and cover every node, so nothing is left ambiguous."""
        _check_lost_as(lost_as)
        sets = [frozenset(g) for g in groups]
        listed = [n for g in sets for n in g]
        if len(listed) != len(set(listed)) or set(listed) != set(self._nodes):
            raise ValueError(
                f"partition groups must be disjoint and cover {sorted(self._nodes)}, "
                f"got {[sorted(g) for g in sets]}"
            )
        self._groups = {n: i for i, g in enumerate(sets) for n in g}
        self._partition_lost_as = lost_as

    def cut(self, src: str, dst: str, lost_as: LostAs = "timeout") -> None:
        """Lose every message from `src` to `dst`; `dst` to `src` still flows."""
        _check_lost_as(lost_as)
        self._cuts[(src, dst)] = lost_as

    def heal(self) -> None:
        """Back to the healthy network: no partition, no cut, every link on `base`."""
        self._groups = {}
        self._cuts = {}
        self._links = {}
        self._default = self.base

    # -- the clock ----------------------------------------------------------------------
    @staticmethod
    def now() -> float:
        return asyncio.get_running_loop().time()

    @staticmethod
    async def advance(seconds: float) -> None:
        """Let `seconds` of virtual time pass: every timer due by then fires."""
        await asyncio.sleep(seconds)

    def format_trace(self, last: int = 40) -> str:
        return "\n".join(str(e) for e in self.trace[-last:])

    # -- delivery -----------------------------------------------------------------------
    async def send(
        self, src: str, dst: str, op: str, payload: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        """One request from `src` to `dst` and its reply, under the current faults."""
        if dst not in self._nodes:
            self._record(src, dst, op, "unknown node")
            raise PeerUnreachable(f"node {dst!r} is not a member")
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[_Outcome] = loop.create_future()
        leg = self._leg(src, dst)
        if isinstance(leg, _Lost) and leg.lost_as == "unreachable":
            self._record(src, dst, op, "refused", f"({leg.why})")
            raise PeerUnreachable(f"{dst} refused {op} from {src} ({leg.why}; sim)")
        if isinstance(leg, _Lost):
            self._record(src, dst, op, "black-holed", f"({leg.why})")
        else:
            loop.call_later(leg, self._arrive, src, dst, op, _wire(payload), reply)
        try:
            outcome = await asyncio.wait_for(reply, timeout)
        except TimeoutError:
            raise PeerTimeout(f"{dst} did not answer {op} within {timeout:.3f}s (sim)") from None
        return outcome.unwrap()

    def _arrive(
        self, src: str, dst: str, op: str, payload: dict[str, Any], reply: asyncio.Future[_Outcome]
    ) -> None:
        self._record(src, dst, op, "delivered")
        task = asyncio.get_running_loop().create_task(self._serve(src, dst, op, payload, reply))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _serve(
        self, src: str, dst: str, op: str, payload: dict[str, Any], reply: asyncio.Future[_Outcome]
    ) -> None:
        """The server side runs to completion whether or not the caller still waits."""
        outcome = await _handle(self._nodes[dst].handler, op, payload)
        leg = self._leg(dst, src)
        if isinstance(leg, _Lost):
            self._record(dst, src, op, "reply lost", f"({leg.why})")
            return
        self._record(dst, src, op, "replied", f"in {leg:.4f}s")
        asyncio.get_running_loop().call_later(leg, _resolve, reply, outcome)

    def _leg(self, src: str, dst: str) -> float | _Lost:
        """The fate of one message on src → dst: its delay, or how it was lost."""
        if self._groups and self._groups.get(src) != self._groups.get(dst):
            return _Lost(self._partition_lost_as, "partition")
        if (src, dst) in self._cuts:
            return _Lost(self._cuts[(src, dst)], "cut")
        rule = self._links.get((src, dst), self._default)
        rng = self._link_rng(src, dst)
        if rule.drop and rng.random() < rule.drop:
            return _Lost(rule.lost_as, "dropped")
        return rule.delay + (rng.uniform(0.0, rule.jitter) if rule.jitter else 0.0)

    def _link_rng(self, src: str, dst: str) -> random.Random:
        rng = self._rngs.get((src, dst))
        if rng is None:
            rng = self._rngs[(src, dst)] = random.Random(f"{self.seed}/{src}->{dst}")
        return rng

    def _record(self, src: str, dst: str, op: str, kind: str, detail: str = "") -> None:
        self.stats[kind] += 1
        self.trace.append(TraceEvent(self.now(), src, dst, op, f"{kind} {detail}".rstrip()))


class SimTransport:
    """`kv.transport.Transport` over a SimNetwork, as seen from node `self_id`."""

    def __init__(self, net: SimNetwork, self_id: str) -> None:
        self._net = net
        self._self_id = self_id

    async def call(self, node: str, op: Operation[Req, Resp], request: Req, timeout: float) -> Resp:
        payload = _wire(request.to_wire())
        if node == self._self_id:  # like WireTransport: no network, no timeout
            return op.reply(_wire(await self._net.node(node).handler(op.name, payload)))
        return op.reply(await self._net.send(self._self_id, node, op.name, payload, timeout))


# ---------------------------------------------------------------------- helpers
async def _handle(handler: Handler, op: str, payload: dict[str, Any]) -> _Outcome:
    """What kv/http/app.py's internal_rpc and errors_middleware would put on the wire."""
    try:
        return _Outcome(reply=_wire(await handler(op, payload)))
    except KvError as exc:
        return _error(exc)
    except ValueError as exc:
        return _error(InvalidRequest("body", str(exc)))
    except Exception:
        log.exception("sim handler failed on %s", op)
        return _Outcome(error=(500, {"error": {"code": "internal", "message": "internal error"}}))


def _error(exc: KvError) -> _Outcome:
    return _Outcome(error=(status_for(exc), _wire(exc.to_wire())))


def _resolve(reply: asyncio.Future[_Outcome], outcome: _Outcome) -> None:
    if not reply.done():  # the caller may have timed out or been cancelled
        reply.set_result(outcome)


def _wire(obj: dict[str, Any]) -> dict[str, Any]:
    """A JSON round trip, as over HTTP: no shared objects, JSON types only."""
    result: dict[str, Any] = json.loads(json.dumps(obj, separators=(",", ":")))
    return result


def _check_lost_as(lost_as: str) -> None:
    if lost_as not in _LOST_AS:
        raise ValueError(f"lost_as must be one of {sorted(_LOST_AS)}, got {lost_as!r}")
