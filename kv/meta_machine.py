"""The meta Raft group's state machine, pure (DESIGN.md §2).

`apply(metadata, change) -> (metadata, outcome)` runs on every member in log order
(raft_groups/meta_group.py), so it must be deterministic and must not raise on a bad change:
a refused change is an outcome, and the metadata is returned unchanged.

Changes: `bootstrap`, `put_keyspace`, `delete_keyspace`, `put_token` / `revoke_token`
(client tokens, kv/auth.py: records with hashed secrets), the membership plan's
`commit_plan`, `move_done`, `abort_plan` (kv/plan.py makes plans; a commit recomputes the
plan it names and is refused if the metadata has moved on since — Riak's claimant), and a
consistency switch's `start_switch`, `switch_partition_done`, `cancel_switch`,
`finish_switch` (kv/switch.py; no plan commits while a keyspace switches, and the other
way round).
`sync` changes nothing: it is the meta group's read barrier (kv/barriers.py): once it is
applied on a node, that node's metadata holds every change committed before it was proposed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kv import auth, claim, switch
from kv.auth import Token
from kv.errors import KvError
from kv.keyspace import KeyspaceConfig
from kv.meta import Member, Metadata, Transition
from kv.plan import Change, make_plan

Outcome = dict[str, Any]

SYNC: dict[str, Any] = {"type": "sync"}


def apply(md: Metadata, change: dict[str, Any]) -> tuple[Metadata, Outcome]:
    """Apply one committed change. Unknown change types are refused, not raised."""
    kind = str(change.get("type")) if isinstance(change, dict) else None
    handler = _HANDLERS.get(kind or "")
    if handler is None:
        return md, _refused("invalid_request", f"unknown change type {kind!r}")
    if not md.bootstrapped and kind not in ("bootstrap", SYNC["type"]):
        return md, _refused("not_ready", "the cluster metadata is not bootstrapped yet")
    try:
        return handler(md, change)
    except (KeyError, TypeError, ValueError) as exc:
        return md, _refused("invalid_request", f"malformed {kind} change: {exc!r}")


def _refused(code: str, message: str) -> Outcome:
    return {"status": "refused", "code": code, "message": message}


def _bootstrap(md: Metadata, change: dict[str, Any]) -> tuple[Metadata, Outcome]:
    # Every founding node proposes a bootstrap; the first one committed wins, so nodes
    # started with slightly different flags still agree on one metadata.
    if md.bootstrapped:
        return md, {"status": "unchanged"}
    members = tuple(Member.from_dict(m) for m in change["members"])
    partitions = int(change["partitions"])
    # Nodes of this version ask for a claimed placement; a journal written by older nodes
    # (no "claim") replays to the vnode placement it always had.
    chains = (
        claim.initial([m.id for m in members], partitions)
        if change.get("claim") == "chains"
        else ()
    )
    new = Metadata(
        epoch=1,
        members=members,
        partitions=partitions,
        vnodes=int(change["vnodes"]),
        chains=chains,
        tokens=tuple(Token.from_dict(t) for t in change.get("tokens", ())),  # kv/auth.py
    )
    return new, {"status": "created"}


def _put_keyspace(md: Metadata, change: dict[str, Any]) -> tuple[Metadata, Outcome]:
    want = KeyspaceConfig.from_dict(change["keyspace"])
    have = md.keyspace(want.name)
    if have is None:
        created = replace(want, uid=md.epoch + 1)
        return _bump(md, keyspaces=(*md.keyspaces, created)), {"status": "created"}
    if have.same_settings(replace(want, uid=have.uid)):
        return md, {"status": "unchanged"}
    fixed = have.fixed_fields_differ(want)
    if fixed:
        return md, _refused(
            "keyspace_conflict",
            f"keyspace {want.name!r} exists with a different {fixed[0]} "
            f"({getattr(have, fixed[0])!r}); delete it first to change that",
        )
    updated = replace(want, uid=have.uid)
    others = tuple(k if k.name != want.name else updated for k in md.keyspaces)
    return _bump(md, keyspaces=others), {"status": "updated"}


def _delete_keyspace(md: Metadata, change: dict[str, Any]) -> tuple[Metadata, Outcome]:
    name = str(change["name"])
    if md.keyspace(name) is None:
        return md, _refused("keyspace_not_found", f"keyspace {name!r} does not exist")
    remaining = tuple(k for k in md.keyspaces if k.name != name)
    switches = tuple(s for s in md.switches if s.keyspace != name)  # a switch ends with it
    return _bump(md, keyspaces=remaining, switches=switches), {"status": "deleted"}


def _put_token(md: Metadata, change: dict[str, Any]) -> tuple[Metadata, Outcome]:
    token = Token.from_dict(change["token"])
    if any(t.id == token.id for t in md.tokens):
        return md, _refused("invalid_request", f"token id {token.id} exists; mint another")
    if len(md.tokens) >= auth.MAX_TOKENS:
        return md, _refused("invalid_request", f"at most {auth.MAX_TOKENS} tokens; revoke one")
    return _bump(md, tokens=(*md.tokens, token)), {"status": "created"}


def _revoke_token(md: Metadata, change: dict[str, Any]) -> tuple[Metadata, Outcome]:
    token_id = str(change["id"])
    if not any(t.id == token_id for t in md.tokens):
        return md, _refused("not_found", f"no token with id {token_id!r}")
    return _bump(md, tokens=tuple(t for t in md.tokens if t.id != token_id)), {"status": "revoked"}


def _bump(md: Metadata, **changes: Any) -> Metadata:
    return replace(md, epoch=md.epoch + 1, _ring=None, **changes)


# ---------------------------------------------------------------------- membership plans
def _commit_plan(md: Metadata, change: dict[str, Any]) -> tuple[Metadata, Outcome]:
    """Compare-and-set on the plan: recompute it from the changes; refuse if one is in
    flight, or if the plan id differs (the metadata moved on since it was shown)."""
    if md.transition is not None:
        return md, _conflict("plan_in_flight", f"plan {md.transition.plan_id} is in flight")
    if md.switches:
        names = ", ".join(s.keyspace for s in md.switches)
        return md, _conflict("switch_in_flight", f"keyspaces switching consistency: {names}")
    try:
        plan = make_plan(md, [Change.from_wire(c) for c in change["changes"]])
    except KvError as exc:
        return md, _refused(exc.code, exc.message)
    if plan.plan_id != change.get("plan_id"):
        return md, _conflict("plan_changed", "the metadata changed since the plan was made")
    joining = tuple(m for m in plan.members if md.member(m.id) is None)
    transition = Transition(
        plan.plan_id,
        tuple(c.to_wire() for c in plan.changes),
        plan.members,
        plan.chains,
        frozenset((m.mode, m.replication, m.partition) for m in plan.moves if m.target),
    )
    moving = _bump(md, members=(*md.members, *joining), transition=transition)
    return _finish_if_done(moving), {"status": "committed", "plan_id": plan.plan_id}


def _move_done(md: Metadata, change: dict[str, Any]) -> tuple[Metadata, Outcome]:
    """An incoming owner holds its copy of a moving partition; once every incoming owner of
    it has said so, the partition flips to its new owners."""
    t = md.transition
    key = (str(change["mode"]), int(change["replication"]), int(change["partition"]))
    node = str(change["node"])
    incoming = set(md.owners(*key)[1])
    if t is None or t.plan_id != change.get("plan_id") or key not in t.pending:
        return md, {"status": "unchanged"}  # a duplicate or stale report
    if node not in incoming or (*key, node) in t.ready:
        return md, {"status": "unchanged"}
    ready = t.ready | {(*key, node)}
    if not incoming <= {n for *k, n in ready if tuple(k) == key}:
        return _bump(md, transition=replace(t, ready=ready)), {"status": "ready"}
    ready = frozenset(r for r in ready if r[:3] != key)
    flipped = replace(t, pending=t.pending - {key}, done=t.done | {key}, ready=ready)
    return _finish_if_done(_bump(md, transition=flipped)), {"status": "flipped"}


def _abort_plan(md: Metadata, change: dict[str, Any]) -> tuple[Metadata, Outcome]:
    """Back to the placement before the plan: moves not yet flipped are dropped (their old
    owners never stopped serving); flipped ones move back, as a reverting transition that
    starts from the plan's placement."""
    t = md.transition
    if t is None or t.reverting:
        return md, _conflict("no_plan", "no plan in flight to abort")
    if t.plan_id != change.get("plan_id"):
        return md, _conflict("plan_changed", f"the plan in flight is {t.plan_id}")
    before = claim.members_of(md.chains)
    old = tuple(m for m in md.members if m.id in before)
    back = Transition(t.plan_id, t.changes, old, md.chains, t.done, reverting=True)
    aborted = _bump(md, chains=t.chains, transition=back)
    return _finish_if_done(aborted), {"status": "aborting", "moving_back": len(t.done)}


def _finish_if_done(md: Metadata) -> Metadata:
    t = md.transition
    if t is None or t.pending:
        return md
    return replace(md, members=t.members, chains=t.chains, transition=None, _ring=None)


def _conflict(reason: str, message: str) -> Outcome:
    return {**_refused("plan_conflict", message), "reason": reason}


# ---------------------------------------------------------------------- consistency switches
def _start_switch(md: Metadata, change: dict[str, Any]) -> tuple[Metadata, Outcome]:
    target = KeyspaceConfig.from_dict(change["target"])
    ks, policy = md.keyspace(target.name), str(change.get("policy", "refuse"))
    plan = md.transition.plan_id if md.transition is not None else None
    refused = switch.check_start(ks, target, policy, md.switches, len(md.members), plan)
    if refused is not None or ks is None:
        return md, refused or switch.refusal("keyspace_not_found", target.name)
    record = switch.start(ks, target, policy, md.epoch + 1)
    return _bump(md, switches=(*md.switches, record)), {"status": "switching"}


def _switching(md: Metadata, change: dict[str, Any]) -> switch.Switch | None:
    """The switch a change names (by keyspace and uid), if it is still in flight."""
    record = md.switch(str(change["keyspace"]))
    return record if record is not None and record.uid == int(change["uid"]) else None


def _replace_switch(md: Metadata, record: switch.Switch) -> Metadata:
    others = (record if s.keyspace == record.keyspace else s for s in md.switches)
    return _bump(md, switches=tuple(others))


def _switch_partition_done(md: Metadata, change: dict[str, Any]) -> tuple[Metadata, Outcome]:
    record = _switching(md, change)
    turned = record is not None and record.target.consistency == "linearizable"
    if turned and record and bool(change.get("cancelling", False)) != record.cancelling:
        # a report of the other direction: the forward migration's, arriving after the
        # cancel, says nothing about the partition's way back
        return md, {"status": "unchanged"}
    partition, keys = int(change["partition"]), int(change.get("keys", 0))
    moved = record and switch.partition_done(record, partition, md.partitions, keys)
    if not moved:
        return md, {"status": "unchanged"}  # a duplicate or stale report
    return _replace_switch(md, moved), {"status": "done", "partitions_done": len(moved.done)}


def _cancel_switch(md: Metadata, change: dict[str, Any]) -> tuple[Metadata, Outcome]:
    record = _switching(md, change)
    if record is None:
        why = f"keyspace {change['keyspace']!r} has no switch in flight to cancel"
        return md, switch.refusal("keyspace_conflict", why)
    policy = change.get("policy")
    turned = switch.cancel(record, None if policy is None else str(policy))
    if not isinstance(turned, switch.Switch):
        return md, turned
    return _replace_switch(md, turned), {"status": "cancelling"}


def _finish_switch(md: Metadata, change: dict[str, Any]) -> tuple[Metadata, Outcome]:
    record, ks = _switching(md, change), md.keyspace(str(change["keyspace"]))
    final = record and ks and switch.finished(record, ks, md.partitions)
    if not final or record is None:
        return md, {"status": "unchanged"}  # partitions still moving, or already finished
    keyspaces = tuple(final if k.name == final.name else k for k in md.keyspaces)
    switches = tuple(s for s in md.switches if s is not record)
    outcome = "cancelled" if record.cancelling else "switched"
    back = ks and switch.then_back(record, ks, md.epoch + 1)
    if back:  # a cancelled switch to eventual: straight back to linearizable
        switches, outcome = (*switches, back), "switching back"
    return _bump(md, keyspaces=keyspaces, switches=switches), {"status": outcome}


def _sync(md: Metadata, change: dict[str, Any]) -> tuple[Metadata, Outcome]:
    return md, {"status": "unchanged"}


_HANDLERS = {
    "sync": _sync,
    "bootstrap": _bootstrap,
    "put_keyspace": _put_keyspace,
    "delete_keyspace": _delete_keyspace,
    "put_token": _put_token,
    "revoke_token": _revoke_token,
    "commit_plan": _commit_plan,
    "move_done": _move_done,
    "abort_plan": _abort_plan,
    "start_switch": _start_switch,
    "switch_partition_done": _switch_partition_done,
    "cancel_switch": _cancel_switch,
    "finish_switch": _finish_switch,
}
