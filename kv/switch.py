"""A keyspace switching its consistency live (docs/mode_switch.md): the record cluster
metadata keeps of it and the meta changes that move it on. Pure.

    start_switch ──▶ switching (source mode serves the record; routing: mode_switch.md)
        │  switch_partition_done × every partition
        ▼
    finish_switch ──▶ the keyspace has the target configuration (same uid), no record
    cancel_switch: `cancelling`. To linearizable: partition by partition the Raft groups'
    data goes back to the eventual copies; finish_switch then leaves the keyspace in its
    source configuration. To eventual: the copy goes on, and finish_switch flips the
    keyspace to eventual and starts the switch back to linearizable in the same change.

Every change is refused (metadata unchanged) when it does not fit: a switch to the mode
the keyspace has, a second switch of one keyspace, a switch while a membership plan moves
data (and `commit_plan` refuses while any keyspace switches: kv/meta_machine.py), an
unknown sibling policy, a replication the cluster cannot hold, a finish before every
partition is done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from kv.keyspace import KeyspaceConfig

# Siblings of an eventual key when it moves into one linearizable value (issue 12):
# `refuse` stops the switch, listing the keys; `lww` keeps the latest written version;
# `merge-json-list` keeps the union when every sibling is a JSON list.
POLICIES = ("refuse", "lww", "merge-json-list")
Outcome = dict[str, Any]


@dataclass(frozen=True)
class Switch:
    keyspace: str
    uid: int  # the keyspace incarnation switching; its data keeps this uid in both modes
    target: KeyspaceConfig  # the configuration after the switch (same name; uid: `start`)
    policy: str
    since: int  # the metadata epoch that committed the switch: the fence
    done: frozenset[int] = field(default_factory=frozenset)  # partitions migrated
    cancelling: bool = False
    keys: int = 0  # keys moved by the partitions in `done` (progress only)

    def to_dict(self) -> dict[str, Any]:
        return {
            "keyspace": self.keyspace,
            "uid": self.uid,
            "target": self.target.to_dict(),
            "policy": self.policy,
            "since": self.since,
            "done": sorted(self.done),
            "cancelling": self.cancelling,
            "keys": self.keys,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Switch:
        return Switch(
            keyspace=str(d["keyspace"]),
            uid=int(d["uid"]),
            target=KeyspaceConfig.from_dict(d["target"]),
            policy=str(d["policy"]),
            since=int(d["since"]),
            done=frozenset(int(p) for p in d.get("done", ())),
            cancelling=bool(d.get("cancelling", False)),
            keys=int(d.get("keys", 0)),
        )

    def progress(self, partitions: int) -> dict[str, Any]:
        """What `GET /v1/keyspaces/KS` shows of it."""
        return {
            "state": "cancelling" if self.cancelling else "switching",
            "to": self.target.consistency,
            "policy": self.policy,
            "partitions_done": len(self.done),
            "partitions": partitions,
            "keys": self.keys,
        }


def described(
    switch_of: Callable[[str], Switch | None], partitions: int, ks: KeyspaceConfig
) -> dict[str, Any]:
    """A keyspace as `GET /v1/keyspaces/KS` shows it: its configuration and, while it
    switches, the switch's progress."""
    record = switch_of(ks.name)
    if record is None or record.uid != ks.uid:
        return ks.to_wire()
    return {**ks.to_wire(), "switch": record.progress(partitions)}


def refusal(code: str, message: str) -> Outcome:
    return {"status": "refused", "code": code, "message": message}


def check_start(
    ks: KeyspaceConfig | None,
    target: KeyspaceConfig,
    policy: str,
    switches: tuple[Switch, ...],
    members: int,
    plan_in_flight: str | None,
) -> Outcome | None:
    """Why a switch of `ks` to `target` cannot start now (an outcome), or None."""
    if ks is None:
        return refusal("keyspace_not_found", f"keyspace {target.name!r} does not exist")
    if target.consistency == ks.consistency:
        why = f"keyspace {ks.name!r} is already {ks.consistency}; nothing to switch"
        return refusal("invalid_request", why)
    if policy not in POLICIES:
        return refusal("invalid_request", f"policy: must be one of {POLICIES}, got {policy!r}")
    if not 1 <= target.replication <= members:
        why = f"replication {target.replication}: the cluster has {members} members"
        return refusal("invalid_request", why)
    if any(s.keyspace == ks.name for s in switches):
        return refusal("keyspace_conflict", f"keyspace {ks.name!r} is already switching")
    if plan_in_flight is not None:
        why = f"membership plan {plan_in_flight} is moving data; switch when it is done"
        return {**refusal("plan_conflict", why), "reason": "plan_in_flight"}
    return None


def start(ks: KeyspaceConfig, target: KeyspaceConfig, policy: str, epoch: int) -> Switch:
    """The record of a switch committed at `epoch`. To linearizable the target keeps the
    keyspace's uid (its Raft groups hold nothing of it). To eventual the target is a new
    incarnation, uid `epoch`: the eventual replicas may still hold copies of the keyspace
    from before an earlier switch to linearizable (deleted only after a grace), and those
    must not count as newer than the frozen state (docs/mode_switch.md)."""
    uid = epoch if target.consistency == "eventual" else ks.uid
    return Switch(ks.name, ks.uid, replace(target, name=ks.name, uid=uid), policy, epoch)


def partition_done(switch: Switch, partition: int, partitions: int, keys: int = 0) -> Switch | None:
    """The record with `partition` migrated (`keys` of it); None if that changes nothing
    (a duplicate report, or a partition the cluster does not have)."""
    if not 0 <= partition < partitions or partition in switch.done:
        return None
    return replace(switch, done=switch.done | {partition}, keys=switch.keys + max(0, keys))


def finished(switch: Switch, source: KeyspaceConfig, partitions: int) -> KeyspaceConfig | None:
    """The keyspace's configuration once the switch is over, or None while partitions are
    still moving: the target's, or — a cancelled switch to linearizable — the source's."""
    if len(switch.done) < partitions:
        return None
    return source if unwinds(switch) else switch.target


# the sibling policies a cancelled switch to eventual may switch back with (refuse would
# stall it on the siblings its eventual writes made)
BACK_POLICIES = ("lww", "merge-json-list")


def cancel(switch: Switch, policy: str | None = None) -> Switch | Outcome:
    """The switch turned around (docs/mode_switch.md "Cancel"), or why it cannot be.

    To linearizable: every partition goes back, one by one — its Raft group is frozen at
    the switch's epoch (so no node on older metadata migrates it or writes through it any
    more), what it holds is written back over the eventual copies, and only then does the
    partition serve eventual again (`done` counts the partitions back).

    To eventual: the copy goes on to its end, then the keyspace switches straight back to
    linearizable (`then_back`), its eventual siblings resolved by `policy` (default lww).
    """
    if switch.cancelling:
        why = f"the switch of {switch.keyspace!r} is already cancelling"
        return refusal("keyspace_conflict", why)
    if switch.target.consistency == "linearizable":
        if policy is not None:
            why = "siblings: applies only to cancelling a switch to eventual"
            return refusal("invalid_request", why)
        return replace(switch, cancelling=True, done=frozenset(), keys=0)
    policy = policy or "lww"
    if policy not in BACK_POLICIES:
        why = f"siblings: must be one of {BACK_POLICIES} to switch back, got {policy!r}"
        return refusal("invalid_request", why)
    return replace(switch, cancelling=True, policy=policy)


def unwinds(switch: Switch) -> bool:
    """Whether the switch is a cancelled switch to linearizable on its way back."""
    return switch.cancelling and switch.target.consistency == "linearizable"


def serves_target(switch: Switch, partition: int) -> bool:
    """Whether `partition` of a switching keyspace is served by the target mode: always,
    unless the switch to linearizable is cancelled and the partition is already back."""
    return not (unwinds(switch) and partition in switch.done)


def then_back(switch: Switch, source: KeyspaceConfig, epoch: int) -> Switch | None:
    """What follows a finished switch: for a cancelled switch to eventual, the switch back
    to the source's linearizable configuration, committed at `epoch`; else nothing."""
    if not switch.cancelling or switch.target.consistency != "eventual":
        return None
    return start(switch.target, replace(source, uid=switch.target.uid), switch.policy, epoch)
