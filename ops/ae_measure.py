"""Anti-entropy cost on real node processes (issue 5; docs/anti_entropy.md, "Measured on
real nodes").

    ops/ae_measure [--keys 100000] [--diverged 100] [--runs N:D,N:D,...] [--value-size 100]
                   [--interval S] [--deadline 300] [--seed 0] [--json OUT]

One run (a fresh private cluster each time; always stopped and removed at the end):

1. `ops/cluster up` a 3-node cluster in a temp dir on free ports below 32768, create an
   eventual keyspace (N=3) and write one probe key with w=3. The keyspace uid is the
   metadata epoch after the creation (`/v1/cluster` "epoch", once all three nodes report
   the same one: a node other than the one that served the creation can lag), and it is
   checked against the uid in the probe's storage key in n1's LevelDB, which is what the
   nodes really use, once they are down.
2. `ops/cluster down`, then preload every node's LevelDB directly through
   `DynamoReplica.store`: the same KEYS keys on all three (one version, dot (n1, 1)); DIVERGED
   of them differ on n3, half missing, half an older version that the others supersede.
3. Offline, with the same Merkle code the nodes run: one sweep of n3 against n1 over every
   partition (the "model" columns), a deterministic cross-check of the live counters.
4. `ops/cluster up` again and poll n3's replica-local state (`/v1/admin/replica`) of the
   diverged keys until every one equals the others'; then read each node's `/v1/cluster`
   anti_entropy counters. The node processes are new, so the counters cover exactly the
   time since the restart. Bytes are shown only when the nodes expose them
   (`bytes_transferred`, `bytes_repaired`); otherwise "n/a".

Writing 100,000 keys through HTTP would take minutes; the preload takes ~10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from dynamo_mode import merkle, merkle_diff, siblings
from dynamo_mode.anti_entropy import AntiEntropy, encode_answer, encode_query
from dynamo_mode.replica import PREFIX, DynamoReplica, KeyRef
from dynamo_mode.siblings import Version, make_version
from kv.client import KvClient
from kv.leveldb import LevelDBEngine
from kv.ring import Ring

try:
    from ops.ports import free_base_port
except ModuleNotFoundError:  # run as `python ops/<script>.py`: ops/ itself is sys.path[0]
    from ports import free_base_port  # type: ignore[no-redef]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODES = ("n1", "n2", "n3")
DIVERGED_NODE = "n3"
VNODES = 64  # NodeConfig.vnodes default; checked against /v1/cluster's partition walks
PROBE_KEY = "ae-probe"
BUDGET: int = AntiEntropy.budget  # keys repaired per exchange: the nodes' default
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


class Control(Protocol):
    """A 3-node cluster started by ops/cluster in `dir` (tests adapt the cluster harness)."""

    dir: str

    def up(self) -> object:
        """Start (or restart) every node; return once all are healthy."""
        ...

    def stop(self) -> None:
        """Stop every node and keep the data (`ops/cluster down`)."""
        ...


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
    data_bytes: int  # sum of the LevelDB value sizes of the keys on one replica (n1)
    key_bytes: int  # sum of their LevelDB key sizes
    preload_s: float
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


@dataclass(frozen=True)
class Layout:
    http: dict[str, str]  # node id -> host:port
    ring: Ring
    uid: int


def node_http(directory: str) -> dict[str, str]:
    with open(os.path.join(directory, "cluster.json")) as f:
        return {n["id"]: n["http"] for n in json.load(f)["nodes"]}


def db_path(directory: str, node_id: str) -> str:
    return os.path.join(directory, node_id, "data", "db")


def key_name(i: int) -> str:
    return f"k{i:07d}"


def measure(
    ctl: Control,
    keys: int,
    diverged: int,
    *,
    keyspace: str = "ae_scale",
    value_size: int = 100,
    seed: int = 0,
    deadline_s: float = 300.0,
    poll_s: float = 0.5,
    say: Callable[[str], None] = print,
) -> Result:
    """One measurement on a running, empty cluster (`ctl.up()` already returned)."""
    if not 0 < diverged <= keys:
        raise ValueError(f"need 0 < diverged <= keys, got {diverged} of {keys}")
    layout = asyncio.run(_create(ctl.dir, keyspace))
    ctl.stop()
    probe_uid = _probe_uid(ctl.dir, layout.ring.key_partition(keyspace, PROBE_KEY))
    if probe_uid != layout.uid:
        raise RuntimeError(f"uid: epoch says {layout.uid}, the probe's storage key {probe_uid}")
    say(f"keyspace {keyspace!r} uid {layout.uid}; preloading {keys} keys on {len(NODES)} nodes")
    chosen = sorted(random.Random(seed).sample(range(keys), diverged))
    t = time.monotonic()
    expected = preload(ctl.dir, layout, keyspace, keys, chosen, value_size)
    preload_s = time.monotonic() - t
    data_bytes, key_bytes = stored_bytes(ctl.dir, layout)
    model = sweep_model(ctl.dir, layout.ring.partitions)
    say(f"preloaded in {preload_s:.1f}s; data {data_bytes:,} B; restarting")
    t0 = time.monotonic()
    ctl.up()
    startup_s = time.monotonic() - t0
    converged_s, unconverged, per_node = asyncio.run(
        _converge(node_http(ctl.dir), keyspace, expected, t0, deadline_s, poll_s)
    )
    return Result(
        keys=keys,
        diverged=diverged,
        value_size=value_size,
        uid=layout.uid,
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


async def _create(directory: str, keyspace: str) -> Layout:
    http = node_http(directory)
    async with KvClient([http[n] for n in NODES]) as client:
        await client.create_keyspace(keyspace, consistency="eventual", replication=3)
        end = time.monotonic() + 30
        while True:  # only the node that served the creation is sure to know it yet
            infos = await asyncio.gather(*(client.cluster(node=http[n]) for n in NODES))
            epochs = {i["epoch"] for i in infos}
            if len(epochs) == 1 and epochs != {1}:
                break
            if time.monotonic() > end:
                raise RuntimeError(f"the nodes' metadata epochs stay apart: {sorted(epochs)}")
            await asyncio.sleep(0.1)
        await client.put(keyspace, PROBE_KEY, "probe", w=3)  # on all three: not a divergence
        placed = await client.replica(keyspace, PROBE_KEY, http[NODES[0]])
    info = infos[0]
    members = tuple(m["id"] for m in info["members"])
    if sorted(members) != sorted(NODES):
        raise RuntimeError(f"expected members {NODES}, got {members}")
    ring = Ring(members, len(info["partitions"]), VNODES)
    for entry in info["partitions"]:  # the ring we preload with is the nodes' ring
        if list(ring.walk(entry["partition"])[: len(entry["replicas"])]) != entry["replicas"]:
            raise RuntimeError(f"ring mismatch at partition {entry['partition']}")
    if placed["partition"] != ring.key_partition(keyspace, PROBE_KEY):
        raise RuntimeError("Ring.key_partition disagrees with the nodes' placement")
    # the keyspace was the only metadata change since the bootstrap (epoch 1), so the epoch
    # after it is its uid (kv/meta.py _put_keyspace: uid = epoch + 1, then the bump);
    # `measure` checks it against the uid in the probe key's storage key
    return Layout(http, ring, int(info["epoch"]))


def _probe_uid(directory: str, partition: int) -> int:
    engine = LevelDBEngine(db_path(directory, NODES[0]), create_if_missing=False)
    try:
        for raw, _ in engine.iterate_prefix(PREFIX + struct.pack(">H", partition)):
            ref = KeyRef.from_storage_key(raw)
            if ref.key == PROBE_KEY:
                return ref.uid
    finally:
        engine.close()
    raise RuntimeError(f"probe key {PROBE_KEY!r} not found in {NODES[0]}'s LevelDB")


def _wire(versions: tuple[Version, ...]) -> list[dict[str, Any]]:
    normalised: list[dict[str, Any]] = json.loads(json.dumps([v.to_wire() for v in versions]))
    return normalised


def preload(
    directory: str,
    layout: Layout,
    keyspace: str,
    keys: int,
    chosen: Sequence[int],
    value_size: int,
) -> dict[str, list[dict[str, Any]]]:
    """Write `keys` keys on every node's LevelDB (the nodes are down); the `chosen` ones
    differ on n3: even positions missing, odd ones an older version the others supersede.
    Returns the version set (wire form) every replica must end with, per diverged key."""
    kinds = {i: ("missing" if pos % 2 == 0 else "stale") for pos, i in enumerate(chosen)}
    engines = {n: LevelDBEngine(db_path(directory, n), create_if_missing=False) for n in NODES}
    expected: dict[str, list[dict[str, Any]]] = {}
    try:
        replicas = {n: DynamoReplica(engines[n], n) for n in NODES}
        for i in range(keys):
            key = key_name(i)
            value = (key + ":" + "x" * value_size)[:value_size]
            ref = KeyRef(layout.ring.key_partition(keyspace, key), layout.uid, key)
            kind = kinds.get(i)
            if kind == "stale":  # n3 missed the second write of n1
                new = (make_version(("n1", 2), {"n1": 1}, value),)
                old = (make_version(("n1", 1), {}, "old:" + value[4:]),)
            else:
                new = old = (make_version(("n1", 1), {}, value),)
            for node, replica in replicas.items():
                if node != DIVERGED_NODE:
                    replica.store(ref, new)
                elif kind != "missing":
                    replica.store(ref, old)
            if kind is not None:
                expected[key] = _wire(new)
    finally:
        for engine in engines.values():
            engine.close()
    return expected


def _keyspace_prefixes(partitions: int, uid: int) -> list[bytes]:
    return [PREFIX + struct.pack(">HI", p, uid) for p in range(partitions)]


def stored_bytes(directory: str, layout: Layout) -> tuple[int, int]:
    """(value bytes, key bytes) of the keyspace's keys in n1's LevelDB (one replica's copy),
    the probe key excluded."""
    engine = LevelDBEngine(db_path(directory, NODES[0]), create_if_missing=False)
    values = keys = 0
    try:
        for prefix in _keyspace_prefixes(layout.ring.partitions, layout.uid):
            for raw, stored in engine.iterate_prefix(prefix):
                if raw[len(prefix) :] != PROBE_KEY.encode():
                    keys += len(raw)
                    values += len(stored)
    finally:
        engine.close()
    return values, keys


def _json_len(body: Any) -> int:
    return len(json.dumps(body, separators=(",", ":")))


def sweep_model(directory: str, partitions: int) -> Model:
    """n3 exchanges with n1 once per partition, in process, through merkle_diff.diff and the
    wire encoding the nodes use; repairs are computed, not written."""
    engines = {n: LevelDBEngine(db_path(directory, n), create_if_missing=False) for n in NODES}
    out = Model()
    try:
        local = DynamoReplica(engines[DIVERGED_NODE], DIVERGED_NODE)
        peer = DynamoReplica(engines[NODES[0]], NODES[0])
        for p in range(partitions):
            theirs_tree = peer.tree(p)

            def ask(q: merkle_diff.Query, p: int = p, tree: merkle.MerkleTree = theirs_tree) -> Any:
                a = merkle_diff.answer(tree, q)
                out.json_bytes += _json_len({"partition": p, "query": encode_query(q)})
                out.json_bytes += _json_len({"answer": encode_answer(a)})
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
    finally:
        for engine in engines.values():
            engine.close()
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


class LocalCluster:
    """A private cluster through ops/cluster in a temp dir; `destroy()` stops and removes it."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="kv-ae-")
        self.base_port = free_base_port(len(NODES))

    def _ops(self, *args: str, check: bool = True) -> None:
        cmd = [sys.executable, os.path.join(ROOT, "ops", "cluster.py"), *args, "--dir", self.dir]
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
        if check and r.returncode != 0:
            raise RuntimeError(f"ops/cluster {' '.join(args)} -> {r.returncode}\n{r.stderr}")

    def up(self) -> LocalCluster:
        self._ops("up", "-n", str(len(NODES)), "--base-port", str(self.base_port), "--no-examples")
        return self

    def stop(self) -> None:
        self._ops("down")

    def destroy(self) -> None:
        self._ops("down", check=False)
        self._ops("cleanup", check=False)  # SIGKILLs whatever `down` left
        shutil.rmtree(self.dir, ignore_errors=True)


def run_once(keys: int, diverged: int, **options: Any) -> Result:
    cluster = LocalCluster()
    try:
        cluster.up()
        return measure(cluster, keys, diverged, **options)
    finally:
        cluster.destroy()


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
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--diverged", type=int, default=100)
    p.add_argument("--runs", help="several runs in one table: KEYS:DIVERGED,KEYS:DIVERGED,...")
    p.add_argument("--value-size", dest="value_size", type=int, default=100)
    p.add_argument(
        "--interval", type=float, help="anti_entropy_interval_s of the nodes (default: theirs)"
    )
    p.add_argument("--deadline", type=float, default=300.0, help="seconds to wait to converge")
    p.add_argument("--seed", type=int, default=0)
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
