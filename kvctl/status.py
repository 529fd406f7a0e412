"""A membership plan in flight joined with every member's own progress — pure (no I/O): what
`kvctl status` shows.

`progress(membership, views, now, since)` takes
- `membership`: `GET /v1/membership` — idle, or the plan's pending moves, each with `from`
  (owners serving it now), `to` (owners after) and `ready` (incoming owners that reported);
- `views`: node id → that node's own `GET /v1/cluster`, or the error it answered with. A
  node shows the eventual transfers it pulls as an incoming owner (`transfers`,
  dynamo_mode/transfer.py `Progress`), the moves of the Raft groups it drove as their
  leader (`raft_moves.groups`, raft_groups/mover.py `GroupProgress`), and the size of each
  pending move's partition it serves now (`sizes`, kv/sizer.py);
- `since`: a `Sample` of an earlier call, for rates (keys/s, moves/s) and the ETA.

Each pending move gets one state and, when something keeps it from progressing, a `stuck`
reason:

  eventual      per incoming owner: `reported` (it told the meta group), `verifying` /
                `copying` (its pull runs), `waiting` (no pull yet), `failed` (the last
                attempt failed — stuck, with the error; it retries from the next source),
                `unknown` (the node did not answer — stuck); the move shows the least
                advanced of its incoming owners, and the keys they pulled
  linearizable  the progress reported by the group's leader (the node whose view says it
                leads the group), else by any node that drove the move; `blocked` and
                `failed` are stuck, with the reason; `waiting` when nobody drives it yet

Keys and bytes done are counted only for eventual moves (the keys an incoming owner copied
and their bytes as stored); a Raft member catches up by log and snapshot, so a linearizable
move shows instead how many log entries the member catching up trails its leader by. Each
move's expected bytes are its partition's size on the first current owner that reports it,
once per incoming owner (the volume still to move, measured now — not the plan's figure,
which the metadata does not keep). Raft addresses in the mover's steps are shown as node ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

MoveId = tuple[str, int, int]  # (mode, replication, partition)
View = Mapping[str, Any] | str  # a node's GET /v1/cluster, or its error
PULL_ORDER = ("failed", "unknown", "waiting", "copying", "verifying", "reported")
RAFT_STUCK = ("blocked", "failed")
RAFT_ACTIVE = ("moving", *RAFT_STUCK)
_ADDRESS = re.compile(r"[A-Za-z0-9_.\-]+:[0-9]+")


@dataclass(frozen=True)
class Sample:
    """What rates are measured against: one earlier `progress`."""

    at: float
    plan_id: str | None
    moves_done: int
    keys: int  # keys pulled so far by every transfer the views show
    per_move: Mapping[MoveId, int] = field(default_factory=dict)
    bytes: int = 0  # bytes copied so far by every transfer the views show


@dataclass(frozen=True)
class MoveStatus:
    mode: str
    replication: int
    partition: int
    source: tuple[str, ...]  # owners serving it now ("from")
    target: tuple[str, ...]  # owners once it flips ("to")
    ready: tuple[str, ...]  # incoming owners that reported it
    state: str
    detail: str = ""  # who pulls from whom, or the Raft step under way
    keys: int | None = None  # keys pulled so far (eventual)
    keys_per_s: float | None = None
    stuck: str | None = None  # why it does not progress
    bytes: int | None = None  # bytes copied so far (eventual)
    bytes_expected: int | None = None  # the partition's size × incoming owners; None: unknown

    @property
    def id(self) -> MoveId:
        return (self.mode, self.replication, self.partition)

    @property
    def outgoing(self) -> tuple[str, ...]:
        return tuple(n for n in self.source if n not in self.target)

    @property
    def incoming(self) -> tuple[str, ...]:
        return tuple(n for n in self.target if n not in self.source)

    def to_wire(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "replication": self.replication,
            "partition": self.partition,
            "from": list(self.source),
            "to": list(self.target),
            "ready": list(self.ready),
            "state": self.state,
            "detail": self.detail,
            "keys": self.keys,
            "keys_per_s": self.keys_per_s,
            "bytes": self.bytes,
            "bytes_expected": self.bytes_expected,
            "stuck": self.stuck,
        }


@dataclass(frozen=True)
class Status:
    state: str  # idle | moving | reverting
    epoch: int
    at: float
    plan_id: str | None = None
    changes: tuple[Mapping[str, Any], ...] = ()
    members: tuple[str, ...] = ()  # when idle
    moves_done: int = 0
    moves: tuple[MoveStatus, ...] = ()
    keys: int = 0
    unreachable: Mapping[str, str] = field(default_factory=dict)
    moves_per_s: float | None = None
    keys_per_s: float | None = None
    eta_s: float | None = None  # pending moves / moves per second, once some flipped
    bytes: int = 0  # copied by every transfer the views show
    bytes_per_s: float | None = None

    @property
    def bytes_expected(self) -> int:
        """The pending moves' expected bytes, of those whose size is known."""
        return sum(m.bytes_expected for m in self.moves if m.bytes_expected is not None)

    @property
    def bytes_unknown(self) -> int:
        """Pending moves whose expected bytes nobody reported."""
        return sum(1 for m in self.moves if m.bytes_expected is None)

    @property
    def idle(self) -> bool:
        return self.state == "idle"

    @property
    def moves_pending(self) -> int:
        return len(self.moves)

    @property
    def stuck(self) -> tuple[MoveStatus, ...]:
        return tuple(m for m in self.moves if m.stuck)

    def sample(self) -> Sample:
        per_move = {m.id: m.keys for m in self.moves if m.keys is not None}
        return Sample(self.at, self.plan_id, self.moves_done, self.keys, per_move, self.bytes)

    def to_wire(self) -> dict[str, Any]:
        return {
            "status": self.state,
            "epoch": self.epoch,
            "plan_id": self.plan_id,
            "changes": [dict(c) for c in self.changes],
            "members": list(self.members),
            "moves_done": self.moves_done,
            "moves_pending": self.moves_pending,
            "keys": self.keys,
            "bytes": self.bytes,
            "bytes_expected": self.bytes_expected,
            "bytes_unknown": self.bytes_unknown,
            "moves_per_s": self.moves_per_s,
            "keys_per_s": self.keys_per_s,
            "bytes_per_s": self.bytes_per_s,
            "eta_s": self.eta_s,
            "moves": [m.to_wire() for m in self.moves],
            "stuck": [{**_id_wire(m), "reason": m.stuck} for m in self.stuck],
            "unreachable": dict(self.unreachable),
        }


def progress(
    membership: Mapping[str, Any],
    views: Mapping[str, View],
    now: float,
    since: Sample | None = None,
) -> Status:
    nodes = _Nodes.of(views)
    moves = [_move(raw, views, nodes) for raw in membership.get("pending", ())]
    status = Status(
        state=str(membership.get("status", "idle")),
        epoch=int(membership.get("epoch", 0)),
        at=now,
        plan_id=membership.get("plan_id"),
        changes=tuple(membership.get("changes", ())),
        members=tuple(membership.get("members", ())),
        moves_done=int(membership.get("moves_done", 0)),
        moves=tuple(moves),
        keys=sum(_keys(t) for view in _answers(views) for t in view.get("transfers", ())),
        unreachable={n: v for n, v in views.items() if isinstance(v, str)},
        bytes=sum(_bytes(t) for view in _answers(views) for t in view.get("transfers", ())),
    )
    return _rated(status, since) if since is not None else status


# ---------------------------------------------------------------------- one move
def _move(raw: Mapping[str, Any], views: Mapping[str, View], nodes: _Nodes) -> MoveStatus:
    base = MoveStatus(
        mode=str(raw["mode"]),
        replication=int(raw["replication"]),
        partition=int(raw["partition"]),
        source=tuple(raw.get("from", ())),
        target=tuple(raw.get("to", ())),
        ready=tuple(raw.get("ready", ())),
        state="waiting",
    )
    base = replace(base, bytes_expected=_expected(base, views))
    if base.mode == "eventual":
        return _eventual(base, views)
    return _linearizable(base, views, nodes)


def _expected(move: MoveStatus, views: Mapping[str, View]) -> int | None:
    """The partition's size on the first current owner that reports it, once per incoming
    owner (each receives a whole copy)."""
    for node in move.source:
        view = views.get(node)
        found = (
            next((s for s in view.get("sizes", ()) if _same(s, move)), None)
            if isinstance(view, Mapping)
            else None
        )
        if found is not None:
            return int(found.get("bytes", 0)) * len(move.incoming)
    return None


@dataclass(frozen=True)
class _Pull:
    state: str
    keys: int = 0
    source: str = ""
    stuck: str | None = None
    bytes: int = 0


def _eventual(move: MoveStatus, views: Mapping[str, View]) -> MoveStatus:
    pulls = {n: _pull(move, n, views.get(n)) for n in move.incoming}
    if not pulls:
        return move
    states = [p.state for p in pulls.values()]
    stuck = [f"{n}: {p.stuck}" for n, p in pulls.items() if p.stuck]
    return replace(
        move,
        state=min(states, key=PULL_ORDER.index),
        detail=", ".join(f"{n} ← {p.source}" for n, p in pulls.items() if p.source),
        keys=sum(p.keys for p in pulls.values()),
        stuck="; ".join(stuck) or None,
        bytes=sum(p.bytes for p in pulls.values()),
    )


def _pull(move: MoveStatus, node: str, view: View | None) -> _Pull:
    """One incoming owner's pull of the move's partition, as its own view shows it."""
    entry = None
    if isinstance(view, Mapping):
        entry = next((t for t in view.get("transfers", ()) if _same(t, move)), None)
    if node in move.ready:
        done = entry or {}
        return _Pull("reported", _keys(done), str(done.get("source", "")), bytes=_bytes(done))
    if view is None:
        return _Pull("unknown", stuck="not asked (not a member in the views)")
    if isinstance(view, str):
        return _Pull("unknown", stuck="does not answer")  # its error: Status.unreachable
    if entry is None:
        return _Pull("waiting")
    state = str(entry.get("state", ""))
    source = str(entry.get("source", ""))
    if state in ("failed", "error"):
        error = entry.get("error") or "no error given"
        stuck = f"pull from {source} failed: {error}"
        return _Pull("failed", _keys(entry), source, stuck, _bytes(entry))
    state = state if state in PULL_ORDER else "copying"
    return _Pull(state, _keys(entry), source, bytes=_bytes(entry))


def _linearizable(move: MoveStatus, views: Mapping[str, View], nodes: _Nodes) -> MoveStatus:
    gid = f"p{move.partition}r{move.replication}"
    driven = [(n, g) for n, view in _named_answers(views) if (g := _group(view, gid))]
    if not driven:
        return replace(move, detail="no leader has started it yet")
    leading = [(n, g) for n, g in driven if nodes.leads(n, gid, views)]
    active = [(n, g) for n, g in driven if g.get("state") in RAFT_ACTIVE]
    node, group = (leading or active or driven)[0]
    state = str(group.get("state", "moving"))
    step = nodes.readable(str(group.get("step", "")))
    why = nodes.readable(str(group.get("detail", "")))
    detail = f"{node}: {step}" + (f" ({why})" if why else "") + _lag(group, nodes)
    stuck = f"{node}: {step or 'move'} {state}: {why or 'no reason given'}"
    return replace(
        move,
        state=state,
        detail=detail,
        stuck=stuck if state in RAFT_STUCK else None,
    )


def _lag(group: Mapping[str, Any], nodes: _Nodes) -> str:
    """How far the member the leader waits for trails it, in log entries."""
    member, behind = group.get("catching_up"), group.get("behind")
    if not member or behind is None:
        return ""
    return f"; {nodes.readable(str(member))} {behind} entries behind"


def _group(view: Mapping[str, Any], gid: str) -> Mapping[str, Any] | None:
    groups = view.get("raft_moves", {}).get("groups", {})
    found = groups.get(gid) if isinstance(groups, Mapping) else None
    return found if isinstance(found, Mapping) else None


# ---------------------------------------------------------------------- who is who
@dataclass(frozen=True)
class _Nodes:
    raft: Mapping[str, str]  # node id → its Raft address

    @staticmethod
    def of(views: Mapping[str, View]) -> _Nodes:
        raft: dict[str, str] = {}
        for view in _answers(views):
            for m in view.get("members", ()):
                raft.setdefault(str(m.get("id")), str(m.get("raft")))
        return _Nodes(raft)

    def leads(self, node: str, gid: str, views: Mapping[str, View]) -> bool:
        view = views.get(node)
        if not isinstance(view, Mapping):
            return False
        leader = view.get("raft_groups", {}).get(gid, {}).get("leader")
        return leader is not None and leader == self.raft.get(node)

    def readable(self, text: str) -> str:
        """`text` with each member's Raft address replaced by its id."""
        ids = {addr: node for node, addr in self.raft.items()}
        return _ADDRESS.sub(lambda m: ids.get(m.group(0), m.group(0)), text)


# ---------------------------------------------------------------------- rates
def _rated(status: Status, since: Sample) -> Status:
    dt = status.at - since.at
    if since.plan_id != status.plan_id or dt <= 0:
        return status
    moves_per_s = max(0, status.moves_done - since.moves_done) / dt
    keys_per_s = (status.keys - since.keys) / dt if status.keys >= since.keys else None
    bytes_per_s = (status.bytes - since.bytes) / dt if status.bytes >= since.bytes else None
    eta = status.moves_pending / moves_per_s if moves_per_s > 0 else None
    moves = tuple(_move_rate(m, since, dt) for m in status.moves)
    return replace(
        status,
        moves=moves,
        moves_per_s=moves_per_s,
        keys_per_s=keys_per_s,
        bytes_per_s=bytes_per_s,
        eta_s=eta,
    )


def _move_rate(move: MoveStatus, since: Sample, dt: float) -> MoveStatus:
    before = since.per_move.get(move.id)
    if move.keys is None or before is None or move.keys < before:
        return move
    return replace(move, keys_per_s=(move.keys - before) / dt)


# ---------------------------------------------------------------------- helpers
def _answers(views: Mapping[str, View]) -> Iterable[Mapping[str, Any]]:
    return (v for v in views.values() if isinstance(v, Mapping))


def _named_answers(views: Mapping[str, View]) -> Sequence[tuple[str, Mapping[str, Any]]]:
    return [(n, v) for n, v in views.items() if isinstance(v, Mapping)]


def _same(transfer: Mapping[str, Any], move: MoveStatus) -> bool:
    key = (transfer.get("mode"), transfer.get("replication"), transfer.get("partition"))
    return key == move.id


def _keys(transfer: Mapping[str, Any]) -> int:
    return int(transfer.get("keys_copied", 0)) + int(transfer.get("keys_repaired", 0))


def _bytes(transfer: Mapping[str, Any]) -> int:
    return int(transfer.get("bytes_copied", 0))


def _id_wire(move: MoveStatus) -> dict[str, Any]:
    return {"mode": move.mode, "replication": move.replication, "partition": move.partition}
