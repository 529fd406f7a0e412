"""Anti-entropy cost on real node processes (issue 5; docs/anti_entropy.md, "Measured on
real nodes"). Like every ops/ tool it talks to the nodes through the HTTP API only.

    ops/ae_measure [--keys 20000] [--diverged 100] [--runs N:D,N:D,...] [--value-size 100]
                   [--interval S] [--deadline 300] [--seed 0] [--concurrency 32] [--json OUT]

One run (a fresh private cluster each time, ops/localcluster.py; always stopped and
removed at the end):

1. A 3-node cluster on free ports below 32768 and an eventual keyspace with N=3, R=W=2.
   Every node is a primary of every key (3 nodes, N=3), so a write has no fallback and
   leaves no hint: a replica that missed it is repaired only by anti-entropy (no client
   reads the keys, so no read repair either). The keyspace uid is the metadata epoch once
   all three nodes report the same one (the creation is the only change after the
   bootstrap, kv/meta.py); only the in-process model below uses it.
2. Preload through the API, `concurrency` requests in flight: every key with w=3 (all three
   replicas acknowledge), except the "missing" half of the DIVERGED chosen keys; the
   "stale" half get an older value first. n3's versions of the stale keys are read back
   (`/v1/admin/replica`).
3. `ops/cluster kill n3`; through n1 and n2 (w=2): write the missing keys, and overwrite
   each stale key with the context of its first write, which supersedes the old value.
   No hint may be pending (`/v1/cluster` "hinted_handoff"). Read n1's versions of every
   key, and n2's of the diverged ones: those must agree, they are what n3 must end with.
4. Model, in process with the nodes' own Merkle code over in-memory replicas built from
   those reads: one sweep of n3 (as it was before the kill) against n1 over every
   partition - a deterministic cross-check of the live counters.
5. `ops/cluster down`, `up` again (every process new, so the counters cover exactly the
   time since the restart); poll n3's replica-local state (`/v1/admin/replica`) of the
   diverged keys until every one equals n1's; then read each node's `/v1/cluster`
   anti_entropy counters. Bytes are shown only when the nodes expose them
   (`bytes_transferred`, `bytes_repaired`); otherwise "n/a".

Through HTTP the preload writes ~700 keys/s on a 2-core machine: 20,000 keys take ~30 s,
100,000 keys ~2.5 min (docs/anti_entropy.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

# run as `python ops/ae_measure.py`, sys.path[0] is ops/: the repository root holds `ops`
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dynamo_mode import merkle, merkle_diff, siblings
from dynamo_mode.anti_entropy import AntiEntropy
from dynamo_mode.messages import TreeAnswer, TreeQuery
from dynamo_mode.replica import DynamoReplica, KeyRef, decode_versions, encode_versions
from kv.client import KvClient
from kv.memory import MemoryEngine
from ops.localcluster import LocalCluster

NODES = ("n1", "n2", "n3")
DIVERGED_NODE = "n3"
BUDGET: int = AntiEntropy.budget  # keys repaired per exchange: the nodes' default
CONCURRENCY = 32  # API requests in flight during the preload and the reads
# counters summed over the nodes' /v1/cluster "anti_entropy" sections, when exposed
COUNTERS = (
    "exchanges",
    "keys_differing",
    "keys_repaired",
    "queries",
    "hashes",
    "bytes_transferred",
    "bytes_repaired",
)
T = TypeVar("T")
Wire = list[dict[str, Any]]  # a version set as /v1/admin/replica returns it


# ---------------------------------------------------------------------- results


@dataclass
class Model:
    """One offline sweep: n3 drives an exchange with n1 for every partition once."""

    differing: int = 0
    queries: int = 0
    hashes: int = 0
    walk_bytes: int = 0  # merkle DiffStats.bytes_transferred (what the nodes count)
    repair_bytes: int = 0  # len(str(merged wire)) per repaired key (what the nodes count)
    json_bytes: int = 0  # every request and reply body of the sweep, compact JSON

    @property
    def payload_bytes(self) -> int:
        return self.walk_bytes + self.repair_bytes


@dataclass
class Result:
    keys: int
    diverged: int
    value_size: int
    uid: int
    data_bytes: int  # what n1 stores for the keyspace's values (encoded version sets)
    key_bytes: int  # and for its storage keys
    preload_s: float  # steps 2 and 3: writes through the API, the kill, the reads
    startup_s: float  # restart until every node is healthy
    converged_s: float | None  # restart until every diverged key on n3 equals the others'
    unconverged: int
    counters: dict[str, int] | None  # summed over the nodes; None when not exposed
    per_node: dict[str, dict[str, Any]]
    model: Model = field(default_factory=Model)

    @property
    def exchanged_bytes(self) -> int | None:
        c = self.counters
        if c is None or "bytes_transferred" not in c or "bytes_repaired" not in c:
            return None
        return c["bytes_transferred"] + c["bytes_repaired"]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exchanged_bytes": self.exchanged_bytes}


# ---------------------------------------------------------------------- the run


@dataclass
class Replicas:
    """What the API showed of the keyspace before the restart (steps 2-3)."""

    uid: int
    partitions: int  # of the ring
    partition: dict[str, int] = field(default_factory=dict)  # key -> partition
    n1: dict[str, Wire] = field(default_factory=dict)  # every key: n1's version set
    n3_stale: dict[str, Wire] = field(default_factory=dict)  # n3's old version sets
    missing: list[str] = field(default_factory=list)  # keys n3 never got
    expected: dict[str, Wire] = field(default_factory=dict)  # diverged key -> final set


def key_name(i: int) -> str:
    return f"k{i:07d}"


def value_of(key: str, size: int) -> str:
    return (key + ":" + "x" * size)[:size]


def measure(
    cluster: LocalCluster,
    keys: int,
    diverged: int,
    *,
    keyspace: str = "ae_scale",
    value_size: int = 100,
    seed: int = 0,
    deadline_s: float = 300.0,
    poll_s: float = 0.5,
    concurrency: int = CONCURRENCY,
    say: Callable[[str], None] = print,
) -> Result:
    """One measurement on a running, empty 3-node cluster (`cluster.up()` returned);
    `cluster` is stopped and restarted on the way (its data kept)."""
    if not 0 < diverged <= keys:
        raise ValueError(f"need 0 < diverged <= keys, got {diverged} of {keys}")
    chosen = sorted(random.Random(seed).sample(range(keys), diverged))
    http = {n: cluster.http(n) for n in NODES}
    t = time.monotonic()
    state = asyncio.run(
        _diverge(cluster, http, keyspace, keys, chosen, value_size, concurrency, say)
    )
    preload_s = time.monotonic() - t
    data_bytes, key_bytes = stored_bytes(state)
    model = sweep_model(state)
    say(f"preloaded in {preload_s:.1f}s; data {data_bytes:,} B; restarting every node")
    cluster.stop()
    t0 = time.monotonic()
    cluster.up()
    startup_s = time.monotonic() - t0
    http = {n: cluster.http(n) for n in NODES}
    converged_s, unconverged, per_node = asyncio.run(
        _converge(http, keyspace, state.expected, t0, deadline_s, poll_s)
    )
    return Result(
        keys=keys,
        diverged=diverged,
        value_size=value_size,
        uid=state.uid,
        data_bytes=data_bytes,
        key_bytes=key_bytes,
        preload_s=round(preload_s, 2),
        startup_s=round(startup_s, 2),
        converged_s=None if converged_s is None else round(converged_s, 2),
        unconverged=unconverged,
        counters=_sum_counters(per_node),
        per_node=per_node,
        model=model,
    )


async def _bounded(limit: int, jobs: Iterable[Awaitable[T]]) -> list[T]:
    """Await every job with at most `limit` running at once (results in order)."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Awaitable[T]) -> T:
        async with gate:
            return await job

    return list(await asyncio.gather(*(one(j) for j in jobs)))


async def _diverge(
    cluster: LocalCluster,
    http: dict[str, str],
    keyspace: str,
    keys: int,
    chosen: Sequence[int],
    value_size: int,
    concurrency: int,
    say: Callable[[str], None],
) -> Replicas:
    """Steps 1-3 of the module docstring: the keyspace, the preload, n3 killed, the
    divergent writes, and what n1 (every key), n2 and n3 (the diverged keys) hold."""
    missing = {key_name(i) for pos, i in enumerate(chosen) if pos % 2 == 0}
    stale = [key_name(i) for pos, i in enumerate(chosen) if pos % 2 == 1]
    names = [key_name(i) for i in range(keys)]
    async with KvClient([http[n] for n in NODES], timeout=10.0) as client:
        uid, partitions = await _create(client, http, keyspace)
        state = Replicas(uid, partitions, missing=sorted(missing))
        say(f"keyspace {keyspace!r} uid {uid}; writing {keys - len(missing):,} keys with w=3")
        old = set(stale)

        async def first(key: str) -> tuple[str, str]:
            value = value_of(key, value_size)
            put = await client.put(keyspace, key, "old:" + value[4:] if key in old else value, w=3)
            return key, str(put["context"])

        contexts = dict(await _bounded(concurrency, (first(k) for k in names if k not in missing)))
        n3 = await _bounded(concurrency, (client.replica(keyspace, k, http["n3"]) for k in stale))
        state.n3_stale = {r["key"]: r["versions"] for r in n3}
    cluster.kill(DIVERGED_NODE)
    say(f"{DIVERGED_NODE} killed; writing {len(missing)} missing and {len(stale)} newer keys")
    async with KvClient([http["n1"], http["n2"]], timeout=10.0) as client:
        await _bounded(
            concurrency,
            (
                client.put(keyspace, k, value_of(k, value_size), context=contexts.get(k), w=2)
                for k in sorted(missing) + stale
            ),
        )
        pending = await _hints_pending(client, [http["n1"], http["n2"]])
        if pending:
            raise RuntimeError(
                f"{pending} hints pending: hinted handoff would repair {DIVERGED_NODE}"
            )
        n1 = await _bounded(concurrency, (client.replica(keyspace, k, http["n1"]) for k in names))
        n2 = await _bounded(
            concurrency, (client.replica(keyspace, k, http["n2"]) for k in sorted(missing) + stale)
        )
    state.partition = {r["key"]: int(r["partition"]) for r in n1}
    state.n1 = {r["key"]: r["versions"] for r in n1}
    for r in n2:
        if r["versions"] != state.n1[r["key"]]:
            raise RuntimeError(f"n1 and n2 disagree on {r['key']}: {state.n1[r['key']]} {r}")
        state.expected[r["key"]] = r["versions"]
    return state


async def _create(client: KvClient, http: dict[str, str], keyspace: str) -> tuple[int, int]:
    """Create the keyspace; returns its uid - the epoch all three nodes then report (see the
    module docstring) - and the number of partitions."""
    await client.create_keyspace(
        keyspace, consistency="eventual", replication=3, read_quorum=2, write_quorum=2
    )
    end = time.monotonic() + 30
    while True:  # only the node that served the creation is sure to know it yet
        infos = await asyncio.gather(*(client.cluster(node=http[n]) for n in NODES))
        epochs = {i["epoch"] for i in infos}
        if len(epochs) == 1 and epochs != {1}:
            break
        if time.monotonic() > end:
            raise RuntimeError(f"the nodes' metadata epochs stay apart: {sorted(epochs)}")
        await asyncio.sleep(0.1)
    members = sorted(m["id"] for m in infos[0]["members"])
    if members != sorted(NODES):
        raise RuntimeError(f"expected members {NODES}, got {members}")
    return int(infos[0]["epoch"]), len(infos[0]["partitions"])


async def _hints_pending(client: KvClient, nodes: Sequence[str]) -> int:
    infos = await asyncio.gather(*(client.cluster(node=n) for n in nodes))
    return sum(sum(i["hinted_handoff"]["pending"].values()) for i in infos)


def _ref(state: Replicas, key: str) -> KeyRef:
    return KeyRef(state.partition[key], state.uid, key)


def stored_bytes(state: Replicas) -> tuple[int, int]:
    """(value bytes, key bytes) n1 stores for the keyspace: its version sets as the nodes
    encode them (`encode_versions`) and the storage keys (`KeyRef.storage_key`)."""
    values = sum(len(encode_versions(decode_versions(v))) for v in state.n1.values())
    keys = sum(len(_ref(state, key).storage_key()) for key in state.n1)
    return values, keys


def _json_len(body: Any) -> int:
    return len(json.dumps(body, separators=(",", ":")))


def replicas_before_restart(state: Replicas) -> tuple[DynamoReplica, DynamoReplica]:
    """In-memory replicas of n1 (as read) and of n3 as it was when it was killed: n1's
    version sets, less the missing keys, with the old sets of the stale ones."""
    n1 = DynamoReplica(MemoryEngine(), NODES[0])
    n3 = DynamoReplica(MemoryEngine(), DIVERGED_NODE)
    missing = set(state.missing)
    for key, versions in state.n1.items():
        ref = _ref(state, key)
        n1.store(ref, decode_versions(versions))
        if key not in missing:
            n3.store(ref, decode_versions(state.n3_stale.get(key, versions)))
    return n1, n3


def sweep_model(state: Replicas) -> Model:
    """n3 (as it was before the kill) exchanges with n1 once per partition, in process,
    through merkle_diff.diff and the wire encoding the nodes use; repairs are computed, not
    written."""
    peer, local = replicas_before_restart(state)
    out = Model()
    for p in range(state.partitions):
        theirs_tree = peer.tree(p)

        def ask(q: merkle_diff.Query, p: int = p, tree: merkle.MerkleTree = theirs_tree) -> Any:
            a = merkle_diff.answer(tree, q)
            out.json_bytes += _json_len(TreeQuery(p, q).to_wire())
            out.json_bytes += _json_len(TreeAnswer(a).to_wire())
            return a

        result = merkle_diff.diff(local.tree(p), ask, BUDGET)
        out.differing += len(result.keys)
        out.queries += result.stats.queries
        out.hashes += result.stats.hashes
        out.walk_bytes += result.stats.bytes_transferred
        for raw in result.keys:
            ref = KeyRef.from_storage_key(raw)
            theirs = peer.fetch(ref)
            merged = [v.to_wire() for v in siblings.reconcile((*local.fetch(ref), *theirs))]
            out.repair_bytes += len(str(merged))
            out.json_bytes += 2 * _json_len({"ref": ref.to_wire()})  # fetch + store refs
            out.json_bytes += _json_len({"versions": [v.to_wire() for v in theirs]})
            out.json_bytes += _json_len({"versions": merged})
    return out


async def _converge(
    http: dict[str, str],
    keyspace: str,
    expected: dict[str, list[dict[str, Any]]],
    t0: float,
    deadline_s: float,
    poll_s: float,
) -> tuple[float | None, int, dict[str, dict[str, Any]]]:
    """Poll n3 until every diverged key holds the expected versions; then check n1 and n2
    hold them too and read every node's anti_entropy counters."""
    gate = asyncio.Semaphore(32)

    async with KvClient(list(http.values())) as client:

        async def matches(node: str, key: str) -> bool:
            async with gate:
                try:
                    reply = await client.replica(keyspace, key, http[node])
                except Exception:  # noqa: BLE001 - e.g. a restarted node still replaying
                    return False  # the metadata log knows no keyspace yet: "not yet"
            return bool(reply["versions"] == expected[key])

        async def still_differing(node: str, todo: list[str]) -> list[str]:
            ok = await asyncio.gather(*(matches(node, k) for k in todo))
            return [k for k, good in zip(todo, ok, strict=True) if not good]

        remaining = sorted(expected)
        converged_s: float | None = None
        while True:
            remaining = await still_differing(DIVERGED_NODE, remaining)
            if not remaining:
                converged_s = time.monotonic() - t0
                break
            if time.monotonic() - t0 > deadline_s:
                break
            await asyncio.sleep(poll_s)
        infos = await asyncio.gather(*(client.cluster(node=http[n]) for n in NODES))
        per_node = {n: info["anti_entropy"] for n, info in zip(NODES, infos, strict=True)}
        if converged_s is not None:
            for node in NODES:
                if node != DIVERGED_NODE:
                    wrong = await still_differing(node, sorted(expected))
                    if wrong:
                        raise RuntimeError(f"{node} changed {len(wrong)} keys, e.g. {wrong[0]}")
    return converged_s, len(remaining), per_node


def _sum_counters(per_node: dict[str, dict[str, Any]]) -> dict[str, int] | None:
    sections = list(per_node.values())
    if not sections or "bytes_transferred" not in sections[0]:
        return None
    return {c: sum(int(s.get(c, 0)) for s in sections) for c in COUNTERS}


# ---------------------------------------------------------------------- a private cluster


def run_once(keys: int, diverged: int, **options: Any) -> Result:
    """One measurement on a private cluster that is always stopped and removed."""
    with LocalCluster(n=len(NODES), prefix="kv-ae-") as cluster:
        cluster.up()
        return measure(cluster, keys, diverged, **options)


# ---------------------------------------------------------------------- output


def _n(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def _pct(part: int | None, whole: int) -> str:
    return "n/a" if part is None or not whole else f"{100 * part / whole:.2f} %"


def table(results: Sequence[Result]) -> str:
    head = (
        "| keys | diverged | data bytes | converged s | exchanges | keys repaired "
        "| hashes | bytes exchanged | % of data | per diverged key "
        "| model: hashes | model: bytes | model: JSON bytes |"
    )
    lines = [head, "|" + "---:|" * (head.count("|") - 1)]
    for r in results:
        c = r.counters or {}
        ex = r.exchanged_bytes
        lines.append(
            f"| {r.keys:,} | {r.diverged:,} | {r.data_bytes:,} "
            f"| {'n/a' if r.converged_s is None else f'{r.converged_s:.1f}'} "
            f"| {_n(c.get('exchanges', _exposed(r, 'exchanges')))} "
            f"| {_n(c.get('keys_repaired', _exposed(r, 'keys_repaired')))} "
            f"| {_n(c.get('hashes'))} | {_n(ex)} | {_pct(ex, r.data_bytes)} "
            f"| {_n(None if ex is None else ex // r.diverged)} "
            f"| {r.model.hashes:,} | {r.model.payload_bytes:,} | {r.model.json_bytes:,} |"
        )
    return "\n".join(lines)


def _exposed(r: Result, name: str) -> int | None:
    """A counter the current nodes already expose (without the byte counters)."""
    values = [s[name] for s in r.per_node.values() if name in s]
    return sum(int(v) for v in values) if len(values) == len(NODES) else None


def _parse_runs(text: str) -> list[tuple[int, int]]:
    runs = []
    for item in text.split(","):
        n, _, d = item.partition(":")
        runs.append((int(n), int(d)))
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ops/ae_measure", description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=20_000)
    p.add_argument("--diverged", type=int, default=100)
    p.add_argument("--runs", help="several runs in one table: KEYS:DIVERGED,KEYS:DIVERGED,...")
    p.add_argument("--value-size", dest="value_size", type=int, default=100)
    p.add_argument(
        "--interval", type=float, help="anti_entropy_interval_s of the nodes (default: theirs)"
    )
    p.add_argument("--deadline", type=float, default=300.0, help="seconds to wait to converge")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--concurrency", type=int, default=CONCURRENCY, help="API requests in flight (preload)"
    )
    p.add_argument("--json", help="also write the results as JSON to this file")
    a = p.parse_args(argv)
    runs = _parse_runs(a.runs) if a.runs else [(a.keys, a.diverged)]
    if a.interval is not None:  # inherited by the nodes ops/cluster starts (kv/__main__.py)
        os.environ["KV_NODE_SETTINGS"] = json.dumps({"anti_entropy_interval_s": a.interval})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("ops/ae_measure: terminated"))
    results = []
    for keys, diverged in runs:
        print(f"== {keys:,} keys, {diverged:,} diverged on {DIVERGED_NODE}", file=sys.stderr)
        r = run_once(
            keys,
            diverged,
            value_size=a.value_size,
            seed=a.seed,
            deadline_s=a.deadline,
            concurrency=a.concurrency,
            say=lambda s: print(s, file=sys.stderr),
        )
        results.append(r)
        print(f"   {r.to_dict()}", file=sys.stderr)
    print(table(results))
    if any(r.counters is None for r in results):
        print(
            "\nbytes n/a: these nodes do not expose anti_entropy bytes_transferred/bytes_repaired"
            " in /v1/cluster (docs/anti_entropy.md, 'Measured on real nodes')"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump([r.to_dict() for r in results], f, indent=2)
    return 0 if all(r.unconverged == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
