"""Linearizable moves: the shell that performs `moves.next_step` on the Raft groups this node
leads (DESIGN.md §2, docs/raft.md "Linearizable moves").

Every `interval` the loop looks at each group hosted here: if this node leads it and its
configuration differs from its target, or its move is pending, it starts one task for the
group (never two; at most `concurrency` at once per node). A task repeats, until there is
nothing left to do here:

    barrier (the leader committed an entry of its term; earlier membership entries are
    committed) → read the configuration → `next_step` under the metadata of now → perform it

An `Unknown` outcome is not guessed at: the next iteration reads the configuration after a
barrier. A refused step (no live quorum, a change in flight, the new member unreachable)
ends the task; the next round tries again, and `status()` says why it waits. A leadership
transfer ends it too: the new leader's own loop continues the move. When the
configuration is the target, every incoming owner the meta group has not heard of is
reported (`move_done`); the partition flips once all of them are, and the outgoing owners
then delete their replica (raft_groups/manager.py `reconcile`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from kv.errors import KvError
from kv.meta import Metadata
from kv.periodic import Periodic, cancel_and_wait
from raft_groups import moves
from raft_groups.manager import Hosted, RaftGroups
from raft_groups.moves import Add, Idle, MoveState, Remove, Report, Step, TransferLeadership
from raft_groups.syncobj_adapter import Done, Moved, Refused, Unknown
from raft_groups.syncobj_adapter.membership import ChangeOutcome, live_members

log = logging.getLogger(__name__)

Propose = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_STEPS = 16  # per task: a move is at most 2 changes per member, a transfer and a report


@dataclass
class GroupProgress:
    partition: int
    replication: int
    step: str = ""
    state: str = "moving"  # moving | blocked | handed_over | reported | idle | failed
    detail: str = ""
    changes: int = 0
    members: list[str] = field(default_factory=list)
    target: list[str] = field(default_factory=list)
    # while a member catches up: how many entries it trails the leader's commit index (the
    # leader's match index for it); a snapshot being sent shows no progress until installed
    catching_up: str = ""
    behind: int | None = None


@dataclass
class MoveTotals:
    adds: int = 0
    removes: int = 0
    transfers: int = 0
    reports: int = 0
    refused: int = 0
    unknown: int = 0


@dataclass
class RaftMoves:
    groups: RaftGroups
    self_id: str
    metadata: Callable[[], Metadata]
    propose: Propose  # a change to the meta group (kv/meta_machine.py)
    interval: float = 0.5
    timeout: float = 10.0  # one membership change, barrier or leadership transfer
    catch_up_timeout: float = 60.0  # for an added member to hold the leader's log
    concurrency: int = 8  # groups moving at once on this node
    max_lag: int = 1000  # entries a follower may trail and still count as live
    lag_interval: float = 1.0  # seconds between two looks at a catching-up member's lag
    progress: dict[str, GroupProgress] = field(default_factory=dict)
    totals: MoveTotals = field(default_factory=MoveTotals)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _slots: asyncio.Semaphore | None = None
    _loop: Periodic | None = None

    def start(self) -> None:
        self._loop = Periodic("raft moves", self.interval, self.round_once)
        self._loop.start()

    async def stop(self) -> None:
        if self._loop is not None:
            await self._loop.stop()
        await cancel_and_wait(*self._tasks.values())

    def status(self) -> dict[str, Any]:
        return {
            "running": len(self._tasks),
            "totals": asdict(self.totals),
            "groups": {gid: asdict(p) for gid, p in sorted(self.progress.items())},
        }

    async def round_once(self) -> int:
        """Start a task for each group led here that has a step to take; how many."""
        md = self.metadata()
        if not md.bootstrapped:
            return 0
        if md.transition is None:  # forget finished moves once the plan is over
            self.progress = {g: p for g, p in self.progress.items() if g in self._tasks}
        started = 0
        for hosted in self.groups.running():
            gid = hosted.spec.gid
            if gid not in self._tasks and self._has_work(md, hosted):
                self._tasks[gid] = task = asyncio.ensure_future(self._drive(hosted))
                task.add_done_callback(partial(self._forget, gid))
                started += 1
        return started

    def _forget(self, gid: str, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(gid, None)

    def _has_work(self, md: Metadata, hosted: Hosted) -> bool:
        """A cheap look (no barrier): this node leads, and the configuration is not the
        target or a report is due."""
        spec = hosted.spec
        if not hosted.group.status().is_leader:
            return False
        if moves.unreported(md, spec.replication, spec.partition):
            return True
        target = _addresses(md, moves.group_target(md, spec.replication, spec.partition)[1])
        return target is not None and set(hosted.group.members()) != set(target)

    async def _drive(self, hosted: Hosted) -> None:
        spec = hosted.spec
        prog = self.progress.setdefault(spec.gid, GroupProgress(spec.partition, spec.replication))
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        async with self._slots:
            try:
                await self._steps(hosted, prog)
            except Exception as exc:  # noqa: BLE001 - the next round starts over
                prog.state, prog.detail = "failed", f"{exc.__class__.__name__}: {exc}"
                level = logging.INFO if isinstance(exc, KvError) else logging.WARNING
                log.log(level, "move of %s: %s (next round retries)", spec.gid, prog.detail)

    async def _steps(self, hosted: Hosted, prog: GroupProgress) -> None:
        for _ in range(MAX_STEPS):
            decided = await self._decide(hosted, prog)
            if decided is None:
                return
            step, md = decided
            prog.step, prog.state, prog.detail = _name(step), "moving", ""
            prog.catching_up, prog.behind = "", None
            if isinstance(step, Idle):
                prog.state = "idle"
                return
            if not await self._perform(hosted, step, md, prog):
                return

    async def _decide(self, hosted: Hosted, prog: GroupProgress) -> tuple[Step, Metadata] | None:
        """Barrier, then the configuration and the metadata of now → the next step."""
        changes = hosted.group.changes
        if not await changes.barrier(self.timeout):
            prog.state, prog.detail = "blocked", f"no barrier committed in {self.timeout}s"
            return None
        view = await changes.view()
        md = self.metadata()
        spec = hosted.spec
        owners, target = moves.group_target(md, spec.replication, spec.partition)
        owner_addrs, target_addrs = _addresses(md, owners), _addresses(md, target)
        if not view.is_leader or owner_addrs is None or target_addrs is None:
            return None
        prog.members, prog.target = list(view.members), list(target_addrs)
        state = MoveState(
            members=frozenset(view.members),
            owners=owner_addrs,
            target=target_addrs,
            leader=view.self_address,
            live=live_members(view, self.max_lag),
        )
        return moves.next_step(state), md

    async def _perform(self, hosted: Hosted, step: Step, md: Metadata, prog: GroupProgress) -> bool:
        """Perform one step; whether to go on with the next one at once."""
        group = hosted.group
        if isinstance(step, Add):
            self.totals.adds += 1
            return self._outcome(prog, await group.add_member(step.member, self.timeout))
        assert not isinstance(step, Idle)
        if not await self._caught_up(hosted, step.catch_up, prog):
            return False
        if isinstance(step, Remove):
            self.totals.removes += 1
            return self._outcome(prog, await group.remove_member(step.member, self.timeout))
        if isinstance(step, TransferLeadership):
            return await self._hand_over(hosted, step, prog)
        assert isinstance(step, Report)
        await self._report(hosted, md, prog)
        return False

    async def _caught_up(
        self, hosted: Hosted, members: tuple[str, ...], prog: GroupProgress
    ) -> bool:
        for member in members:
            watch = asyncio.ensure_future(self._watch_lag(hosted, member, prog))
            try:
                done = await hosted.group.wait_caught_up(member, self.catch_up_timeout)
            finally:
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)
            if not done:  # the last lag seen stays, beside why the move waits
                prog.state = "blocked"
                prog.detail = f"{member} did not catch up within {self.catch_up_timeout}s"
                return False
            prog.catching_up, prog.behind = "", None
        return True

    async def _watch_lag(self, hosted: Hosted, member: str, prog: GroupProgress) -> None:
        """Every `lag_interval`, how far `member` trails (for status: Raft catch-up is
        counted in log entries; pysyncobj does not expose a snapshot's bytes sent)."""
        while True:
            view = await hosted.group.changes.view()
            if view.is_leader:
                prog.catching_up = member
                prog.behind = max(0, view.commit_index - view.match.get(member, 0))
            await asyncio.sleep(self.lag_interval)

    async def _hand_over(
        self, hosted: Hosted, step: TransferLeadership, prog: GroupProgress
    ) -> bool:
        """Move leadership to a member that stays; its own loop removes this one."""
        out = await hosted.group.reconfig.transfer_leadership(self.timeout, None, step.exclude)
        if isinstance(out, Moved):
            self.totals.transfers += 1
            prog.state, prog.detail = "handed_over", f"leader now {out.leader}"
        else:
            prog.state, prog.detail = "blocked", f"leadership not moved: {out.reason}"
        return False

    async def _report(self, hosted: Hosted, md: Metadata, prog: GroupProgress) -> None:
        spec = hosted.spec
        for node in moves.unreported(md, spec.replication, spec.partition):
            outcome = await self.propose(
                moves.move_done(md, spec.replication, spec.partition, node)
            )
            self.totals.reports += 1
            prog.detail = f"move_done {node}: {outcome.get('status')}"
        prog.state = "reported"

    def _outcome(self, prog: GroupProgress, out: ChangeOutcome) -> bool:
        if isinstance(out, Done):
            prog.changes += 1
            return True
        if isinstance(out, Unknown):
            self.totals.unknown += 1  # the next barrier and look at the members settle it
            prog.detail = out.detail
            return True
        assert isinstance(out, Refused)
        self.totals.refused += 1
        prog.state, prog.detail = "blocked", f"{out.reason.value}: {out.detail}"
        return False


def _addresses(md: Metadata, ids: tuple[str, ...]) -> tuple[str, ...] | None:
    """The members' Raft addresses (a group's members are named by them); None if one is
    not a member of the metadata (nothing can be decided for that group)."""
    found = [md.member(i) for i in ids]
    if any(m is None for m in found):
        return None
    return tuple(m.raft for m in found if m is not None)


def _name(step: Step) -> str:
    if isinstance(step, Add | Remove):
        return f"{type(step).__name__.lower()} {step.member}"
    return type(step).__name__.lower()
