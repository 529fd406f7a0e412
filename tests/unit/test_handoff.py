"""Hinted handoff shell and sloppy-quorum coordinator over in-memory twins (Dynamo §4.6).

Replicas are DynamoReplica over MemoryEngine; the network is `Net`, an in-memory Transport
that serves the target replica's operations (dynamo_mode/replica_server.py), with nodes
that can be down (connect refused: PeerUnreachable) or lose the reply (PeerTimeout after
the op ran). Time is a manual clock: no test here sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from dynamo_mode.coordinator import DynamoCoordinator, Placement
from dynamo_mode.handoff import Handoff
from dynamo_mode.messages import HINT, HintRequest
from dynamo_mode.replica import DynamoReplica, KeyRef
from dynamo_mode.replica_server import serve
from dynamo_mode.siblings import Version, join_context, make_version
from kv.errors import InvalidRequest, PeerTimeout, PeerUnreachable, QuorumUnavailable, TooLarge
from kv.internode import Operation, Req, Resp
from kv.memory import MemoryEngine
from kv.routing import _primaries

NODES = ("a", "b", "c", "d", "e")
PRIMARIES, FALLBACKS = ("a", "b", "c"), ("d", "e")
REF = KeyRef(partition=7, uid=1, key="k")
V1 = make_version(("a", 1), {}, "v1")
V2 = make_version(("a", 2), join_context([V1]), "v2")
W1 = make_version(("b", 1), {}, "concurrent")


class Net:
    """The in-project Transport twin for these tests."""

    def __init__(self) -> None:
        self.engines = {n: MemoryEngine() for n in NODES}
        self.replicas = {n: DynamoReplica(self.engines[n], n) for n in NODES}
        self.down: set[str] = set()
        self.lose_reply: set[str] = set()  # the op runs, the reply is lost
        self.on_call: Callable[[str, str], None] = lambda node, op: None
        self.calls: list[tuple[str, str]] = []

    async def call(self, node: str, op: Operation[Req, Resp], request: Req, timeout: float) -> Resp:
        self.calls.append((node, op.name))
        if node in self.down:
            raise PeerUnreachable(f"{node}: connection refused")
        self.on_call(node, op.name)
        reply = await serve(self.replicas[node]).call_local(op, request)
        if node in self.lose_reply:
            raise PeerTimeout(f"{node}: no reply")
        return reply

    def restart(self, node: str) -> None:
        """A new replica over the same engine: what a process restart keeps."""
        self.replicas[node] = DynamoReplica(self.engines[node], node)


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, fut))
        await fut

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [f for t, f in self._sleepers if t <= self.now]
        self._sleepers = [(t, f) for t, f in self._sleepers if t > self.now]
        for fut in due:
            fut.set_result(None)


def handoff(
    net: Net, node: str = "d", is_alive: Callable[[str], bool] | None = None, **kw: Any
) -> Handoff:
    alive = is_alive or (lambda n: n not in net.down)
    return Handoff(net.replicas[node], net, alive, clock=ManualClock(), **kw)


async def hint(net: Net, holder: str, owner: str, ref: KeyRef, *versions: Version) -> None:
    await net.call(holder, HINT, HintRequest(owner, ref, versions), 1)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- storage -------------------------------------------------------------------------------


def test_a_hint_is_not_replica_data() -> None:
    async def scenario() -> None:
        net = Net()
        empty_root = net.replicas["e"].tree(REF.partition).root()
        await hint(net, "d", "c", REF, V1)
        d = net.replicas["d"]
        assert d.fetch(REF) == ()  # never served by a read, never in a Merkle tree
        assert d.tree(REF.partition).root() == empty_root
        assert d.hint_counts() == {"c": 1}
        assert d.hints_for("c", 10) == [(REF, (V1,))]

    run(scenario())


def test_hints_merge_like_replicas() -> None:
    async def scenario() -> None:
        net = Net()
        for versions in ((V1,), (W1,), (V2,), (V1,)):
            await hint(net, "d", "c", REF, *versions)
        assert net.replicas["d"].hints_for("c", 10) == [(REF, (V2, W1))]
        assert net.replicas["d"].hint_counts() == {"c": 1}

    run(scenario())


def test_hints_survive_a_restart() -> None:
    async def scenario() -> None:
        net = Net()
        await hint(net, "d", "c", REF, V1)
        await hint(net, "d", "b", REF, V1)
        net.restart("d")
        assert net.replicas["d"].hint_counts() == {"b": 1, "c": 1}
        report = await handoff(net).deliver("c")
        assert (report.delivered, report.dropped) == (1, 1)
        assert net.replicas["c"].fetch(REF) == (V1,)
        assert net.replicas["d"].hint_counts() == {"b": 1}

    run(scenario())


def test_a_hint_for_this_node_itself_is_stored_as_replica_data() -> None:
    async def scenario() -> None:
        net = Net()
        await hint(net, "c", "c", REF, V1)
        assert net.replicas["c"].fetch(REF) == (V1,)
        assert net.replicas["c"].hint_counts() == {}

    run(scenario())


# -- delivery and drop rules ----------------------------------------------------------------------


def test_kept_while_the_owner_is_down_delivered_and_dropped_when_it_is_back() -> None:
    async def scenario() -> None:
        net = Net()
        net.down.add("c")
        await hint(net, "d", "c", REF, V1)
        h = handoff(net)
        assert await h.deliver_once() == []  # known down: not even tried
        assert h.pending() == {"c": 1}
        net.down.discard("c")
        [report] = await h.deliver_once()
        assert (report.owner, report.delivered, report.dropped, report.failure) == ("c", 1, 1, None)
        assert net.replicas["c"].fetch(REF) == (V1,)
        assert h.pending() == {} and h.delivered == 1

    run(scenario())


def test_a_hint_is_delivered_with_fsync_so_its_drop_never_loses_a_durable_copy() -> None:
    async def scenario() -> None:
        net = Net()
        await hint(net, "d", "c", REF, V1)
        sent: list[Any] = []
        call = net.call

        async def recording(node: str, op: Any, request: Any, timeout: float) -> Any:
            sent.append(request)
            return await call(node, op, request, timeout)

        net.call = recording  # type: ignore[method-assign]
        [report] = await handoff(net).deliver_once()
        assert report.dropped == 1
        assert [r.durability for r in sent] == ["fsync"]

    run(scenario())


def test_kept_when_the_delivery_fails_or_its_ack_is_lost() -> None:
    async def scenario() -> None:
        net = Net()
        await hint(net, "d", "c", REF, V1)
        h = handoff(net, is_alive=lambda n: True)  # the detector has not noticed yet
        net.down.add("c")
        [report] = await h.deliver_once()
        assert report.failure is not None and "PeerUnreachable" in report.failure
        net.down.discard("c")
        net.lose_reply.add("c")
        [report] = await h.deliver_once()
        assert (report.delivered, report.dropped) == (0, 0) and "PeerTimeout" in str(report.failure)
        assert h.pending() == {"c": 1}
        net.lose_reply.clear()
        [report] = await h.deliver_once()
        assert (report.delivered, report.dropped) == (1, 1)
        assert h.pending() == {}

    run(scenario())


def test_a_hint_that_grew_during_its_delivery_is_kept_and_delivered_again() -> None:
    async def scenario() -> None:
        net = Net()
        await hint(net, "d", "c", REF, V1)

        def concurrent_put(node: str, op: str) -> None:
            if (node, op) == ("c", "store"):
                net.replicas["d"].store_hint("c", REF, (W1,))  # a PUT lands mid-delivery

        net.on_call = concurrent_put
        h = handoff(net)
        [report] = await h.deliver_once()
        assert (report.delivered, report.dropped) == (1, 0)
        assert net.replicas["c"].fetch(REF) == (V1,)
        net.on_call = lambda node, op: None
        [report] = await h.deliver_once()
        assert (report.delivered, report.dropped) == (1, 1)
        assert net.replicas["c"].fetch(REF) == (V1, W1)

    run(scenario())


def test_a_round_sends_at_most_batch_hints_per_owner() -> None:
    async def scenario() -> None:
        net = Net()
        for i in range(5):
            await hint(net, "d", "c", KeyRef(1, 1, f"k{i}"), V1)
        h = handoff(net, batch=2)
        assert [r.delivered for r in await h.deliver_once()] == [2]
        assert h.pending() == {"c": 3}

    run(scenario())


def test_the_loop_delivers_every_interval_and_stops_when_cancelled() -> None:
    async def scenario() -> None:
        net = Net()
        clock = ManualClock()
        h = Handoff(
            net.replicas["d"], net, lambda n: True, interval=1.0, clock=clock, sleep=clock.sleep
        )
        await hint(net, "d", "c", REF, V1)
        h.start()
        await _yield_until(lambda: clock._sleepers != [])
        clock.advance(0.5)
        await _turns(20)
        assert h.pending() == {"c": 1}  # half an interval: nothing yet
        clock.advance(0.5)
        await _yield_until(lambda: h.pending() == {})
        assert h.reports[-1].at == 1.0
        await h.stop()
        assert h._loop is not None and h._loop._task is None  # cancelled and awaited

    run(scenario())


async def _yield_until(pred: Callable[[], bool], turns: int = 200) -> None:
    """Give the event loop at most `turns` turns (no time passes) until `pred` holds."""
    for _ in range(turns):
        if pred():
            return
        await asyncio.sleep(0)
    assert pred()


async def _turns(turns: int) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


# -- the coordinator's sloppy quorum ----------------------------------------------------------


WHERE = Placement(REF, PRIMARIES, FALLBACKS)


def coordinator(net: Net, alive: Callable[[str], bool] | None = None) -> DynamoCoordinator:
    return DynamoCoordinator("a", net, alive or (lambda n: n not in net.down))


async def put(c: DynamoCoordinator, w: int, pw: int = 0, value: str = "x") -> dict[str, int]:
    return await c.put(WHERE, {}, value, False, w, 32, 1.0, pw=pw)


def test_a_down_primary_s_copy_becomes_a_hint_that_counts_toward_w() -> None:
    async def scenario() -> None:
        net = Net()
        net.down.add("c")
        c = coordinator(net)
        await put(c, w=3)
        await c.close()
        assert ("c", "store") not in net.calls  # known down: not tried
        assert net.replicas["d"].hint_counts() == {"c": 1}
        assert net.replicas["d"].fetch(REF) == ()
        net.down.clear()
        await handoff(net).deliver_once()
        assert net.replicas["c"].fetch(REF) == net.replicas["a"].fetch(REF)

    run(scenario())


def test_an_unreachable_primary_is_rerouted_past_an_unreachable_fallback() -> None:
    async def scenario() -> None:
        net = Net()
        net.down |= {"c", "d"}
        c = coordinator(net, alive=lambda n: True)  # the detector has noticed nothing
        await put(c, w=3)
        await c.close()
        assert net.replicas["e"].hint_counts() == {"c": 1}

    run(scenario())


def test_pw_and_pr_refuse_up_front_when_primaries_are_down() -> None:
    async def scenario() -> None:
        net = Net()
        net.down.add("c")
        c = coordinator(net)
        with pytest.raises(QuorumUnavailable, match="pw=3"):
            await put(c, w=2, pw=3)
        assert net.calls == []  # nothing written anywhere: a true 503
        with pytest.raises(QuorumUnavailable, match="pr=3"):
            await c.get(WHERE, 1, 1.0, pr=3)
        await put(c, w=2, pw=2)
        assert (await c.get(WHERE, 1, 1.0, pr=2)).live[0].value == "x"
        await c.close()

    run(scenario())


def test_without_fallbacks_a_sloppy_write_is_refused() -> None:
    async def scenario() -> None:
        net = Net()
        net.down |= {"c", "d", "e"}
        c = coordinator(net)
        with pytest.raises(QuorumUnavailable, match="w=3"):
            await put(c, w=3)
        await c.close()

    run(scenario())


# -- pr/pw validation (the frontend) -------------------------------------------------------------


@pytest.mark.parametrize(("asked", "want"), [(None, 0), (1, 1), (3, 3)])
def test_pr_pw_default_to_no_demand_and_accept_1_to_n(asked: int | None, want: int) -> None:
    assert _primaries("pw", asked, 3) == want


@pytest.mark.parametrize("asked", [0, 4])
def test_pr_pw_outside_1_to_n_are_a_400_naming_the_field(asked: int) -> None:
    with pytest.raises(InvalidRequest) as caught:
        _primaries("pr", asked, 3)
    assert caught.value.details["field"] == "pr"


def test_hints_for_a_removed_owner_go_to_the_keys_current_owners() -> None:
    async def scenario() -> None:
        net = Net()
        await hint(net, "d", "c", REF, V1)  # c was a primary when the write happened
        removed = {"c"}
        h = handoff(net, rehome=lambda owner, ref: ("a", "b") if owner in removed else None)
        net.down.add("c")  # a removed node is usually gone too: it is visited anyway
        reports = await h.deliver_once()
        assert [(r.owner, r.delivered, r.dropped) for r in reports] == [("c", 1, 1)]
        assert net.replicas["a"].fetch(REF) == (V1,) == net.replicas["b"].fetch(REF)
        assert ("c", "store") not in net.calls and net.replicas["d"].hint_counts() == {}

    run(scenario())


def test_a_hint_whose_keyspace_is_gone_is_dropped() -> None:
    async def scenario() -> None:
        net = Net()
        await hint(net, "d", "c", REF, V1)
        h = handoff(net, rehome=lambda owner, ref: ())
        await h.deliver_once()
        assert net.replicas["d"].hint_counts() == {} and net.calls[-1] == ("d", "hint")

    run(scenario())


# -- an entry that cannot be delivered (issue 11 item 6) -------------------------------------


def refusing(net: Net, keys: set[str]) -> None:
    """`c` refuses a store of these keys as an owner refuses a set it cannot take."""

    async def call(node: str, op: Operation[Req, Resp], request: Req, timeout: float) -> Resp:
        ref = getattr(request, "ref", None)
        if node == "c" and op.name == "store" and ref is not None and ref.key in keys:
            raise TooLarge("request", 70 << 20, 64 << 20)
        return await Net.call(net, node, op, request, timeout)

    net.call = call  # type: ignore[method-assign]


def test_a_hint_the_owner_refuses_is_skipped_reported_and_kept_not_stopped_on() -> None:
    async def scenario() -> None:
        net = Net()
        for key in ("a-refused", "b-fine", "c-fine"):
            await hint(net, "d", "c", KeyRef(1, 1, key), V1)
        refusing(net, {"a-refused"})
        h = handoff(net)
        [report] = await h.deliver_once()
        assert (report.delivered, report.dropped, report.skipped) == (2, 2, 1)
        assert report.failure is None
        assert net.replicas["c"].fetch(KeyRef(1, 1, "c-fine")) == (V1,)
        assert h.skipped == 1 and h.pending() == {"c": 1}  # kept: anti-entropy is the backstop
        [report] = await h.deliver_once()
        assert report.skipped == 1 and h.skipped == 2

    run(scenario())


def test_a_batch_of_refused_hints_does_not_hold_back_the_hints_after_it() -> None:
    async def scenario() -> None:
        net = Net()
        for key in ("a1", "a2", "b", "c"):
            await hint(net, "d", "c", KeyRef(1, 1, key), V1)
        refusing(net, {"a1", "a2"})
        h = handoff(net, batch=2)
        for _ in range(3):  # the rounds move on past what they skipped, then wrap around
            await h.deliver_once()
        assert h.pending() == {"c": 2} and h.delivered == 2
        assert net.replicas["c"].fetch(KeyRef(1, 1, "c")) == (V1,)

    run(scenario())
