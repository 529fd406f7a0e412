"""The membership-change flows of one group, over a narrow `ChangeTarget` (the real one is
`changes.SyncObjChanges`; unit tests drive these flows with a fake).

A move of a member (docs/raft.md "Membership changes") is, on the leader:
`add_member(new)` → `wait_caught_up(new)` → if the old member leads, `transfer_leadership`
on it → `remove_member(old)` on the (new) leader. Each change:

1. takes the group's serializer (`OneChangeAtATime`), or is refused at once;
2. checks the leader's view (`membership.check_add` / `check_remove`: leader only, a live
   quorum after the change);
3. for an add, pins the new member's address in the mux and waits until it is connected;
4. commits a no-op barrier (the leader has committed an entry in its current term);
5. checks again, then proposes the change and waits for its typed outcome.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from raft_groups.syncobj_adapter.membership import (
    ChangeOutcome,
    GroupView,
    Moved,
    NotMoved,
    OneChangeAtATime,
    Refusal,
    Refused,
    TransferOutcome,
    caught_up,
    check_add,
    check_remove,
)


class ChangeTarget(Protocol):
    async def view(self) -> GroupView: ...

    async def barrier(self, timeout: float) -> bool: ...

    async def propose_change(self, kind: str, address: str, timeout: float) -> ChangeOutcome: ...

    async def reach(self, address: str, timeout: float, poll: float) -> bool: ...

    async def release(self, address: str) -> None: ...

    async def try_transfer(self, target: str | None, exclude: frozenset[str]) -> str | None: ...


@dataclass(frozen=True)
class ChangePolicy:
    max_lag: int = 1000  # entries a follower may trail the commit index and count as live
    poll: float = 0.005  # seconds between two looks at the group's state
    reach_timeout: float = 5.0  # for the new member's node to answer on its Raft port
    step_down_wait: float = 1.0  # after a TimeoutNow, before trying again (≥ one election)


class Reconfigurator:
    """Membership changes and leadership transfers of one group (one per `RaftGroup`)."""

    def __init__(self, target: ChangeTarget, policy: ChangePolicy | None = None) -> None:
        self._target = target
        self.policy = policy or ChangePolicy()
        self.serializer = OneChangeAtATime()

    async def add_member(self, address: str, timeout: float) -> ChangeOutcome:
        if not self.serializer.begin(f"adding {address}"):
            return self.serializer.refusal()
        try:
            return await self._add(address, timeout)
        finally:
            self.serializer.end()

    async def remove_member(self, address: str, timeout: float) -> ChangeOutcome:
        if not self.serializer.begin(f"removing {address}"):
            return self.serializer.refusal()
        try:
            return await self._remove(address, timeout)
        finally:
            self.serializer.end()

    async def _add(self, address: str, timeout: float) -> ChangeOutcome:
        if refused := check_add(await self._target.view(), address, self.policy.max_lag):
            return refused
        try:
            if not await self._target.reach(address, self.policy.reach_timeout, self.policy.poll):
                return Refused(Refusal.UNREACHABLE, f"{address} is not connected")
            return await self._propose("add", address, timeout)
        finally:
            await self._target.release(address)  # once appended, the group names it

    async def _remove(self, address: str, timeout: float) -> ChangeOutcome:
        if refused := check_remove(await self._target.view(), address, self.policy.max_lag):
            return refused
        return await self._propose("rem", address, timeout)

    async def _propose(self, kind: str, address: str, timeout: float) -> ChangeOutcome:
        """Barrier, check again (the barrier took time), propose."""
        if not await self._target.barrier(timeout):
            return Refused(Refusal.NO_BARRIER, f"no no-op committed within {timeout:.1f}s")
        check = check_add if kind == "add" else check_remove
        if refused := check(await self._target.view(), address, self.policy.max_lag):
            return refused
        return await self._target.propose_change(kind, address, timeout)

    async def wait_caught_up(self, address: str, timeout: float) -> bool:
        """On the leader: wait until `address` holds every entry committed when the wait
        began (its match index reached that commit index). False if not in time, or if
        this member is not the leader."""
        view = await self._target.view()
        goal = view.commit_index
        deadline = asyncio.get_running_loop().time() + timeout
        while view.is_leader and not caught_up(view, address, goal):
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(self.policy.poll)
            view = await self._target.view()
        return view.is_leader

    async def transfer_leadership(
        self, timeout: float, target: str | None = None, exclude: frozenset[str] = frozenset()
    ) -> TransferOutcome:
        """Move leadership off this member (the leader) with Raft's TimeoutNow: retry until
        a caught-up follower gets it, then wait for another leader to be heard of. Never
        removes anyone: at worst an election among the same members."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        attempts, view = 0, await self._target.view()
        if target is not None and (target == view.self_address or target not in view.members):
            return NotMoved("bad_target", view.leader, attempts)
        while loop.time() - start < timeout:
            if not view.is_leader:
                if attempts == 0:
                    return NotMoved("not_leader", view.leader, attempts)
                if view.leader not in (None, view.self_address):
                    return Moved(str(view.leader), loop.time() - start, attempts)
            elif await self._target.try_transfer(target, exclude) is not None:
                attempts += 1
                view = await self._await_step_down(loop.time() + self.policy.step_down_wait)
                continue
            await asyncio.sleep(self.policy.poll)
            view = await self._target.view()
        return NotMoved("timeout", view.leader, attempts)

    async def _await_step_down(self, until: float) -> GroupView:
        """Poll until this member stops leading and hears of a new leader, or `until`."""
        view = await self._target.view()
        while asyncio.get_running_loop().time() < until:
            if not view.is_leader and view.leader not in (None, view.self_address):
                break
            await asyncio.sleep(self.policy.poll)
            view = await self._target.view()
        return view
