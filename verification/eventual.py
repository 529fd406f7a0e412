"""Eventual-mode verification (issue 3 item 3): what an eventual keyspace promises, checked.

Workload (`record_eventual`, the I/O shell around the pure `next_eventual_op`): concurrent
clients on a few keys, each value unique, doing

- ``read``: GET (default R); records the live values (siblings) and the context returned;
- ``write``: a blind PUT (no context) - it supersedes nothing (Dynamo §4.4);
- ``rmw``: read-modify-write - a GET, then a PUT carrying that GET's context;
- ``update``: a PUT carrying the context this client's last acknowledged PUT of the key
  returned (the coordinator returns the sent context plus the new dot, so it supersedes
  exactly that write).

A write records the context it sent and the op it came from (``context_from``), and the
context returned. After healing, every key is read once more (``final`` ops, R = N).

Checks (pure):

- **no acknowledged write lost** (`check_lost_writes`): every ok PUT's value is in the
  final read of its key, or was *superseded*: some effective later PUT sent a context
  obtained from an op that returned it (a read that saw it, or its own PUT's reply). A
  PUT is effective if it was acknowledged, or its outcome is unknown and its value was
  observed by some read (observed ⇒ applied).
- **no phantom value** (`check_phantoms`): every value read was written by some client,
  by a write that did not certainly fail, and was not read before that write was called.
- **replica convergence** (`check_convergence`): after healing and a read pass (read
  repair; anti-entropy is a later issue), each key's replicas hold the same versions -
  same dots, values and tombstone flags - as `GET /v1/admin/replica/{ks}/{key}` reports.
- **staleness** (`probe_staleness`, `staleness_curve`): Probabilistically Bounded
  Staleness (Bailis et al., VLDB 2012) measured, not modelled - the fraction of reads
  issued t ms after a write's acknowledgment that return it, for R=1 and R=quorum.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from kv.errors import KeyNotFound, KvError, UnknownOutcome
from verification.checker import Verdict
from verification.history import Outcome

EKind = Literal["read", "write", "final"]
EVENTUAL_MIX: dict[str, float] = {"read": 0.3, "write": 0.15, "rmw": 0.4, "update": 0.15}
PLANNED_KINDS = frozenset(EVENTUAL_MIX)
DEFAULT_DELAYS_MS: tuple[float, ...] = (0, 1, 2, 5, 10, 20, 50)
_SHOWN = 5  # offending ops quoted in a finding


@dataclass(frozen=True)
class EventualOp:
    id: int
    process: int  # client id; a client that saw "unknown" continues under a new one
    kind: EKind
    key: str
    call: float  # monotonic seconds
    ret: float | None  # None iff outcome == "unknown"
    outcome: Outcome
    value: Any = None  # write: the value written
    values: tuple[Any, ...] = ()  # ok read/final: the live values returned; () = absent
    context_sent: str | None = None  # write: the context sent (None: a blind write)
    context_from: int | None = None  # write: id of the ok op whose returned context was sent
    context: str | None = None  # ok read/final/write: the context returned

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["values"] = list(self.values)
        return d


def describe(op: EventualOp) -> str:
    """One line, e.g. ``#7 p2 write k1 'p2-5' ctx<-#6 -> ok [3.000, 3.004]``."""
    ret = "inf" if op.ret is None else f"{op.ret:.3f}"
    if op.kind == "write":
        src = "blind" if op.context_from is None else f"ctx<-#{op.context_from}"
        args = f" {op.value!r} {src}"
    else:
        args = ""
    result: str = op.outcome
    if op.kind != "write" and op.outcome == "ok":
        result = f"ok {list(op.values)!r}"
    return f"#{op.id} p{op.process} {op.kind} {op.key}{args} -> {result} [{op.call:.3f}, {ret}]"


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------------- workload (pure)
@dataclass(frozen=True)
class EPlanned:
    kind: str  # one of PLANNED_KINDS
    key: str


def next_eventual_op(rng: random.Random, keys: Sequence[str], mix: Mapping[str, float]) -> EPlanned:
    """Pure: the next operation of one client."""
    kind = rng.choices(list(mix), weights=list(mix.values()))[0]
    return EPlanned(kind, rng.choice(list(keys)))


@dataclass(frozen=True)
class EventualConfig:
    keyspace: str
    keys: Sequence[str]
    clients: int = 8
    duration_s: float = 10.0
    seed: int = 0
    mix: Mapping[str, float] = field(default_factory=lambda: dict(EVENTUAL_MIX))
    timeout_ms: int = 2000


class EventualClient(Protocol):
    """The part of `kv.client.KvClient` this module uses (a fake in unit tests)."""

    async def get(
        self, ks: str, key: str, *, node: str | None = None, **query: Any
    ) -> dict[str, Any]: ...

    async def put(
        self,
        ks: str,
        key: str,
        value: Any,
        *,
        context: str | None = None,
        node: str | None = None,
        **query: Any,
    ) -> dict[str, Any]: ...

    async def replica(self, ks: str, key: str, node: str) -> dict[str, Any]: ...


class Ids:
    """Op ids and process ids, unique within one history (shared by all clients)."""

    def __init__(self, first_op: int = 1) -> None:
        self._ops = itertools.count(first_op)
        self._processes = itertools.count(1)

    def op(self) -> int:
        return next(self._ops)

    def process(self) -> int:
        return next(self._processes)


# ---------------------------------------------------------------------- workload (I/O)
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


async def record_eventual(
    client: EventualClient,
    cfg: EventualConfig,
    clock: Clock = time.monotonic,
    ids: Ids | None = None,
) -> list[EventualOp]:
    """Run `cfg.clients` concurrent clients for `cfg.duration_s` (mix: EVENTUAL_MIX kinds)."""
    unknown = sorted(set(cfg.mix) - PLANNED_KINDS)
    if unknown:
        raise ValueError(f"mix: unknown kinds {unknown} (eventual kinds: {sorted(PLANNED_KINDS)})")
    history: list[EventualOp] = []
    ids = ids or Ids()
    deadline = clock() + cfg.duration_s
    rngs = [random.Random(f"{cfg.seed}/eventual/{i}") for i in range(cfg.clients)]
    await asyncio.gather(
        *(_client(client, cfg, rng, ids, history, deadline, clock) for rng in rngs)
    )
    return history


@dataclass
class _Session:
    """One client's identity and what it carries between operations."""

    client: EventualClient
    cfg: EventualConfig
    ids: Ids
    clock: Clock
    process: int = 0
    last_write: dict[str, EventualOp] = field(default_factory=dict)  # key -> last ok PUT


async def _client(
    client: EventualClient,
    cfg: EventualConfig,
    rng: random.Random,
    ids: Ids,
    history: list[EventualOp],
    deadline: float,
    clock: Clock,
) -> None:
    s = _Session(client, cfg, ids, clock, ids.process())
    n = 0
    while clock() < deadline:
        n += 1
        plan = next_eventual_op(rng, cfg.keys, cfg.mix)
        for op in await _perform(s, plan, f"p{s.process}-{n}"):
            history.append(op)
            if op.outcome == "unknown":
                s.process = ids.process()
            elif op.kind == "write" and op.outcome == "ok":
                s.last_write[op.key] = op


async def _perform(s: _Session, plan: EPlanned, value: str) -> list[EventualOp]:
    if plan.kind == "read":
        return [await read_op(s.client, s.cfg, plan.key, s.ids.op(), s.process, s.clock)]
    if plan.kind == "write":
        return [await _write(s, plan.key, value, None)]
    if plan.kind == "update":
        return [await _write(s, plan.key, value, s.last_write.get(plan.key))]
    seen = await read_op(s.client, s.cfg, plan.key, s.ids.op(), s.process, s.clock)
    if seen.outcome != "ok":
        return [seen]
    return [seen, await _write(s, plan.key, value, seen)]


async def read_op(
    client: EventualClient,
    cfg: EventualConfig,
    key: str,
    op_id: int,
    process: int,
    clock: Clock,
    *,
    kind: EKind = "read",
    r: int | None = None,
) -> EventualOp:
    """One GET as an op; a 404 is an ok read of nothing (it still carries a context)."""
    call = clock()
    base: dict[str, Any] = dict(id=op_id, process=process, kind=kind, key=key, call=call)
    try:
        reply = await client.get(cfg.keyspace, key, r=r, timeout_ms=cfg.timeout_ms)
    except KeyNotFound as exc:
        return EventualOp(**base, ret=clock(), outcome="ok", context=exc.details.get("context"))
    except (UnknownOutcome, TimeoutError):
        return EventualOp(**base, ret=None, outcome="unknown")
    except KvError:
        return EventualOp(**base, ret=clock(), outcome="fail")
    values = tuple(reply["siblings"]) if "siblings" in reply else (reply.get("value"),)
    return EventualOp(
        **base, ret=clock(), outcome="ok", values=values, context=reply.get("context")
    )


async def _write(s: _Session, key: str, value: Any, source: EventualOp | None) -> EventualOp:
    sent = source.context if source is not None else None
    base: dict[str, Any] = dict(
        id=s.ids.op(),
        process=s.process,
        kind="write",
        key=key,
        value=value,
        context_sent=sent,
        context_from=source.id if source is not None and sent is not None else None,
    )
    base["call"] = s.clock()
    try:
        reply = await s.client.put(
            s.cfg.keyspace, key, value, context=sent, timeout_ms=s.cfg.timeout_ms
        )
    except (UnknownOutcome, TimeoutError):
        return EventualOp(**base, ret=None, outcome="unknown")
    except KvError:  # 503 quorum_unavailable, 409 sibling_limit, ...: certainly not applied
        return EventualOp(**base, ret=s.clock(), outcome="fail")
    return EventualOp(**base, ret=s.clock(), outcome="ok", context=reply.get("context"))


async def final_reads(
    client: EventualClient, cfg: EventualConfig, ids: Ids, r: int, clock: Clock = time.monotonic
) -> list[EventualOp]:
    """One read per key with R=`r` after healing: the state the lost-write check compares."""
    return list(
        await asyncio.gather(
            *(read_op(client, cfg, key, ids.op(), 0, clock, kind="final", r=r) for key in cfg.keys)
        )
    )


# ---------------------------------------------------------------------- checks (pure)
@dataclass(frozen=True)
class Finding:
    check: str
    verdict: Verdict
    message: str
    examples: tuple[str, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "message": self.message,
            "examples": list(self.examples),
            "counts": dict(self.counts),
        }


Item = tuple[str, str]  # (key, canonical value)


def _reads(history: Iterable[EventualOp]) -> Iterable[EventualOp]:
    return (op for op in history if op.kind != "write" and op.outcome == "ok")


def _observed(history: Sequence[EventualOp]) -> set[Item]:
    return {(op.key, canonical(v)) for op in _reads(history) for v in op.values}


def _covered(op: EventualOp | None) -> set[Item]:
    """Values a context obtained from `op` includes, directly: what a read returned, or the
    value a PUT wrote (its own ancestors are superseded by that PUT already)."""
    if op is None or op.outcome != "ok":
        return set()
    if op.kind == "write":
        return {(op.key, canonical(op.value))}
    return {(op.key, canonical(v)) for v in op.values}


def superseded(history: Sequence[EventualOp]) -> set[Item]:
    """Values superseded by an effective write that carried a context including them."""
    by_id = {op.id: op for op in history}
    observed = _observed(history)
    out: set[Item] = set()
    for op in history:
        if op.kind != "write" or op.context_from is None:
            continue
        effective = op.outcome == "ok" or (
            op.outcome == "unknown" and (op.key, canonical(op.value)) in observed
        )
        if effective:
            out |= _covered(by_id.get(op.context_from))
    return out


def _finals(history: Sequence[EventualOp]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for op in history:
        if op.kind == "final" and op.outcome == "ok":
            out.setdefault(op.key, set()).update(canonical(v) for v in op.values)
    return out


def check_lost_writes(history: Sequence[EventualOp]) -> Finding:
    """Every acknowledged write is in the final read of its key, or was superseded."""
    finals, gone = _finals(history), superseded(history)
    counts = {"acknowledged": 0, "present": 0, "superseded": 0, "lost": 0, "unverifiable": 0}
    lost: list[EventualOp] = []
    for op in history:
        if op.kind != "write" or op.outcome != "ok":
            continue
        counts["acknowledged"] += 1
        item = (op.key, canonical(op.value))
        if op.key not in finals:
            counts["unverifiable"] += 1
        elif item[1] in finals[op.key]:
            counts["present"] += 1
        elif item in gone:
            counts["superseded"] += 1
        else:
            counts["lost"] += 1
            lost.append(op)
    return _lost_finding(counts, lost)


def _lost_finding(counts: dict[str, int], lost: list[EventualOp]) -> Finding:
    examples = tuple(describe(op) for op in lost[:_SHOWN])
    if lost:
        msg = f"{len(lost)} of {counts['acknowledged']} acknowledged writes lost"
        return Finding("lost_writes", "violation", msg, examples, counts)
    if counts["unverifiable"]:
        msg = f"{counts['unverifiable']} acknowledged writes on keys without a final read"
        return Finding("lost_writes", "unknown", msg, (), counts)
    msg = (
        f"all {counts['acknowledged']} acknowledged writes present ({counts['present']}) "
        f"or superseded ({counts['superseded']})"
    )
    return Finding("lost_writes", "ok", msg, (), counts)


def check_phantoms(history: Sequence[EventualOp]) -> Finding:
    """Every value read was written by a client, not by a failed write, and not later."""
    writes = {(op.key, canonical(op.value)): op for op in history if op.kind == "write"}
    bad: list[str] = []
    reads = 0
    for op in _reads(history):
        reads += 1
        for v in op.values:
            why = _phantom(op, writes.get((op.key, canonical(v))))
            if why:
                bad.append(f"{describe(op)}: {v!r} {why}")
    counts = {"reads": reads, "phantoms": len(bad)}
    if bad:
        msg = f"{len(bad)} values read that no successful client write produced"
        return Finding("phantoms", "violation", msg, tuple(bad[:_SHOWN]), counts)
    return Finding("phantoms", "ok", f"every value of {reads} reads was written", (), counts)


def _phantom(read: EventualOp, write: EventualOp | None) -> str | None:
    if write is None:
        return "was never written"
    if write.outcome == "fail":
        return f"was written only by #{write.id}, which certainly failed"
    if read.ret is not None and write.call > read.ret:
        return f"was returned before its write #{write.id} was called"
    return None


Versions = Sequence[Mapping[str, Any]]  # /v1/admin/replica "versions"
ReplicaStates = Mapping[str, Mapping[str, Versions | None]]  # key -> node -> versions


def version_set(versions: Versions) -> frozenset[tuple[tuple[Any, ...], str, bool]]:
    return frozenset(
        (tuple(v["dot"]), canonical(v.get("value")), bool(v.get("deleted"))) for v in versions
    )


def diverged(states: ReplicaStates) -> list[str]:
    """Keys whose replicas do not all hold the same versions (None: a replica unreadable)."""
    out = []
    for key in sorted(states):
        per_node = states[key].values()
        if any(v is None for v in per_node) or len({version_set(v or ()) for v in per_node}) > 1:
            out.append(key)
    return out


def check_convergence(states: ReplicaStates) -> Finding:
    bad = diverged(states)
    counts = {"keys": len(states), "diverged": len(bad)}
    if bad:
        examples = tuple(_show_replicas(k, states[k]) for k in bad[:_SHOWN])
        msg = f"{len(bad)} of {len(states)} keys still differ between replicas"
        return Finding("convergence", "violation", msg, examples, counts)
    return Finding(
        "convergence", "ok", f"all {len(states)} keys identical on every replica", (), counts
    )


def _show_replicas(key: str, per_node: Mapping[str, Versions | None]) -> str:
    parts = []
    for node in sorted(per_node):
        vs = per_node[node]
        shown = "unreadable" if vs is None else sorted((tuple(d), v) for d, v, _ in version_set(vs))
        parts.append(f"{node}={shown}")
    return f"{key}: " + " ".join(parts)


# ---------------------------------------------------------------------- convergence (I/O)
async def converge(
    client: EventualClient,
    keyspace: str,
    keys: Sequence[str],
    address_of: Mapping[str, str],
    r: int,
    deadline_s: float,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
) -> dict[str, dict[str, Versions | None]]:
    """Read every key with R=`r` (read repair), then compare its replicas; repeat for the
    keys that differ until none do or `deadline_s` passes. Returns the last states seen."""
    end = clock() + deadline_s
    states: dict[str, dict[str, Versions | None]] = {}
    pending = list(keys)
    while True:
        await asyncio.gather(*(_repair_read(client, keyspace, k, r) for k in pending))
        for key in pending:
            states[key] = await replica_states(client, keyspace, key, address_of)
        pending = diverged({k: states[k] for k in pending})
        if not pending or clock() >= end:
            return states
        await sleep(0.2)


async def _repair_read(client: EventualClient, keyspace: str, key: str, r: int) -> None:
    try:
        await client.get(keyspace, key, r=r)
    except KvError:
        pass  # absent, or a replica still missing: the replica comparison will tell


async def replica_states(
    client: EventualClient, keyspace: str, key: str, address_of: Mapping[str, str]
) -> dict[str, Versions | None]:
    """Each replica's local versions of `key` (None where a replica does not answer)."""
    replicas: list[str] = []
    for address in address_of.values():
        try:
            replicas = list((await client.replica(keyspace, key, address))["replicas"])
            break
        except Exception:  # noqa: BLE001 - a node that does not answer: ask the next one
            continue
    states = await asyncio.gather(
        *(_local(client, keyspace, key, address_of.get(n)) for n in replicas)
    )
    return dict(zip(replicas, states, strict=True))


async def _local(
    client: EventualClient, keyspace: str, key: str, address: str | None
) -> Versions | None:
    if address is None:
        return None
    try:
        return list((await client.replica(keyspace, key, address))["versions"])
    except Exception:  # noqa: BLE001 - unreadable replica: reported as diverged
        return None


# ---------------------------------------------------------------------- staleness (pure)
@dataclass(frozen=True)
class Sample:
    delay_ms: float  # planned delay between the write's acknowledgment and the read
    r: int
    fresh: bool  # the read returned the acknowledged value


@dataclass(frozen=True)
class CurvePoint:
    delay_ms: float
    r: int
    trials: int
    fresh: int

    @property
    def fraction(self) -> float | None:
        return self.fresh / self.trials if self.trials else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fraction": self.fraction}


def probe_order(
    rng: random.Random, delays_ms: Sequence[float], rs: Sequence[int]
) -> list[tuple[float, int]]:
    """One round of trials: every (delay, r) once, in a seeded random order."""
    order = [(d, r) for d in delays_ms for r in rs]
    rng.shuffle(order)
    return order


def staleness_curve(
    samples: Iterable[Sample], delays_ms: Sequence[float], rs: Sequence[int]
) -> list[CurvePoint]:
    trials: dict[tuple[float, int], list[int]] = {(d, r): [0, 0] for d in delays_ms for r in rs}
    for s in samples:
        cell = trials.setdefault((s.delay_ms, s.r), [0, 0])
        cell[0] += 1
        cell[1] += int(s.fresh)
    return [CurvePoint(d, r, n, f) for (d, r), (n, f) in sorted(trials.items())]


def format_curve(points: Sequence[CurvePoint]) -> str:
    """The staleness curve as a text table: P(read returns the write | t ms after its ack)."""
    rs = sorted({p.r for p in points})
    cells = {(p.delay_ms, p.r): p for p in points}
    header = "t (ms)  " + "".join(f"{'R=' + str(r):>18}" for r in rs)
    lines = [header]
    for d in sorted({p.delay_ms for p in points}):
        row = f"{d:>6g}  "
        for r in rs:
            p = cells.get((d, r))
            frac = p.fraction if p is not None else None
            row += f"{'-' if frac is None else f'{frac:.3f}':>10} (n={p.trials if p else 0:>4})"
        lines.append(row)
    return "\n".join(lines)


# ---------------------------------------------------------------------- staleness (I/O)
@dataclass
class ProbeResult:
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0  # trials abandoned: a write or read that failed or timed out


async def probe_staleness(
    client: EventualClient,
    keyspace: str,
    nodes: Sequence[str],
    duration_s: float,
    *,
    key_prefix: str,
    rs: Sequence[int] = (1, 2),
    delays_ms: Sequence[float] = DEFAULT_DELAYS_MS,
    seed: int = 0,
    tasks: int = 4,
    timeout_ms: int = 2000,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
) -> ProbeResult:
    """Write-then-read-after-delay trials on dedicated keys (one per task) for `duration_s`.

    Each trial writes a fresh value through a random node (with the context of the task's
    previous write, so no siblings pile up), waits t ms after the acknowledgment, and reads
    with R=r through a random node: fresh iff the value is among those returned.
    """
    result = ProbeResult()
    deadline = clock() + duration_s
    probes = [
        _Probe(client, keyspace, f"{key_prefix}{i}", list(nodes), timeout_ms, clock, sleep)
        for i in range(tasks)
    ]
    await asyncio.gather(
        *(
            p.run(random.Random(f"{seed}/pbs/{i}"), delays_ms, rs, deadline, result)
            for i, p in enumerate(probes)
        )
    )
    return result


@dataclass
class _Probe:
    client: EventualClient
    keyspace: str
    key: str
    nodes: list[str]
    timeout_ms: int
    clock: Clock
    sleep: Sleep
    context: str | None = None
    resync: bool = False
    n: int = 0

    async def run(
        self,
        rng: random.Random,
        delays_ms: Sequence[float],
        rs: Sequence[int],
        deadline: float,
        out: ProbeResult,
    ) -> None:
        while self.clock() < deadline:
            for delay, r in probe_order(rng, delays_ms, rs):
                if self.clock() >= deadline:
                    return
                fresh = await self.trial(rng, delay, r)
                if fresh is None:
                    out.errors += 1
                else:
                    out.samples.append(Sample(delay, r, fresh))

    async def trial(self, rng: random.Random, delay_ms: float, r: int) -> bool | None:
        self.n += 1
        value = f"{self.key}-{self.n}"
        if self.resync:
            await self._resync(rng)
        try:
            node = rng.choice(self.nodes)
            reply = await self.client.put(
                self.keyspace,
                self.key,
                value,
                context=self.context,
                node=node,
                timeout_ms=self.timeout_ms,
            )
        except KvError:
            self.resync = True  # an unknown write may still land: re-read the context
            return None
        self.context = reply.get("context")
        if delay_ms > 0:
            await self.sleep(delay_ms / 1000.0)  # from the acknowledgment (PBS's t)
        return await self._read_has(rng, value, r)

    async def _read_has(self, rng: random.Random, value: str, r: int) -> bool | None:
        try:
            got = await self.client.get(
                self.keyspace,
                self.key,
                r=r,
                node=rng.choice(self.nodes),
                timeout_ms=self.timeout_ms,
            )
        except KeyNotFound:
            return False
        except KvError:
            return None
        values = got["siblings"] if "siblings" in got else [got.get("value")]
        return value in values

    async def _resync(self, rng: random.Random) -> None:
        try:
            got = await self.client.get(self.keyspace, self.key, node=rng.choice(self.nodes))
            self.context, self.resync = got.get("context"), False
        except KeyNotFound as exc:
            self.context, self.resync = exc.details.get("context"), False
        except KvError:
            pass
