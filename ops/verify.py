"""Jepsen-style verification of one keyspace of a kv cluster under faults (docs/verify.md).

    ops/verify --keyspace KS [--consistency linearizable|eventual] [--duration 30]
               [--clients 8] [--keys 8] [--faults kill,pause,partition] [--seed N]
               [--stale-reads] [--dir DIR] [--report OUT.json] [--timeline OUT.html]

Without --dir it starts a private 3-node cluster through ops/cluster (ops/localcluster.py)
and always stops it (with `up --netns` when partitions are asked for: one network namespace
per node, root needed, docs/netns.md; where that is impossible the partition faults are
skipped with a "partition skipped: <reason>" line and the other faults still run). With
--dir, partitions need a cluster started with `ops/cluster up --netns`.
It creates the keyspace if missing, records a history of concurrent clients while a seeded
fault plan (verification/faults.py) kills, pauses and partitions nodes, heals the cluster,
then checks:
linearizable -> the linearizability checker (verification/checker.py); eventual -> lost
acknowledged writes, phantom values, replica convergence and the staleness curve
(verification/eventual.py). It prints a verdict per check and writes a JSON report and a
self-contained HTML timeline.

Exit status: 0 every check passed; 1 a violation; 2 a check was inconclusive ("unknown");
3 the run itself failed (cluster would not start, keyspace mismatch, ...); 64 bad usage;
130 interrupted (SIGINT/SIGTERM: faults are undone and a private cluster is stopped).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

# run as `python ops/verify.py`, sys.path[0] is ops/: the repository root holds `ops` and
# `verification` (not installed: the runtime package does not ship them)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kv.client import KvClient
from kv.errors import KeyspaceNotFound, KvError
from ops.localcluster import LocalCluster, NetnsRefused
from verification import eventual
from verification.checker import check
from verification.faults import (
    AppliedFault,
    FaultStep,
    PlanShape,
    plan_faults,
    run_faults,
)
from verification.history import describe, op_to_dict
from verification.recorder import RecorderConfig, record

KNOWN_FAULTS = ("kill", "pause", "partition")
LIN_MIX_KINDS = ("read", "write", "cas", "delete")
EXIT_OK, EXIT_VIOLATION, EXIT_UNKNOWN, EXIT_ERROR, EXIT_USAGE = 0, 1, 2, 3, 64
EXIT_INTERRUPTED = 130
CONVERGE_DEADLINE_S = 30.0
HEAL_DEADLINE_S = 90.0
NETNS_BUSY_WAIT_S = 60.0  # a private --netns cluster waits this long for 10.77.0.0/24


class SetupError(Exception):
    """The run could not be performed (as opposed to a check that failed)."""


# ---------------------------------------------------------------------- command line
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # exit 2 is reserved for "unknown"
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = _Parser(
        prog="ops/verify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--keyspace", required=True)
    p.add_argument("--consistency", choices=("linearizable", "eventual"))
    p.add_argument("--duration", type=float, default=30.0, help="seconds of workload")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--keys", type=int, default=8)
    p.add_argument("--faults", default="kill,pause", help="comma-separated: kill,pause,partition")
    p.add_argument("--seed", type=int, help="seed of the workload and fault plan (printed)")
    p.add_argument("--stale-reads", action="store_true", help="negative control (linearizable)")
    p.add_argument("--dir", help="an ops/cluster directory (default: start a private cluster)")
    p.add_argument("--report", help="JSON report path")
    p.add_argument("--timeline", help="HTML timeline path")
    p.add_argument("--history", help="write the recorded history (JSON) here")
    p.add_argument("--mix", help="op weights, e.g. read=0.3,write=0.15,rmw=0.4,update=0.15")
    p.add_argument("--check-time", type=float, default=60.0, help="checker time limit (s)")
    p.add_argument("--keep", action="store_true", help="keep the private cluster's directory")
    a = p.parse_args(argv)
    a.fault_kinds, a.skipped_faults = parse_faults(p, a.faults)
    a.mix = parse_mix(p, a.mix)
    if a.duration <= 0 or a.clients < 1 or a.keys < 1:
        p.error("--duration, --clients and --keys must be positive")
    if a.stale_reads and a.consistency == "eventual":
        p.error("--stale-reads applies to linearizable keyspaces")
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 31)
    return a


def parse_faults(p: argparse.ArgumentParser, spec: str) -> tuple[list[str], list[dict[str, str]]]:
    """The fault kinds asked for, and the (initially empty) list of skipped kinds: whether
    `partition` can run is known only once the cluster is (see cluster_for)."""
    kinds = [k.strip() for k in spec.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KNOWN_FAULTS]
    if unknown:
        p.error(f"--faults: unknown kind(s) {unknown} (known: {', '.join(KNOWN_FAULTS)})")
    return list(dict.fromkeys(kinds)), []


def skip_partition(args: argparse.Namespace, reason: str) -> None:
    """Run without partition faults; the reason is printed now and in the report."""
    reason = " ".join(reason.split())  # one line
    print(f"partition skipped: {reason}", file=sys.stderr)
    args.fault_kinds = [k for k in args.fault_kinds if k != "partition"]
    args.skipped_faults.append({"kind": "partition", "reason": reason})


def parse_mix(p: argparse.ArgumentParser, spec: str | None) -> dict[str, float] | None:
    if not spec:
        return None
    mix: dict[str, float] = {}
    for part in spec.split(","):
        kind, _, weight = part.partition("=")
        try:
            mix[kind.strip()] = float(weight)
        except ValueError:
            p.error(f"--mix: {part!r} is not kind=weight")
    if not any(w > 0 for w in mix.values()) or any(w < 0 for w in mix.values()):
        p.error("--mix: weights must be >= 0 and not all 0")
    return mix


def check_mix(mix: dict[str, float] | None, consistency: str) -> None:
    kinds = set(LIN_MIX_KINDS if consistency == "linearizable" else eventual.PLANNED_KINDS)
    if mix and not set(mix) <= kinds:
        raise SetupError(f"--mix: {consistency} kinds are {sorted(kinds)}, got {sorted(mix)}")


# ---------------------------------------------------------------------- cluster
def healthy_addresses(cluster: LocalCluster) -> dict[str, str]:
    """node id -> HTTP address; every node must be up, so the faults start from health."""
    nodes = cluster.status()
    sick = [n["id"] for n in nodes if not n["healthy"]]
    if sick:
        raise SetupError(f"node(s) {sick} not healthy: ops/verify needs every node up")
    return {n["id"]: n["http"] for n in nodes}


@contextmanager
def cluster_for(args: argparse.Namespace) -> Iterator[LocalCluster]:
    """The cluster of --dir (never stopped here), else a private one that is always
    stopped: `up --netns` when partitions are asked for, loopback when that is refused."""
    if args.dir:
        cluster = LocalCluster(args.dir)
        cluster.status()
        if "partition" in args.fault_kinds and cluster.netns_status is None:
            skip_partition(
                args,
                f"the cluster in {cluster.dir} was not started with `ops/cluster up --netns` "
                "(partitions need one network namespace per node, docs/netns.md)",
            )
        yield cluster
        return
    cluster = _private(args, netns="partition" in args.fault_kinds)
    try:
        try:
            _start(cluster)
        except NetnsRefused as exc:
            skip_partition(args, exc.reason)
            stop_private(cluster, keep=False)  # whatever the refused `up --netns` recorded
            cluster = _private(args, netns=False)
            _start(cluster)
        yield cluster
    finally:
        stop_private(cluster, keep=args.keep)


def _private(args: argparse.Namespace, netns: bool) -> LocalCluster:
    return LocalCluster(n=3, netns=netns, prefix="kv-verify-", keep=args.keep)


def _start(cluster: LocalCluster) -> None:
    kind = "--netns cluster" if cluster.netns else "cluster"
    say(f"starting a private 3-node {kind} in {cluster.dir} (base port {cluster.base_port})")
    cluster.up(busy_wait_s=NETNS_BUSY_WAIT_S, say=say)


def say(line: str) -> None:
    print(line, file=sys.stderr)


def restore(cluster: LocalCluster) -> None:
    """After the faults: no partition rule, every node running, resumed and healthy."""
    try:
        cluster.restore(HEAL_DEADLINE_S)
    except TimeoutError as exc:
        raise SetupError(str(exc)) from None


def stop_private(cluster: LocalCluster, keep: bool) -> None:
    """ops/cluster down and cleanup, then SIGKILL for any node process left (LocalCluster.
    down). If parts of the run are still there, the directory is kept so that
    `ops/cluster cleanup --dir` can retry."""
    left = cluster.down(keep=keep)
    if left:
        say(
            f"ops/verify: WARNING: still present after cleanup: {', '.join(left)}; "
            f"remove them with: ops/cluster cleanup --dir {cluster.dir}"
        )
    elif keep:
        say(f"cluster data and logs kept in {cluster.dir}")


# ---------------------------------------------------------------------- keyspace & keys
async def ensure_keyspace(client: KvClient, args: argparse.Namespace) -> dict[str, Any]:
    try:
        ks: dict[str, Any] = await client.get_keyspace(args.keyspace)
    except KeyspaceNotFound:
        consistency = args.consistency or "linearizable"
        body: dict[str, Any] = {"consistency": consistency, "replication": 3}
        if consistency == "eventual":
            body.update(read_quorum=2, write_quorum=2)
        print(f"creating keyspace {args.keyspace}: {json.dumps(body)}", file=sys.stderr)
        ks = await client.create_keyspace(args.keyspace, **body)  # replies with the config
    if args.consistency and ks["consistency"] != args.consistency:
        raise SetupError(f"keyspace {args.keyspace} is {ks['consistency']}, not {args.consistency}")
    if args.stale_reads and ks["consistency"] != "linearizable":
        raise SetupError("--stale-reads applies to linearizable keyspaces")
    return ks


async def visible_everywhere(client: KvClient, name: str, addresses: Sequence[str]) -> None:
    end = time.monotonic() + 10.0
    for address in addresses:
        while True:
            try:
                await client.request("GET", f"/v1/keyspaces/{name}", idempotent=True, node=address)
                break
            except KvError:
                if time.monotonic() > end:
                    raise SetupError(f"keyspace {name} not visible on {address}") from None
                await asyncio.sleep(0.1)


async def same_group_keys(
    client: KvClient, args: argparse.Namespace, tag: str
) -> tuple[str, list[str]]:
    """`--keys` fresh keys of one Raft group, so leader faults hit every key."""
    by_group: dict[str, list[str]] = {}
    node = client.nodes[0]
    for i in range(100 * args.keys + 2000):
        key = f"verify-{tag}-{i}"
        gid = (await client.replica(args.keyspace, key, node))["group"]
        by_group.setdefault(gid, []).append(key)
        if len(by_group[gid]) == args.keys:
            return gid, by_group[gid]
    raise SetupError("no Raft group with enough keys")


def leader_chooser(
    addresses: dict[str, str], gid: str
) -> Callable[[FaultStep], Awaitable[str | None]]:
    """Targets the current leader of `gid`, as any node that answers reports it."""

    async def choose(step: FaultStep) -> str | None:
        async with KvClient(list(addresses.values()), timeout=1.0, retries=0) as probe:
            for _ in range(20):
                for address in addresses.values():
                    leader = await _leader_seen_by(probe, address, gid)
                    if leader:
                        return leader
                await asyncio.sleep(0.1)
        return None

    return choose


async def _leader_seen_by(client: KvClient, address: str, gid: str) -> str | None:
    try:
        info = await client.cluster(node=address)
    except Exception:  # noqa: BLE001 - a paused or killed node does not answer
        return None
    raft_leader = info.get("raft_groups", {}).get(gid, {}).get("leader")
    by_raft = {m["raft"]: m["id"] for m in info.get("members", [])}
    leader: str | None = by_raft.get(raft_leader)
    return leader


# ---------------------------------------------------------------------- the run
@dataclass
class Run:
    args: argparse.Namespace
    consistency: str = ""
    keys: list[str] = field(default_factory=list)
    plan: list[FaultStep] = field(default_factory=list)
    applied: list[AppliedFault] = field(default_factory=list)
    ops: list[Any] = field(default_factory=list)  # history.Op or eventual.EventualOp
    start: float = 0.0
    end: float = 0.0
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    checker_stats: dict[str, Any] | None = None
    curve: list[eventual.CurvePoint] = field(default_factory=list)
    probe_errors: int = 0
    highlight: set[int] = field(default_factory=set)
    group: str | None = None


async def verify(args: argparse.Namespace, cluster: LocalCluster) -> Run:
    run = Run(args)
    addresses = healthy_addresses(cluster)
    async with KvClient(list(addresses.values()), timeout=4.0) as client:
        ks = await ensure_keyspace(client, args)
        run.consistency = ks["consistency"]
        check_mix(args.mix, run.consistency)
        await visible_everywhere(client, args.keyspace, list(addresses.values()))
        tag = secrets.token_hex(3)  # fresh keys: the models start from "absent"
        shape = PlanShape()
        run.plan = plan_faults(
            random.Random(args.seed), sorted(addresses), args.fault_kinds, args.duration, shape
        )
        heal_by = args.duration * (1 - shape.quiet_fraction)
        if run.consistency == "linearizable":
            await _linearizable(run, client, cluster, addresses, tag, heal_by)
        else:
            await _eventual(run, client, cluster, addresses, ks, tag, heal_by)
    return run


def _actions(cluster: LocalCluster) -> dict[str, Callable[..., Awaitable[None]]]:
    """The fault executor's actions (verification.faults.run_faults), in threads."""

    def on_node(fn: Callable[[str], None]) -> Callable[..., Awaitable[None]]:
        return lambda node: asyncio.to_thread(fn, node)

    return {
        "kill": on_node(cluster.kill),
        "start": on_node(cluster.start),
        "pause": on_node(cluster.pause),
        "resume": on_node(cluster.resume),
        # args: isolate N | split A,B C (verification.faults)
        "partition": lambda node, *args: asyncio.to_thread(cluster.partition, *args),
        "heal": lambda node: asyncio.to_thread(cluster.heal),
    }


async def _faults(run: Run, cluster: LocalCluster, heal_by: float, choose: Any = None) -> None:
    run.applied = await run_faults(
        run.plan,
        _actions(cluster),
        time.monotonic,
        asyncio.sleep,
        start=run.start,
        choose=choose,
        heal_by_s=heal_by,
    )


async def _linearizable(
    run: Run,
    client: KvClient,
    cluster: LocalCluster,
    addresses: dict[str, str],
    tag: str,
    heal_by: float,
) -> None:
    args = run.args
    run.group, run.keys = await same_group_keys(client, args, tag)
    cfg = RecorderConfig(
        args.keyspace,
        run.keys,
        clients=args.clients,
        duration_s=args.duration,
        seed=args.seed,
        stale_reads=args.stale_reads,
    )
    if args.mix:
        cfg.mix = dict(args.mix)
    choose = leader_chooser(addresses, run.group)
    run.start = time.monotonic()
    history, _ = await asyncio.gather(record(client, cfg), _faults(run, cluster, heal_by, choose))
    run.end = time.monotonic()
    run.ops = history
    await asyncio.to_thread(restore, cluster)
    result = await asyncio.to_thread(check, history, time_limit_s=args.check_time)
    run.checks["linearizable"] = {
        "verdict": result.verdict,
        "message": result.message,
        "key": result.key,
        "ops_around": [describe(op) for op in result.ops_around],
    }
    run.highlight = {op.id for op in result.ops_around}
    run.checker_stats = asdict(result.stats)
    run.checks["progress"] = _progress(history)


def _progress(ops: Sequence[Any]) -> dict[str, Any]:
    """A history with no successful read or write proves nothing: "unknown", never "ok"."""
    ok = Counter(op.kind for op in ops if op.outcome == "ok")
    writes = sum(n for kind, n in ok.items() if kind not in ("read", "final"))
    if ok["read"] and writes:
        return {"verdict": "ok", "message": f"{ok['read']} ok reads, {writes} ok writes"}
    return {"verdict": "unknown", "message": f"too little progress: {dict(ok)}"}


async def _eventual(
    run: Run,
    client: KvClient,
    cluster: LocalCluster,
    addresses: dict[str, str],
    ks: dict[str, Any],
    tag: str,
    heal_by: float,
) -> None:
    args = run.args
    run.keys = [f"verify-{tag}-{i}" for i in range(args.keys)]
    cfg = eventual.EventualConfig(
        args.keyspace,
        run.keys,
        clients=args.clients,
        duration_s=args.duration,
        seed=args.seed,
        mix=args.mix or dict(eventual.EVENTUAL_MIX),
    )
    ids = eventual.Ids()
    rs = sorted({1, int(ks["read_quorum"])})
    run.start = time.monotonic()
    history, _, probe = await asyncio.gather(
        eventual.record_eventual(client, cfg, ids=ids),
        _faults(run, cluster, heal_by),
        eventual.probe_staleness(
            client,
            args.keyspace,
            list(addresses.values()),
            args.duration,
            key_prefix=f"verify-{tag}-pbs-",
            rs=rs,
            seed=args.seed,
        ),
    )
    run.end = time.monotonic()
    await asyncio.to_thread(restore, cluster)
    n = int(ks["replication"])
    states = await eventual.converge(
        client, args.keyspace, run.keys, addresses, n, CONVERGE_DEADLINE_S
    )
    run.ops = history + await eventual.final_reads(client, cfg, ids, n)
    for finding in (
        eventual.check_lost_writes(run.ops),
        eventual.check_phantoms(run.ops),
        eventual.check_convergence(states),
    ):
        run.checks[finding.check] = finding.to_dict()
    run.checks["progress"] = _progress(history)
    run.curve = eventual.staleness_curve(probe.samples, eventual.DEFAULT_DELAYS_MS, rs)
    run.probe_errors = probe.errors


# ---------------------------------------------------------------------- verdicts & report
def overall(checks: dict[str, dict[str, Any]]) -> tuple[str, int]:
    verdicts = {c["verdict"] for c in checks.values()}
    if "violation" in verdicts:
        return "violation", EXIT_VIOLATION
    if "unknown" in verdicts or not verdicts:
        return "unknown", EXIT_UNKNOWN
    return "ok", EXIT_OK


def print_verdicts(run: Run) -> None:
    print(f"\nkeyspace {run.args.keyspace} ({run.consistency}), seed={run.args.seed}")
    for s in run.args.skipped_faults:
        print(f"{s['kind']} skipped: {s['reason']}")
    for a in run.applied:
        state = f"skipped: {a.skipped}" if a.skipped else (f"error: {a.error}" if a.error else "")
        what = " ".join(a.args) if a.args else a.node
        print(f"  fault  {a.at_s:7.2f}s  {a.action:<9} {what}  {state}".rstrip())
    print(f"  ops    {dict(_counts(run.ops))}")
    for name, c in run.checks.items():
        print(f"{name:<14} {c['verdict'].upper():<10} {c['message']}")
        for line in c.get("examples", []) + c.get("ops_around", [])[:12]:
            print(f"    {line}")
    if run.curve:
        print(
            f"\nstaleness curve (P[read returns a write t ms after its ack]; "
            f"{run.probe_errors} trials abandoned):"
        )
        print(eventual.format_curve(run.curve))


def _counts(ops: Sequence[Any]) -> Counter[str]:
    return Counter(op.outcome for op in ops if op.kind != "final")


def report(
    run: Run, cluster: LocalCluster, verdict: str, code: int, elapsed: float
) -> dict[str, Any]:
    a = run.args
    config = {
        k: getattr(a, k)
        for k in ("keyspace", "duration", "clients", "keys", "faults", "stale_reads", "check_time")
    }
    return {
        "tool": "ops/verify",
        "config": {**config, "consistency": run.consistency},
        "seed": a.seed,
        "cluster": {"dir": cluster.dir, "private": cluster.private, "netns": cluster.netns_status},
        "keys": run.keys,
        "raft_group": run.group,
        "faults": {
            "kinds": a.fault_kinds,
            "skipped": a.skipped_faults,
            "plan": [asdict(s) for s in run.plan],
            "applied": [asdict(f) for f in run.applied],
        },
        "counts": dict(_counts(run.ops)),
        "counts_by_kind": {
            f"{k}/{o}": n
            for (k, o), n in sorted(Counter((op.kind, op.outcome) for op in run.ops).items())
        },
        "checks": run.checks,
        "checker_stats": run.checker_stats,
        "staleness_curve": [p.to_dict() for p in run.curve],
        "staleness_probe_errors": run.probe_errors,
        "verdict": verdict,
        "exit_code": code,
        "workload_s": run.end - run.start,
        "elapsed_s": elapsed,
    }


def write_history(path: str, run: Run) -> None:
    ops = [
        op.to_dict() if isinstance(op, eventual.EventualOp) else op_to_dict(op) for op in run.ops
    ]
    with open(path, "w") as f:
        json.dump({"consistency": run.consistency, "start": run.start, "ops": ops}, f, default=str)


# ---------------------------------------------------------------------- timeline (HTML/SVG)
COLORS = {"ok": "#2e7d32", "fail": "#c62828", "unknown": "#ef6c00"}
FAULT_COLORS = {"kill": "#757575", "pause": "#1e88e5", "partition": "#8e24aa"}
LANE_H, LANE_GAP, LEFT, TOP, WIDTH = 9, 2, 80, 46, 1400


def render_timeline(run: Run, verdict: str) -> str:
    lanes = sorted({op.process for op in run.ops})
    lane_y = {p: TOP + i * (LANE_H + LANE_GAP) for i, p in enumerate(lanes)}
    total = max([run.end - run.start] + [_rel(run, op.ret or op.call) for op in run.ops]) or 1.0
    height = TOP + len(lanes) * (LANE_H + LANE_GAP) + 30

    def x(t: float) -> float:
        return LEFT + max(t, 0.0) / total * WIDTH

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LEFT + WIDTH + 20}" '
        f'height="{height}" font-family="monospace" font-size="10">'
    ]
    parts += _svg_faults(run, x, height)
    parts += _svg_axis(total, x, height)
    for p in lanes:
        label = "final" if p == 0 else f"p{p}"
        parts.append(
            f'<text x="{LEFT - 6}" y="{lane_y[p] + LANE_H - 1}" text-anchor="end">{label}</text>'
        )
    for op in run.ops:
        parts.append(_svg_op(run, op, x, lane_y[op.process], total))
    parts.append("</svg>")
    return _html_page(run, verdict, "\n".join(parts))


def _rel(run: Run, t: float) -> float:
    return t - run.start


def _svg_op(run: Run, op: Any, x: Callable[[float], float], y: int, total: float) -> str:
    call = _rel(run, op.call)
    ret = total if op.ret is None else _rel(run, op.ret)
    width = max(x(ret) - x(call), 1.0)
    opacity = "0.55" if op.kind in ("read", "final") else "1"
    stroke = ' stroke="#000" stroke-width="1.5"' if op.id in run.highlight else ""
    desc = eventual.describe(op) if isinstance(op, eventual.EventualOp) else describe(op)
    h = LANE_H if op.outcome != "unknown" else 3  # unknown: a thin bar to the end of the run
    return (
        f'<rect x="{x(call):.1f}" y="{y + (LANE_H - h) // 2}" width="{width:.1f}" height="{h}" '
        f'fill="{COLORS[op.outcome]}" fill-opacity="{opacity}"{stroke}>'
        f"<title>{html.escape(desc)}</title></rect>"
    )


def _svg_faults(run: Run, x: Callable[[float], float], height: int) -> list[str]:
    out = []
    began: dict[int, AppliedFault] = {}
    for f in run.applied:
        if f.skipped or f.error:
            continue
        if f.action in FAULT_COLORS:  # the begin step of a window
            began[f.window] = f
            continue
        b = began.pop(f.window, None)
        if b is None:
            continue
        color = FAULT_COLORS[b.action]
        left, width = x(b.at_s), max(x(f.done_s) - x(b.at_s), 1.0)
        label = html.escape(f"{b.action} {' '.join(b.args) if b.args else b.node}")
        what = f"{label} at {b.at_s:.2f}s; {f.action} done at {f.done_s:.2f}s"
        out.append(
            f'<rect x="{left:.1f}" y="{TOP - 14}" width="{width:.1f}" '
            f'height="{height - TOP - 16}" fill="{color}" fill-opacity="0.18">'
            f"<title>{what}</title></rect>"
            f'<text x="{x(b.at_s) + 2:.1f}" y="{TOP - 4}" fill="{color}">{label}</text>'
        )
    return out


def _svg_axis(total: float, x: Callable[[float], float], height: int) -> list[str]:
    step = next(s for s in (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1e9) if total / s <= 20)
    y = height - 24
    out = [f'<line x1="{LEFT}" y1="{y}" x2="{LEFT + WIDTH}" y2="{y}" stroke="#999"/>']
    t = 0.0
    while t <= total:
        out.append(f'<text x="{x(t):.1f}" y="{height - 12}" text-anchor="middle">{t:g}s</text>')
        t += step
    return out


def _html_page(run: Run, verdict: str, svg: str) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td class='{c['verdict']}'>{c['verdict']}</td>"
        f"<td>{html.escape(c['message'])}</td></tr>"
        for n, c in run.checks.items()
    )
    legend = " ".join(f"<span style='color:{c}'>&#9632; {o}</span>" for o, c in COLORS.items())
    legend += " " + " ".join(
        f"<span style='color:{c}'>&#9633; {k} window</span>" for k, c in FAULT_COLORS.items()
    )
    title = f"ops/verify {run.args.keyspace} ({run.consistency}) seed={run.args.seed}: {verdict}"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:16px}} td{{padding:2px 10px}}
.ok{{color:#2e7d32}} .violation{{color:#c62828;font-weight:bold}} .unknown{{color:#ef6c00}}
</style></head><body>
<h2>{html.escape(title)}</h2>
<table>{rows}</table>
<p>One lane per client process (a client that saw an unknown outcome continues in a new
lane). Bars span call to return; an unknown op is a thin bar to the end (it may take effect
at any time); reads are lighter; outlined ops are the ones around a violation.<br>{legend}</p>
{svg}
</body></html>
"""


# ---------------------------------------------------------------------- main
def _raise_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM acts as SIGINT: inside asyncio.run that cancels the main task (so every fault
    window is ended by run_faults' `finally`) and asyncio.run raises KeyboardInterrupt;
    elsewhere KeyboardInterrupt is raised here. Raising from an arbitrary point of the event
    loop instead would land in whichever task happens to run."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signum, frame)
    else:  # SIGINT ignored (a background job of a shell): SIGTERM must still stop the run
        raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"ops/verify seed={args.seed} (rerun with --seed {args.seed})", file=sys.stderr)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # stop the cluster on SIGTERM too
    started = time.monotonic()
    try:
        with cluster_for(args) as cluster:
            run = asyncio.run(verify(args, cluster))
    except (SetupError, RuntimeError, KvError, subprocess.TimeoutExpired) as exc:
        print(f"ops/verify: the run failed: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("ops/verify: interrupted; the cluster was healed or stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    verdict, code = overall(run.checks)
    print_verdicts(run)
    print(f"\nverdict: {verdict}")
    doc = report(run, cluster, verdict, code, time.monotonic() - started)
    if args.report:
        with open(args.report, "w") as f:
            json.dump(doc, f, indent=2, default=str)
    if args.timeline:
        with open(args.timeline, "w") as f:
            f.write(render_timeline(run, verdict))
    if args.history:
        write_history(args.history, run)
    return code


if __name__ == "__main__":
    sys.exit(main())
