"""Membership changes of one Raft group: outcomes and the pure decisions (no I/O, no
pysyncobj; the flows that perform them are in `reconfig.py`).

One change at a time per group (notes/membership.md rule 7; pysyncobj's own guard is dead
code, see `shim.MembershipGuard`), proposed by the leader only after it committed an entry
in its current term. A change is refused when the configuration it makes would not have a
live quorum at once (rule 6, etcd's `--strict-reconfig-check`): "live" is the leader's
view — itself, and each connected follower whose match index is within `max_lag` entries
of the leader's commit index. The leader is never removed by its own proposal (pysyncobj
denies it, and a removed leader keeps leading, etcd#11038): leadership moves off it first.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class Refusal(enum.Enum):
    """Why a change was not proposed, or not appended: nothing changed, the caller may
    retry (after doing what the reason says)."""

    NOT_LEADER = "not_leader"  # ask the leader (`Refused.leader` is the last one heard of)
    CHANGE_IN_PROGRESS = "change_in_progress"  # another change of this group is in flight
    ALREADY_MEMBER = "already_member"
    NOT_MEMBER = "not_member"
    IS_LEADER = "is_leader"  # move leadership off the member first (`transfer_leadership`)
    LAST_MEMBER = "last_member"
    NO_LIVE_QUORUM = "no_live_quorum"  # the new configuration would lack a live majority
    UNREACHABLE = "unreachable"  # the new member's node does not answer on its Raft port
    NO_BARRIER = "no_barrier"  # the leader did not commit a no-op in its term in time
    DENIED = "denied"  # pysyncobj's leader denied it (change in flight, leader not ready)
    NOT_APPLIED = "not_applied"  # no leader, queue full, or discarded by a new leader


@dataclass(frozen=True)
class Done:
    """The change is committed: applied on the leader that proposed it."""

    members: tuple[str, ...]  # the leader's configuration afterwards, sorted


@dataclass(frozen=True)
class Refused:
    reason: Refusal
    detail: str
    leader: str | None = None


@dataclass(frozen=True)
class Unknown:
    """The change may or may not be in effect (leader changed, no answer in time). A
    membership entry takes effect where it is appended, before it commits: read the
    members on the leader after a barrier before deciding what to do next."""

    detail: str


ChangeOutcome = Done | Refused | Unknown


@dataclass(frozen=True)
class Moved:
    leader: str  # the member that leads now
    seconds: float
    attempts: int  # TimeoutNow messages sent


@dataclass(frozen=True)
class NotMoved:
    reason: str
    leader: str | None
    attempts: int


TransferOutcome = Moved | NotMoved


@dataclass(frozen=True)
class GroupView:
    """One instant of a member's Raft state, as the leader sees its followers."""

    self_address: str
    is_leader: bool
    leader: str | None
    members: tuple[str, ...]  # the configuration, this member included
    commit_index: int
    last_index: int
    match: Mapping[str, int]  # follower -> match index (leader only)
    connected: frozenset[str]


def quorum(size: int) -> int:
    return size // 2 + 1


def live_members(view: GroupView, max_lag: int) -> frozenset[str]:
    """Members the leader can count on to commit now: itself, and connected followers whose
    match index is at most `max_lag` entries behind its commit index."""
    floor = view.commit_index - max_lag
    followers = (m for m in view.members if m != view.self_address)
    ok = {m for m in followers if m in view.connected and view.match.get(m, 0) >= floor}
    return frozenset(ok | {view.self_address})


def check_add(view: GroupView, address: str, max_lag: int) -> Refused | None:
    """Whether the leader may propose adding `address`. The new member counts as not live
    (it has not caught up): the current live members must be a quorum of the new size."""
    if (refused := _check_leader(view)) is not None:
        return refused
    if address in view.members:
        return Refused(Refusal.ALREADY_MEMBER, f"{address} is already a member")
    if len(view.members) == 1:
        # A lone leader has no quorum to protect, and 1 → 2 is the only way a one-member
        # group grows (a replication-1 group moving, or a 2-member one that lost one):
        # it commits again once the new member acknowledges (etcd allows it too).
        return None
    return _check_live(view, set(view.members) | {address}, max_lag)


def check_remove(view: GroupView, address: str, max_lag: int) -> Refused | None:
    """Whether the leader may propose removing `address`: never itself, never the last
    member, and only if the remaining live members are a quorum of the remaining ones."""
    if (refused := _check_leader(view)) is not None:
        return refused
    if address not in view.members:
        return Refused(Refusal.NOT_MEMBER, f"{address} is not a member")
    if address == view.self_address:
        return Refused(Refusal.IS_LEADER, "move leadership off the leader before removing it")
    if len(view.members) == 1:
        return Refused(Refusal.LAST_MEMBER, "a group keeps at least one member")
    return _check_live(view, set(view.members) - {address}, max_lag)


def _check_leader(view: GroupView) -> Refused | None:
    if view.is_leader:
        return None
    return Refused(Refusal.NOT_LEADER, "membership changes are proposed by the leader", view.leader)


def _check_live(view: GroupView, after: set[str], max_lag: int) -> Refused | None:
    live = live_members(view, max_lag) & after
    if len(live) >= quorum(len(after)):
        return None
    return Refused(
        Refusal.NO_LIVE_QUORUM,
        f"{len(live)} of the {len(after)} members after the change are live and caught up "
        f"(within {max_lag} entries); a quorum is {quorum(len(after))}",
    )


def caught_up(view: GroupView, address: str, target_index: int) -> bool:
    """Whether the leader knows `address` holds every entry up to `target_index`."""
    return view.is_leader and view.match.get(address, 0) >= target_index


def transfer_target(view: GroupView, exclude: frozenset[str] = frozenset()) -> str | None:
    """The follower to hand leadership to: connected, not excluded, the most caught up
    (ties go to the smallest address, so the choice is deterministic). None if none."""
    candidates = [
        (-view.match.get(m, 0), m)
        for m in view.members
        if m != view.self_address and m not in exclude and m in view.connected
    ]
    return min(candidates)[1] if candidates else None


class OneChangeAtATime:
    """The per-group serializer: `begin()` is False while a change is in flight."""

    def __init__(self) -> None:
        self._in_flight: str | None = None

    @property
    def in_flight(self) -> str | None:
        return self._in_flight

    def begin(self, what: str) -> bool:
        if self._in_flight is not None:
            return False
        self._in_flight = what
        return True

    def end(self) -> None:
        self._in_flight = None

    def refusal(self) -> Refused:
        return Refused(Refusal.CHANGE_IN_PROGRESS, f"{self._in_flight} is in flight")
