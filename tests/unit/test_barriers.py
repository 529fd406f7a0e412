"""Coalesced read barriers (kv/barriers.py; DESIGN.md §3 "Linearizable reads",
Raft thesis §6.4: a read is linearizable once an entry committed after it arrived is
applied locally).

The group is a fake whose `propose` returns futures the test completes by hand, so every
interleaving of reads and barrier completions is explicit. `_run_callbacks` only yields
to the event loop (done-callbacks run on the next loop iteration); nothing sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kv.barriers import ReadBarriers
from raft_groups import commands


class FakeGroup:
    """Records each proposal; barrier n resolves with n, or fails with Failed(n)."""

    def __init__(self) -> None:
        self.proposals: list[asyncio.Future[Any]] = []
        self.commands: list[bytes] = []

    def propose(self, command: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = loop.create_future()
        self.proposals.append(fut)
        self.commands.append(command)
        return fut

    def pending(self) -> list[int]:
        return [n for n, fut in enumerate(self.proposals) if not fut.done()]

    def apply(self, n: int) -> None:
        self.proposals[n].set_result(n)

    def fail(self, n: int) -> None:
        self.proposals[n].set_exception(Failed(n))


class Failed(Exception):
    def __init__(self, barrier: int) -> None:
        super().__init__(f"barrier {barrier} failed")
        self.barrier = barrier


async def _run_callbacks() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def _run(scenario: Callable[[FakeGroup, ReadBarriers], Awaitable[None]]) -> FakeGroup:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        barrier = commands.encode(commands.BARRIER)
        await scenario(group, ReadBarriers(lambda: group.propose(barrier, loop), loop))

    group = FakeGroup()
    asyncio.run(main())
    return group


def test_a_read_with_nothing_in_flight_proposes_a_barrier_and_waits_for_it() -> None:
    async def scenario(group: FakeGroup, barriers: ReadBarriers) -> None:
        read = barriers.wait()
        assert group.commands == [commands.encode(commands.BARRIER)]
        await _run_callbacks()
        assert not read.done()
        group.apply(0)
        await _run_callbacks()
        assert read.result() == 0
        assert group.pending() == []  # nobody else waits: no further barrier

    _run(scenario)


def test_a_read_arriving_while_a_barrier_is_in_flight_waits_for_the_next_one() -> None:
    async def scenario(group: FakeGroup, barriers: ReadBarriers) -> None:
        first = barriers.wait()
        second = barriers.wait()  # barrier 0 was proposed before this read arrived
        assert len(group.proposals) == 1, "the next barrier is proposed only when 0 is done"
        group.apply(0)
        await _run_callbacks()
        assert first.result() == 0
        assert not second.done(), "applying barrier 0 must not release a later read"
        assert group.pending() == [1]
        group.apply(1)
        await _run_callbacks()
        assert second.result() == 1

    _run(scenario)


def test_reads_arriving_during_one_round_trip_share_one_barrier() -> None:
    async def scenario(group: FakeGroup, barriers: ReadBarriers) -> None:
        barriers.wait()
        waiting = [barriers.wait() for _ in range(100)]
        assert all(fut is waiting[0] for fut in waiting)
        group.apply(0)
        await _run_callbacks()
        assert len(group.proposals) == 2, "100 reads, one next barrier"
        group.apply(1)
        await _run_callbacks()
        assert {fut.result() for fut in waiting} == {1}

    _run(scenario)


def test_a_barrier_failure_propagates_to_every_read_waiting_for_it() -> None:
    async def scenario(group: FakeGroup, barriers: ReadBarriers) -> None:
        first = barriers.wait()
        later = [barriers.wait(), barriers.wait()]
        group.apply(0)
        await _run_callbacks()
        group.fail(1)
        await _run_callbacks()
        assert first.result() == 0
        for fut in later:
            exc = fut.exception()
            assert isinstance(exc, Failed) and exc.barrier == 1

    _run(scenario)


def test_a_failed_barrier_does_not_fail_the_reads_waiting_for_the_next() -> None:
    async def scenario(group: FakeGroup, barriers: ReadBarriers) -> None:
        first = barriers.wait()
        second = barriers.wait()
        group.fail(0)
        await _run_callbacks()
        assert isinstance(first.exception(), Failed)
        assert not second.done()
        group.apply(1)  # the next barrier was proposed regardless of 0's failure
        await _run_callbacks()
        assert second.result() == 1

    _run(scenario)


def test_after_a_quiet_period_the_next_read_proposes_a_fresh_barrier() -> None:
    async def scenario(group: FakeGroup, barriers: ReadBarriers) -> None:
        barriers.wait()
        group.apply(0)
        await _run_callbacks()
        read = barriers.wait()
        assert group.pending() == [1]
        group.apply(1)
        await _run_callbacks()
        assert read.result() == 1

    _run(scenario)


STEPS = st.lists(st.sampled_from(["read", "read", "apply", "fail"]), max_size=40)


@given(STEPS)
def test_every_read_waits_for_a_barrier_proposed_after_it_arrived(steps: list[str]) -> None:
    """Any interleaving: at most one barrier in flight; every read ends, released by a
    barrier proposed after it arrived (the invariant linearizability rests on)."""

    async def scenario(group: FakeGroup, barriers: ReadBarriers) -> None:
        reads: list[tuple[int, asyncio.Future[Any]]] = []  # (proposals before it, its future)
        for step in steps:
            if step == "read":
                reads.append((len(group.proposals), barriers.wait()))
            elif group.pending():
                (group.apply if step == "apply" else group.fail)(group.pending()[0])
            await _run_callbacks()
            assert len(group.pending()) <= 1
        while group.pending():  # the cluster recovers: every barrier left is applied
            group.apply(group.pending()[0])
            await _run_callbacks()
        for proposed_before, fut in reads:
            assert fut.done(), "a read was left waiting"
            assert _barrier_of(fut) >= proposed_before

    _run(scenario)


def _barrier_of(fut: asyncio.Future[Any]) -> int:
    exc = fut.exception()
    if isinstance(exc, Failed):
        return exc.barrier
    assert exc is None
    result: int = fut.result()
    return result


def test_a_barrier_not_applied_in_time_is_proposed_again_for_the_same_reads() -> None:
    """Issue 11 item 4: a lost proposal once wedged every later read of the group (they
    waited for the next barrier, started only when the lost one completed)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        group = FakeGroup()
        barrier = commands.encode(commands.BARRIER)
        barriers = ReadBarriers(lambda: group.propose(barrier, loop), loop, repropose_s=0.05)
        first = barriers.wait()
        later = barriers.wait()  # arrived while the first is in flight: the next barrier
        deadline = loop.time() + 5.0
        while barriers.reproposed == 0:  # the re-proposal timer; polled, with a deadline
            assert loop.time() < deadline, "barrier 0 was never proposed again"
            await asyncio.sleep(0.01)
        assert group.pending() == [0, 1] and barriers.reproposed == 1  # 0 is lost
        group.apply(1)  # the barrier started again completes
        await _run_callbacks()
        assert first.result() == 1
        assert group.pending() == [0, 2]  # and the later read gets its own, started after
        group.apply(2)
        await _run_callbacks()
        assert later.result() == 2
        group.apply(0)  # the lost one completing late changes nothing
        await _run_callbacks()

    asyncio.run(main())
