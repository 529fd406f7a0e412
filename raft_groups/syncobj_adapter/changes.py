"""pysyncobj's side of a membership change of one group (`reconfig.ChangeTarget`).

Everything that reads the SyncObj's state runs on the driver thread (`RaftDriver.submit`):
the leader's match indexes are a dict the driver mutates. Proposals (`addNodeToCluster`,
`removeNodeFromCluster`, the no-op barrier) are queue puts, safe from the asyncio thread;
their callbacks run on the driver thread and reach asyncio through `call_soon_threadsafe`.
`FAIL_REASON` codes stop here: each becomes a `membership` outcome, by whether the change
can be in effect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pysyncobj import FAIL_REASON

from raft_groups.syncobj_adapter import shim
from raft_groups.syncobj_adapter.membership import (
    ChangeOutcome,
    Done,
    GroupView,
    Refusal,
    Refused,
    Unknown,
    caught_up,
    transfer_target,
)

if TYPE_CHECKING:
    from raft_groups.syncobj_adapter.driver import RaftDriver
    from raft_groups.syncobj_adapter.mux import RaftMux

T = TypeVar("T")

_NOT_APPLIED = (
    FAIL_REASON.QUEUE_FULL,
    FAIL_REASON.MISSING_LEADER,
    FAIL_REASON.NOT_LEADER,
    FAIL_REASON.DISCARDED,  # a new leader's entry took its index (0/256 applied, DESIGN §3)
)


class SyncObjChanges:
    """The membership primitives of one group's SyncObj, for `reconfig.Reconfigurator`."""

    def __init__(
        self,
        obj: Any,
        driver: RaftDriver,
        wake: Callable[[], None],
        hold: Callable[[], None],
    ) -> None:
        self._obj = obj
        self._driver = driver
        self._wake = wake
        self._hold = hold  # driver thread: stop ticking the group for a while (no appends)

    @property
    def _mux(self) -> RaftMux:
        return self._driver.mux

    async def _on_driver(self, fn: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self._driver.submit(fn))

    # ------------------------------------------------------------------ state
    async def view(self) -> GroupView:
        return await self._on_driver(self.view_now)

    def view_now(self) -> GroupView:
        """The group's state at this instant (driver thread)."""
        obj = self._obj
        members = members_of(obj)
        match = {a: i for a in members if (i := shim.match_index(obj, a)) is not None}
        return GroupView(
            self_address=obj.selfNode.id,
            is_leader=shim.is_leader(obj),
            leader=shim.leader_address(obj),
            members=members,
            commit_index=int(obj.raftCommitIndex),
            last_index=shim.last_log_index(obj),
            match=match,
            connected=frozenset(node.id for node in shim.connected_nodes(obj)),
        )

    # ------------------------------------------------------------------ proposals
    async def barrier(self, timeout: float) -> bool:
        """Commit a no-op through the log; True once it is applied here (on the leader:
        the leader has committed an entry in its current term, notes rule 7)."""
        reason = await self._proposed(lambda cb: shim.propose_noop(self._obj, cb), timeout)
        return bool(reason == FAIL_REASON.SUCCESS)

    async def propose_change(self, kind: str, address: str, timeout: float) -> ChangeOutcome:
        """Propose adding (`kind="add"`) or removing `address`; wait for its outcome."""
        propose = self._obj.addNodeToCluster if kind == "add" else self._obj.removeNodeFromCluster
        reason = await self._proposed(lambda cb: propose(address, callback=cb), timeout)
        if reason == FAIL_REASON.SUCCESS:
            return Done(await self._on_driver(lambda: self.view_now().members))
        return _outcome(kind, address, reason)

    async def _proposed(self, propose: Callable[[Any], None], timeout: float) -> int | None:
        """Queue a proposal with a callback; its FAIL_REASON, or None if none in time."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()

        def done(result: Any, reason: int) -> None:  # driver thread
            loop.call_soon_threadsafe(_settle, fut, reason)

        propose(done)
        self._wake()
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None

    # ------------------------------------------------------------------ reachability
    async def reach(self, address: str, timeout: float, poll: float) -> bool:
        """Pin `address` in the mux and wait until it is connected (the new member's node
        is up and shares the cluster secret); `release` unpins it."""
        await self._on_driver(lambda: self._mux.pin_peer(address))
        deadline = asyncio.get_running_loop().time() + timeout
        while not await self._on_driver(lambda: self._mux.is_connected(address)):
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(poll)
        return True

    async def release(self, address: str) -> None:
        await self._on_driver(lambda: self._mux.unpin_peer(address))

    # ------------------------------------------------------------------ leadership
    async def try_transfer(self, target: str | None, exclude: frozenset[str]) -> str | None:
        """One attempt at Raft's leadership transfer (thesis §3.10), on the driver thread:
        stop appending (`hold`: the leader's group is not ticked), and once the target
        holds the whole log, send it TimeoutNow through pysyncobj's `transferLeadership`
        (which checks that itself). The target it was sent to, or None: not the leader,
        no candidate, or the target still catching up (call again)."""
        return await self._on_driver(lambda: self._transfer_now(target, exclude))

    def _transfer_now(self, target: str | None, exclude: frozenset[str]) -> str | None:
        view = self.view_now()
        chosen = target if target is not None else transfer_target(view, exclude)
        if chosen is None or not view.is_leader:
            return None
        self._hold()
        if not caught_up(view, chosen, view.last_index):
            return None  # entries in flight; nothing new is appended meanwhile
        reasons: list[int] = []
        self._obj.transferLeadership(chosen, callback=lambda _r, reason: reasons.append(reason))
        self._wake()
        return chosen if reasons == [FAIL_REASON.SUCCESS] else None


def members_of(obj: Any) -> tuple[str, ...]:
    """A SyncObj's configuration, itself included, sorted (`otherNodes` returns a copy)."""
    return tuple(sorted([obj.selfNode.id, *(node.id for node in obj.otherNodes)]))


def _settle(fut: asyncio.Future[int], reason: int) -> None:
    if not fut.done():
        fut.set_result(reason)


def _outcome(kind: str, address: str, reason: int | None) -> ChangeOutcome:
    what = f"{'adding' if kind == 'add' else 'removing'} {address}"
    if reason == FAIL_REASON.REQUEST_DENIED:
        return Refused(
            Refusal.DENIED,
            f"the leader denied {what}: another change is not yet applied, or its "
            f"no-op is not yet committed",
        )
    if reason in _NOT_APPLIED:
        return Refused(Refusal.NOT_APPLIED, f"{what} was not applied (reason {reason})")
    return Unknown(
        f"{what}: no outcome (reason {reason}); the entry may be in effect — read the "
        f"leader's members after a barrier"
    )
