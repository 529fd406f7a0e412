"""Moves the meta group's voters towards kv/voters.py's choice, on its leader, one change at a
time (docs/membership.md "Meta group voters", docs/raft.md "Membership changes").

Every round (on whichever node leads the meta group; elsewhere it does nothing) starts
again from the group's actual configuration and the current metadata, so it is idempotent
across restarts and leader changes; nothing is remembered but back-offs and status:

1. members of the configuration that are not live (not connected, or far behind) are asked
   to run the group (`meta_join`, at most every `heal_every` s each): a node that lost its
   role, or restarted without it, takes it up again;
2. `voters.desired` (≤ 5, stable, spread; candidates that gossip says are down or that
   did not answer `meta_join` lately are skipped) and `voters.next_step` (with the voters
   the leader sees live: a down voter that must go is removed before an add it would
   block) give one change:
   - **add** X: X is asked to start the group as a *joining* member whose peers are the
     configuration (`meta_join`), the log is compacted (X is then sent a snapshot with the
     current configuration), `add_member` (refused unless the current live members are a
     quorum of the new size), then `wait_caught_up`; X switches to serving metadata from
     the group by itself (kv/meta_role.py);
   - **remove** X, a follower: `remove_member` (refused unless the remaining live members
     are a quorum); X finds out by asking the leader (kv/meta_role.py);
   - **remove** the leader itself: `transfer_leadership`; the next leader removes it. Not
     while metadata changes are committing (the commit index moved since the last round),
     for up to `handover_patience` s: a change forwarded by a follower is answered once that
     follower learns its commit, which a leader in its transfer hold no longer sends, so the
     change that made this leader leave (a plan's commit) would end as an unknown outcome.

The adapter's checks refuse any step that would leave fewer live voters than a majority;
a refused or unknown step is retried next round from the actual configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kv import voters
from kv.errors import KvError
from kv.meta import Member, Metadata
from kv.meta_ops import Role
from kv.periodic import Periodic
from raft_groups.meta_group import MetaGroup
from raft_groups.syncobj_adapter import Done, Moved, TransferOutcome

log = logging.getLogger(__name__)

Join = Callable[[Member, tuple[str, ...]], Awaitable[Role]]  # meta_join on that member


@dataclass
class MetaVoters:
    group: Callable[[], MetaGroup | None]  # this node's group while it votes, else None
    self_id: str
    metadata: Callable[[], Metadata]
    join: Join
    is_alive: Callable[[str], bool]  # the failure detector's word on a member
    clock: Callable[[], float]
    interval: float = 1.0
    change_timeout: float = 10.0
    catch_up_timeout: float = 30.0
    heal_every: float = 10.0  # between two meta_join calls to one lagging member
    backoff: float = 15.0  # a candidate that did not answer meta_join is skipped this long
    handover_patience: float = 5.0  # longest wait for a quiet moment to move leadership
    state: dict[str, Any] = field(default_factory=lambda: {"state": "idle"})
    changes: int = 0  # configuration changes this node made
    _skip: dict[str, float] = field(default_factory=dict)  # candidate → skipped until
    _healed: dict[str, float] = field(default_factory=dict)  # address → last meta_join
    _last_commit: int | None = None  # the commit index when a hand-over last waited
    _waiting_since: float | None = None  # since when a hand-over waits for a quiet moment
    _loop: Periodic | None = None

    def start(self) -> None:
        self._loop = Periodic("meta voters", self.interval, self.round_once)
        self._loop.start()

    async def stop(self) -> None:
        if self._loop is not None:
            await self._loop.stop()

    def status(self) -> dict[str, Any]:
        return {**self.state, "changes": self.changes}

    async def round_once(self) -> voters.Step | None:
        """One round; returns the step it took (or tried), None when nothing was to do."""
        group, md = self.group(), self.metadata()
        if group is None or not group.status().is_leader or not md.bootstrapped:
            self.state = {"state": "idle", "reason": "not the meta group's leader"}
            return None
        configuration = group.raft_view()[1]
        current = [_id_of(md, address) for address in configuration]
        me = _id_of(md, group.group.settings.self_address)  # a removed member: its address
        live = await group.live()
        await self._heal(md, configuration, live)
        want = voters.desired(md, current, self._unavailable(md))
        step = voters.next_step(current, want, me, {_id_of(md, a) for a in live})
        self.state = {"state": "idle" if step is None else step.kind, "voters": current}
        self.state["desired"] = list(want)
        if step is not None:
            self.state["node"] = step.node
            self.state["outcome"] = await self._take(group, md, step, me, configuration)
        return step

    async def _take(
        self,
        group: MetaGroup,
        md: Metadata,
        step: voters.Step,
        me: str,
        configuration: tuple[str, ...],
    ) -> str:
        member = md.member(step.node)
        if step.kind == "add" and member is not None:
            return await self._add(group, member, configuration)
        if step.node == me:
            if not self._quiet_enough(group.status().commit_index):
                return "leadership stays while metadata changes commit"
            return _moved(await group.group.transfer_leadership(None, timeout=5.0))
        address = member.raft if member is not None else step.node  # a stranger: its address
        removed = await group.group.remove_member(address, self.change_timeout)
        return self._outcome("removed", removed)

    async def _add(self, group: MetaGroup, member: Member, configuration: tuple[str, ...]) -> str:
        try:
            role = await self.join(member, configuration)
        except KvError as exc:
            self._skip[member.id] = self.clock() + self.backoff
            return f"{member.id} did not take meta_join: {exc.message}"
        if not await group.compact(self.change_timeout):
            return "the log was not compacted in time"
        outcome = await group.group.add_member(member.raft, self.change_timeout)
        if not isinstance(outcome, Done):
            return self._outcome("added", outcome)
        caught_up = await group.group.wait_caught_up(member.raft, self.catch_up_timeout)
        return self._outcome("added", outcome) + f" (was {role}; caught up: {caught_up})"

    def _quiet_enough(self, commit_index: int) -> bool:
        """Whether nothing committed since the last round asked, or we waited long enough."""
        now = self.clock()
        if self._waiting_since is None:
            self._waiting_since = now
        quiet, self._last_commit = commit_index == self._last_commit, commit_index
        if quiet or now - self._waiting_since >= self.handover_patience:
            self._waiting_since = self._last_commit = None
            return True
        return False

    def _outcome(self, what: str, outcome: Any) -> str:
        if isinstance(outcome, Done):
            self.changes += 1
            log.info("meta group voter %s: now %s", what, ", ".join(outcome.members))
            return f"{what}: {', '.join(outcome.members)}"
        return f"not {what}: {outcome}"

    def _unavailable(self, md: Metadata) -> set[str]:
        now = self.clock()
        skipped = {n for n, until in self._skip.items() if until > now}
        return skipped | {m.id for m in md.members if not self.is_alive(m.id)}

    async def _heal(
        self, md: Metadata, configuration: tuple[str, ...], live: frozenset[str]
    ) -> None:
        """Ask each member of the configuration that is not live to run the group."""
        now = self.clock()
        for address in configuration:
            member = next((m for m in md.members if m.raft == address), None)
            if address in live or member is None:
                continue
            if now - self._healed.get(address, -self.heal_every) < self.heal_every:
                continue
            self._healed[address] = now
            try:
                await self.join(member, configuration)
            except KvError as exc:
                log.debug("meta_join to lagging voter %s failed: %s", member.id, exc.message)


def _id_of(md: Metadata, address: str) -> str:
    """The member id at this Raft address, or the address itself (no member has it)."""
    return next((m.id for m in md.members if m.raft == address), address)


def _moved(outcome: TransferOutcome) -> str:
    if isinstance(outcome, Moved):
        return f"leadership moved to {outcome.leader} (the next leader removes this node)"
    return f"leadership not moved: {outcome.reason}"
