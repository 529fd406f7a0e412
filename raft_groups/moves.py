"""Linearizable partitions move by Raft reconfiguration — the decisions, pure (DESIGN.md §2,
docs/raft.md "Linearizable moves").

A Raft group moves one member change at a time (notes/membership.md rules 6-8): add the
next incoming member, let it catch up, remove the next outgoing member — moving leadership
off it first if it leads — until the configuration is the target; then the incoming owners
are reported to the meta group (`move_done`), which flips the partition to them.

`next_step` is a function of the leader's configuration read after a barrier, the
partition's current and target owners, who leads and which members the leader counts as
live. It keeps no history: after a crash, a leader change or an unknown outcome the next
round recomputes the step from the actual configuration, so every step is idempotent.
Members are opaque strings here (the shell passes Raft addresses).

Order, and why:
1. a dead outgoing member is removed first: adding next to it would need every other
   member live (3 → 4 members needs 3 live), removing it needs only the others;
2. otherwise the group grows by one (an add) only while it is not larger than the target,
   so it never holds more than target + 1 members (CockroachDB and TiKV pair add/remove);
3. an outgoing member is removed once the incoming members present hold the leader's log
   (`catch_up`); the leader itself goes last, by a leadership transfer to a member that
   stays (pysyncobj's leader ignores its own removal, etcd#11038);
4. when the configuration is the target, a pending move is reported (after catch-up).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kv.meta import Metadata

MODE = "linearizable"


@dataclass(frozen=True)
class MoveState:
    members: frozenset[str]  # the leader's configuration, read after a barrier
    owners: tuple[str, ...]  # the partition's current owners (metadata), preference order
    target: tuple[str, ...]  # where the group goes: the new owners, or `owners` if none
    leader: str  # this member, which leads
    live: frozenset[str]  # members the leader counts on now (itself included)

    @property
    def incoming(self) -> tuple[str, ...]:
        """Target members that are not owners yet, in preference order."""
        return tuple(m for m in self.target if m not in self.owners)


@dataclass(frozen=True)
class Add:
    member: str


@dataclass(frozen=True)
class Remove:
    member: str
    catch_up: tuple[str, ...] = ()  # members that must hold the leader's log first


@dataclass(frozen=True)
class TransferLeadership:
    exclude: frozenset[str]  # members leaving: never the new leader
    catch_up: tuple[str, ...] = ()


@dataclass(frozen=True)
class Report:
    """The configuration is the target: report the incoming owners (`move_done`)."""

    catch_up: tuple[str, ...] = ()


@dataclass(frozen=True)
class Idle:
    """Nothing to do: the configuration is the owners and nothing is pending."""


Step = Add | Remove | TransferLeadership | Report | Idle


def next_step(s: MoveState) -> Step:
    """The one membership step to take next on the leader (module docstring: the order)."""
    if s.leader not in s.members:
        return Idle()  # not a member's view: nothing a leader of this group would do
    missing = [m for m in s.target if m not in s.members]
    extra = sorted(s.members - set(s.target))
    dead = [m for m in extra if m not in s.live and m != s.leader]
    if dead:
        return Remove(dead[0])
    if missing and len(s.members) <= len(s.target):
        return Add(missing[0])
    if extra:
        return _shrink(s, extra)
    return Report(_present(s)) if s.incoming else Idle()


def _shrink(s: MoveState, extra: list[str]) -> Step:
    """Remove a live outgoing member; the leader last, by handing leadership on."""
    others = [m for m in extra if m != s.leader]
    if others:
        return Remove(others[0], _present(s))
    return TransferLeadership(frozenset(extra), _present(s))


def _present(s: MoveState) -> tuple[str, ...]:
    """Incoming members already in the configuration (they must catch up first) — but not
    the leader, which holds its log by definition (an incoming member may lead: a transfer
    picks the most caught-up member that stays)."""
    return tuple(m for m in s.incoming if m in s.members and m != s.leader)


# ---------------------------------------------------------------------- from metadata
def group_target(
    md: Metadata, replication: int, partition: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(owners, target) node ids of a group: while its move is pending, the target is the
    plan's placement (for a reverting plan, the old one); otherwise the owners themselves —
    a group whose configuration differs from its owners without a pending move (an abort
    dropped a move half done) is brought back to them."""
    owners, incoming = md.owners(MODE, replication, partition)
    t = md.transition
    if not incoming or t is None:
        return owners, owners
    return owners, t.chains[partition][:replication]


def pending(md: Metadata, replication: int, partition: int) -> bool:
    t = md.transition
    return t is not None and (MODE, replication, partition) in t.pending


def unreported(md: Metadata, replication: int, partition: int) -> tuple[str, ...]:
    """Incoming owners of a pending move whose `move_done` the meta group has not taken."""
    t = md.transition
    if t is None or not pending(md, replication, partition):
        return ()
    incoming = md.owners(MODE, replication, partition)[1]
    return tuple(n for n in incoming if (MODE, replication, partition, n) not in t.ready)


def move_done(md: Metadata, replication: int, partition: int, node: str) -> dict[str, Any]:
    """The meta change reporting that `node` holds its copy (kv/meta_machine.py)."""
    assert md.transition is not None
    return {
        "type": "move_done",
        "plan_id": md.transition.plan_id,
        "mode": MODE,
        "replication": replication,
        "partition": partition,
        "node": node,
    }
