"""Fault schedules (verification/faults.py): the plan's invariants for any seed, and the
executor on a manual clock with fake actions (no processes, no sleeping)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verification.faults import (
    END,
    AppliedFault,
    FaultStep,
    PlanShape,
    plan_faults,
    run_faults,
    windows,
)

NODES = ("n1", "n2", "n3")
kind_sets = st.lists(st.sampled_from(["kill", "pause"]), min_size=1, max_size=3)


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    kinds=kind_sets,
    duration=st.floats(min_value=0.5, max_value=600),
    min_pause=st.floats(min_value=0.5, max_value=10),
    quiet=st.floats(min_value=0.0, max_value=0.9),
)
def test_plan_invariants_for_any_seed(
    seed: int, kinds: list[str], duration: float, min_pause: float, quiet: float
) -> None:
    shape = PlanShape(min_pause_s=min_pause, quiet_fraction=quiet)
    steps = plan_faults(random.Random(seed), NODES, kinds, duration, shape)
    pairs = windows(steps)  # raises unless every window has a matching begin and end
    assert len(steps) == 2 * len(pairs)
    horizon = duration * (1 - quiet)
    previous_end = 0.0
    for begin, end in pairs:
        assert begin.kind in kinds and begin.node in NODES and end.node == begin.node
        assert end.action == END[begin.kind]
        assert begin.at_s >= previous_end, "windows overlap: two nodes faulted at once"
        assert end.at_s <= horizon + 1e-9, "a fault reaches into the fault-free tail"
        if begin.kind == "pause":
            assert end.at_s - begin.at_s >= min_pause, "pause shorter than an election timeout"
        previous_end = end.at_s


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_every_kind_occurs_when_there_is_room(seed: int) -> None:
    steps = plan_faults(random.Random(seed), NODES, ["kill", "pause"], 20.0)
    assert {s.kind for s in steps} == {"kill", "pause"}


def test_same_seed_same_plan_and_the_seed_matters() -> None:
    a = plan_faults(random.Random(7), NODES, ["kill", "pause"], 60.0)
    assert a == plan_faults(random.Random(7), NODES, ["kill", "pause"], 60.0)
    assert a != plan_faults(random.Random(8), NODES, ["kill", "pause"], 60.0)


def test_no_kinds_no_faults_and_too_short_a_run_has_none() -> None:
    assert plan_faults(random.Random(1), NODES, [], 30.0) == []
    assert plan_faults(random.Random(1), NODES, ["pause"], 3.0) == []


@pytest.mark.parametrize(
    ("nodes", "kinds", "duration", "field"),
    [
        (NODES, ["drop"], 10.0, "kinds"),
        (("n1", "n2"), ["kill"], 10.0, "nodes"),
        (NODES, ["kill"], 0.0, "duration_s"),
    ],
)
def test_invalid_plans_name_the_field(
    nodes: tuple[str, ...], kinds: list[str], duration: float, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        plan_faults(random.Random(0), nodes, kinds, duration)


def test_windows_rejects_a_begin_without_its_end() -> None:
    with pytest.raises(ValueError, match="without a pair"):
        windows([FaultStep(1.0, "kill", "n1", 0)])


# ---------------------------------------------------------------------- executor
class ManualClock:
    """Time advances only when the executor sleeps or an action takes time."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeCluster:
    def __init__(self, clock: ManualClock, restart_s: float = 0.0) -> None:
        self.clock = clock
        self.restart_s = restart_s
        self.down: set[str] = set()
        self.calls: list[tuple[float, str, str]] = []
        self.max_down = 0
        self.fail_next: str | None = None
        self.called = asyncio.Event()

    def actions(self) -> dict[str, Callable[[str], Awaitable[None]]]:
        return {name: self._action(name) for name in ("kill", "start", "pause", "resume")}

    def _action(self, name: str) -> Callable[[str], Awaitable[None]]:
        async def act(node: str) -> None:
            self.calls.append((self.clock.now - 100.0, name, node))
            self.called.set()
            if self.fail_next == name:
                self.fail_next = None
                raise RuntimeError(f"{name} {node} failed")
            if name in ("kill", "pause"):
                self.down.add(node)
            else:
                if name == "start":
                    self.clock.now += self.restart_s
                self.down.discard(node)
            self.max_down = max(self.max_down, len(self.down))

        return act


def _run(steps: list[FaultStep], cluster: FakeCluster, **kw: Any) -> list[AppliedFault]:
    clock = cluster.clock
    return asyncio.run(
        run_faults(steps, cluster.actions(), clock, clock.sleep, start=clock.now, **kw)
    )


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_executor_performs_the_plan_one_node_at_a_time_and_heals(seed: int) -> None:
    cluster = FakeCluster(ManualClock(), restart_s=1.5)
    steps = plan_faults(random.Random(seed), NODES, ["kill", "pause"], 40.0)
    applied = _run(steps, cluster)
    assert cluster.down == set() and cluster.max_down <= 1
    assert [(a.action, a.node) for a in applied if not a.skipped] == [
        (name, node) for _, name, node in cluster.calls
    ]
    for begin, end in windows(steps):
        done = [a for a in applied if a.window == begin.window and not a.skipped]
        if done:  # a performed window keeps its planned length even when it began late
            assert done[1].at_s - done[0].at_s >= end.at_s - begin.at_s - 1e-9


def test_a_late_window_that_would_reach_the_quiet_tail_is_skipped() -> None:
    cluster = FakeCluster(ManualClock(), restart_s=5.0)
    steps = [
        FaultStep(1.0, "kill", "n1", 0),
        FaultStep(2.0, "start", "n1", 0),  # the restart takes 5 s: the next window is late
        FaultStep(3.0, "pause", "n2", 1),
        FaultStep(6.5, "resume", "n2", 1),
    ]
    applied = _run(steps, cluster, heal_by_s=8.0)
    assert [c[1] for c in cluster.calls] == ["kill", "start"]
    assert [a.skipped is not None for a in applied] == [False, False, True, True]


def test_the_chooser_picks_the_target_and_the_end_follows_it() -> None:
    cluster = FakeCluster(ManualClock())

    async def leader(step: FaultStep) -> str | None:
        return "n3"

    steps = [FaultStep(1.0, "pause", "n1", 0), FaultStep(5.0, "resume", "n1", 0)]
    _run(steps, cluster, choose=leader)
    assert cluster.calls == [(1.0, "pause", "n3"), (5.0, "resume", "n3")]


def test_a_failing_chooser_falls_back_to_the_planned_node() -> None:
    cluster = FakeCluster(ManualClock())

    async def broken(step: FaultStep) -> str | None:
        raise ConnectionError("no node answers")

    steps = [FaultStep(1.0, "kill", "n2", 0), FaultStep(2.0, "start", "n2", 0)]
    _run(steps, cluster, choose=broken)
    assert [c[2] for c in cluster.calls] == ["n2", "n2"]


def test_a_failed_begin_opens_no_window() -> None:
    cluster = FakeCluster(ManualClock())
    cluster.fail_next = "kill"
    steps = [FaultStep(1.0, "kill", "n1", 0), FaultStep(2.0, "start", "n1", 0)]
    applied = _run(steps, cluster)
    assert applied[0].error and applied[1].skipped
    assert [c[1] for c in cluster.calls] == ["kill"]


def test_cancellation_mid_window_still_ends_it() -> None:
    clock = ManualClock()
    cluster = FakeCluster(clock)
    steps = [FaultStep(0.0, "pause", "n1", 0), FaultStep(1000.0, "resume", "n1", 0)]

    async def scenario() -> None:
        async def never(seconds: float) -> None:
            await asyncio.Event().wait()  # returns only by cancellation

        cluster.called = asyncio.Event()  # bound to this loop
        task = asyncio.ensure_future(
            run_faults(steps, cluster.actions(), clock, never, start=clock.now)
        )
        await cluster.called.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert [c[1] for c in cluster.calls] == ["pause", "resume"] and cluster.down == set()
