"""Fault schedules for ops/verify: a pure, seeded planner and a small executor.

A schedule is a list of *windows*, each a pair of steps: ``kill`` → ``start`` (SIGKILL,
then restart), ``pause`` → ``resume`` (SIGSTOP, then SIGCONT) or ``partition`` → ``heal``
(nftables rules of a cluster started with ``ops/cluster up --netns``, docs/netns.md).
A partition window either isolates one node (``isolate N``) or splits the nodes into a
majority and a minority that contains the window's node (``split A,B C``); its step
carries the ``ops/cluster partition`` arguments. Invariants of every plan
(tests/unit/test_faults.py checks them for any seed):

- windows never overlap, so at most one node is down, paused or cut off at a time (a
  split's minority is at most ``(len(nodes) - 1) // 2`` nodes) and a majority of a 3-node
  cluster (every Raft group, every W=2/R=2 quorum of N=3) stays up and connected;
- a pause lasts at least ``min_pause_s`` (longer than an election timeout, so the paused
  leader is deposed - Raft §5.2 - and wakes up believing it still leads);
- the last ``quiet_fraction`` of the run is fault-free, so the cluster heals before the
  workload ends.

`run_faults` is the I/O shell: it performs the windows in order through injected
``actions`` (node id → awaitable; ``partition`` also gets the ``ops/cluster partition``
arguments), ``clock`` and ``sleep``, optionally letting a chooser pick the target at run
time (e.g. "the current leader of group G": an isolated node, or a member of the
minority), and always ends every window it began - also when it is cancelled.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

FaultKind = Literal["kill", "pause", "partition"]
Action = Literal["kill", "start", "pause", "resume", "partition", "heal"]

FAULT_KINDS: tuple[FaultKind, ...] = ("kill", "pause", "partition")
BEGIN: Mapping[FaultKind, Action] = {"kill": "kill", "pause": "pause", "partition": "partition"}
END: Mapping[FaultKind, Action] = {"kill": "start", "pause": "resume", "partition": "heal"}
_KIND_OF: Mapping[str, FaultKind] = {
    "kill": "kill",
    "start": "kill",
    "pause": "pause",
    "resume": "pause",
    "partition": "partition",
    "heal": "partition",
}

DEFAULT_MIN_PAUSE_S = 3.0  # > election_timeout_max (1.5 s) with margin
DEFAULT_QUIET_FRACTION = 0.2


@dataclass(frozen=True)
class FaultStep:
    at_s: float  # offset from the start of the run
    action: Action
    node: str  # planned target; a chooser may replace it when the window begins
    window: int  # steps of one window share it: kill→start, pause→resume, partition→heal
    # a partition step: the `ops/cluster partition` arguments, e.g. ("isolate", "n2") or
    # ("split", "n1,n3", "n2") - `node` is always on the cut-off side; () for other steps
    args: tuple[str, ...] = ()

    @property
    def kind(self) -> FaultKind:
        return _KIND_OF[self.action]

    @property
    def begins(self) -> bool:
        return self.action in BEGIN.values()


@dataclass(frozen=True)
class PlanShape:
    """Lengths (seconds) the planner draws from; each range is ``(low, high)``."""

    min_pause_s: float = DEFAULT_MIN_PAUSE_S
    pause_stretch: float = 1.5  # a pause lasts min_pause_s .. min_pause_s * pause_stretch
    down_s: tuple[float, float] = (1.0, 3.0)  # a killed node stays down this long
    # a partition lasts this long: longer than an election timeout and than the failure
    # detector's "down" bound, so leaders are deposed and coordinators see the node down
    partition_s: tuple[float, float] = (3.0, 5.0)
    split_probability: float = 0.5  # a partition window is a split, else an isolation
    gap_s: tuple[float, float] = (1.0, 3.0)  # between two windows
    warmup_s: tuple[float, float] = (1.0, 2.0)  # before the first window
    quiet_fraction: float = DEFAULT_QUIET_FRACTION


def plan_faults(
    rng: random.Random,
    nodes: Sequence[str],
    kinds: Sequence[str],
    duration_s: float,
    shape: PlanShape = PlanShape(),
) -> list[FaultStep]:
    """A seeded schedule of fault windows in ``[0, duration_s * (1 - quiet_fraction)]``.

    Kinds take turns in an order shuffled by `rng`, so every requested kind occurs once
    there is room for as many windows as kinds; targets are drawn from `nodes`. Draws for
    a partition's shape happen only in partition windows, so a seed gives the same
    kill/pause plan as before partitions existed.
    """
    _validate(nodes, kinds, duration_s, shape)
    if not kinds:
        return []
    horizon = duration_s * (1.0 - shape.quiet_fraction)
    order: list[FaultKind] = [_as_kind(k) for k in dict.fromkeys(kinds)]
    rng.shuffle(order)
    steps: list[FaultStep] = []
    t = rng.uniform(*shape.warmup_s)
    window = 0
    while True:
        kind = order[window % len(order)]
        length = _window_length(rng, kind, shape)
        if t + length > horizon:
            return steps
        node = rng.choice(list(nodes))
        args = _partition_spec(rng, nodes, node, shape) if kind == "partition" else ()
        steps.append(FaultStep(t, BEGIN[kind], node, window, args))
        steps.append(FaultStep(t + length, END[kind], node, window))
        t += length + rng.uniform(*shape.gap_s)
        window += 1


def _window_length(rng: random.Random, kind: FaultKind, shape: PlanShape) -> float:
    if kind == "pause":
        return rng.uniform(shape.min_pause_s, shape.min_pause_s * shape.pause_stretch)
    if kind == "partition":
        return rng.uniform(*shape.partition_s)
    return rng.uniform(*shape.down_s)


def _partition_spec(
    rng: random.Random, nodes: Sequence[str], node: str, shape: PlanShape
) -> tuple[str, ...]:
    """``isolate NODE``, or ``split MAJORITY MINORITY`` with NODE in a minority of
    ``(len(nodes) - 1) // 2`` nodes (for 3 nodes both cut the same links)."""
    if rng.random() >= shape.split_probability:
        return ("isolate", node)
    others = [n for n in nodes if n != node]
    minority = [node, *rng.sample(others, (len(nodes) - 1) // 2 - 1)]
    majority = [n for n in nodes if n not in minority]
    return ("split", ",".join(majority), ",".join(minority))


def partition_args(step: FaultStep, node: str) -> tuple[str, ...]:
    """The step's partition arguments with `node` (a chooser's pick) in the place of the
    planned node: the two names are swapped, so the shape - who is cut off from how many
    - stays the same and `node` is on the cut-off side."""

    def swap(name: str) -> str:
        return node if name == step.node else step.node if name == node else name

    return tuple(",".join(swap(n) for n in arg.split(",")) for arg in step.args)


def _as_kind(kind: str) -> FaultKind:
    for known in FAULT_KINDS:
        if kind == known:
            return known
    raise ValueError(f"kinds: unknown fault kind {kind!r} (known: {', '.join(FAULT_KINDS)})")


def _validate(nodes: Sequence[str], kinds: Sequence[str], duration_s: float, s: PlanShape) -> None:
    for kind in kinds:
        _as_kind(kind)
    if kinds and len(nodes) < 3:
        raise ValueError(f"nodes: need at least 3 so a majority survives, got {len(nodes)}")
    if not duration_s > 0:
        raise ValueError(f"duration_s: must be > 0, got {duration_s!r}")
    if not 0.0 <= s.quiet_fraction < 1.0:
        raise ValueError(f"quiet_fraction: must be in [0, 1), got {s.quiet_fraction!r}")
    if not 0.0 <= s.split_probability <= 1.0:
        raise ValueError(f"split_probability: must be in [0, 1], got {s.split_probability!r}")
    if not s.min_pause_s > 0 or s.pause_stretch < 1.0:
        raise ValueError(
            f"min_pause_s/pause_stretch: invalid {s.min_pause_s!r}/{s.pause_stretch!r}"
        )
    for name in ("down_s", "partition_s", "gap_s", "warmup_s"):
        low, high = getattr(s, name)
        if not 0 <= low <= high:
            raise ValueError(f"{name}: must be 0 <= low <= high, got {(low, high)!r}")


def windows(steps: Sequence[FaultStep]) -> list[tuple[FaultStep, FaultStep]]:
    """Pair each window's begin and end step, in order of begin time."""
    begins = {s.window: s for s in steps if s.begins}
    ends = {s.window: s for s in steps if not s.begins}
    if begins.keys() != ends.keys():
        raise ValueError(f"steps: windows without a pair: {sorted(begins.keys() ^ ends.keys())}")
    pairs = [(begins[w], ends[w]) for w in begins]
    for begin, end in pairs:
        if end.at_s < begin.at_s or END[begin.kind] != end.action or begin.node != end.node:
            raise ValueError(f"steps: window {begin.window} is not a valid {begin.kind} window")
        if (begin.kind == "partition") != bool(begin.args) or end.args:
            raise ValueError(f"steps: window {begin.window}: partition arguments misplaced")
    return sorted(pairs, key=lambda p: p[0].at_s)


# ---------------------------------------------------------------------- executor
# action name -> coroutine function of the node; "partition" is also given the step's
# arguments (partition_args), as in `actions["partition"]("n2", "isolate", "n2")`
Actions = Mapping[str, Callable[..., Awaitable[None]]]
Chooser = Callable[[FaultStep], Awaitable[str | None]]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class AppliedFault:
    """One step as performed; times are offsets from the run's start on `clock`."""

    window: int
    action: str
    node: str
    planned_s: float
    at_s: float  # when the action was issued
    done_s: float  # when it returned (e.g. a restarted node answers /v1/health)
    error: str | None = None  # the action raised; a failed begin opens no window
    skipped: str | None = None  # why the step was not performed
    args: tuple[str, ...] = ()  # a partition: the `ops/cluster partition` arguments used


async def run_faults(
    steps: Sequence[FaultStep],
    actions: Actions,
    clock: Clock,
    sleep: Sleep,
    *,
    start: float | None = None,
    choose: Chooser | None = None,
    heal_by_s: float | None = None,
) -> list[AppliedFault]:
    """Perform the windows of `steps` one after another, relative to `start` (default now).

    A window that begins late keeps its length (a pause must outlast an election); if it
    would then end after `heal_by_s` it is skipped. The end of a window that began always
    runs - in a ``finally``, so also on cancellation.
    """
    run = _Run(actions, clock, sleep, clock() if start is None else start)
    for begin, end in windows(steps):
        await run.window(begin, end, choose, heal_by_s)
    return run.applied


class _Run:
    def __init__(self, actions: Actions, clock: Clock, sleep: Sleep, start: float) -> None:
        self.actions, self.clock, self.sleep, self.start = actions, clock, sleep, start
        self.applied: list[AppliedFault] = []

    def now(self) -> float:
        return self.clock() - self.start

    async def until(self, offset_s: float) -> None:
        left = offset_s - self.now()
        if left > 0:
            await self.sleep(left)

    async def window(
        self, begin: FaultStep, end: FaultStep, choose: Chooser | None, heal_by_s: float | None
    ) -> None:
        await self.until(begin.at_s)
        length = end.at_s - begin.at_s
        if heal_by_s is not None and self.now() + length > heal_by_s:
            self._skip(begin, f"would end after {heal_by_s:.1f}s (fault-free tail)")
            self._skip(end, "its window was skipped")
            return
        node = await _chosen(begin, choose)
        began, opened = self.now(), True
        try:
            opened = await self.perform(begin, node)
            if opened:
                await self.until(began + length)
        finally:  # also on cancellation, even in the middle of the begin action
            if opened:
                await self.perform(end, node)
            else:
                self._skip(end, "its window did not begin")

    async def perform(self, step: FaultStep, node: str) -> bool:
        at = self.now()
        error: str | None = None
        args = partition_args(step, node)
        try:
            await self.actions[step.action](node, *args)
        except Exception as exc:  # noqa: BLE001 - recorded in the report, the run goes on
            error = f"{type(exc).__name__}: {exc}"
        done = self.now()
        self.applied.append(
            AppliedFault(
                step.window, step.action, node, step.at_s, at, done, error=error, args=args
            )
        )
        return error is None

    def _skip(self, step: FaultStep, why: str) -> None:
        now = self.now()
        self.applied.append(
            AppliedFault(
                step.window,
                step.action,
                step.node,
                step.at_s,
                now,
                now,
                skipped=why,
                args=step.args,
            )
        )


async def _chosen(step: FaultStep, choose: Chooser | None) -> str:
    if choose is None:
        return step.node
    try:
        node = await choose(step)
    except Exception:  # noqa: BLE001 - an unreachable chooser falls back to the plan
        return step.node
    return node or step.node
