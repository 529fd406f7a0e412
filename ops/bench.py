"""Closed-loop load generator for kv (docs/benchmarks.md). Measures; never asserts.

    ops/bench [--dir DIR | --start] [--mode eventual] [--op put,get] [--clients 16]
              [--duration 10] [--value-size 64] [--keys 10000] [--seed N] [--json OUT]

Pieces, so another mode or system can be added without touching the runner:
- `Cluster`: the nodes' HTTP addresses and pids (`local_cluster` starts and always stops a
  private one, `running_cluster` reads a running one: ops/localcluster.py over ops/cluster);
- `TargetSpec` / `Target`: one system under test. A spec is a picklable description that
  prepares the system (keyspace) and opens a `Target` inside a load process; a target turns
  put/get/load of one key on one node into requests and returns None or an error code;
- `Workload` / `OPS`: which operation, which keys, which value;
- `run_phase`: forks the load processes, runs the closed loop for warm-up + duration and
  samples server and client CPU (/proc/<pid>/stat) over the measured window.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import os
import platform
import random
import signal
import string
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

import aiohttp

# run as `python ops/bench.py`, sys.path[0] is ops/: the repository root holds `ops`
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.localcluster import LocalCluster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
NPROC = os.cpu_count() or 1
TARGET_P99_MS = {"get": 10.0, "put": 20.0}  # DESIGN brief targets, printed as information
CLIENT_TIMEOUT_S = 10.0
START_ALLOWANCE_S = 0.5  # load processes fork, import and connect within this
CLIENT_BUSY_WARN = 0.8  # cores per load process above which the client may be the limit


# ---------------------------------------------------------------------- cluster
@dataclass(frozen=True)
class Cluster:
    nodes: tuple[str, ...]  # "host:port" of each node's HTTP API
    pids: tuple[int, ...]  # node processes, for CPU accounting (may be fewer than nodes)
    dir: str


def _status(lc: LocalCluster) -> Cluster:
    """The cluster of DIR: load goes to its healthy nodes; CPU is counted for every pid."""
    nodes = lc.status()
    if unhealthy := [n["id"] for n in nodes if not n["healthy"]]:
        print(f"warning: {unhealthy} not healthy: no load is sent to them", file=sys.stderr)
    if missing := [n["id"] for n in nodes if not n["pid"]]:
        print(f"warning: no pid for {missing}: their CPU is not counted", file=sys.stderr)
    healthy = tuple(n["http"] for n in nodes if n["healthy"])
    if not healthy:
        raise RuntimeError(f"no healthy node in {lc.dir}")
    return Cluster(healthy, tuple(int(n["pid"]) for n in nodes if n["pid"]), lc.dir)


@contextmanager
def running_cluster(d: str) -> Iterator[Cluster]:
    """The cluster of `ops/cluster --dir D`; it is neither started nor stopped here."""
    yield _status(LocalCluster(d))


@contextmanager
def local_cluster(n: int, keep: bool) -> Iterator[Cluster]:
    """Start a private n-node cluster in a temporary dir; always stop it (and remove the dir
    unless `keep`), also on errors and Ctrl-C."""
    lc = LocalCluster(n=n, prefix="kv-bench-", keep=keep)
    try:
        print(
            f"starting a local {n}-node cluster in {lc.dir} (base port {lc.base_port})",
            file=sys.stderr,
        )
        lc.up()
        yield _status(lc)
    finally:
        left = lc.down()
        if left:
            print(f"warning: still running after the cluster was stopped: {left}", file=sys.stderr)
        if keep or left:
            print(f"cluster data and logs kept in {lc.dir}", file=sys.stderr)


# ---------------------------------------------------------------------- targets
Carried = dict[str, str]  # what a phase's clients learned for the next (`Target.carried`)


class Target(Protocol):
    """One load process's connection to the system under test. Each call returns None on
    success or a short error code (the API's error code, or a client-side one)."""

    async def put(self, node: int, key: str, value: str) -> str | None: ...

    async def get(self, node: int, key: str) -> str | None: ...

    async def load(self, node: int, key: str, value: str) -> str | None:
        """Leave `key` holding exactly `value` (one version), for read benchmarks."""
        ...

    async def close(self) -> None: ...

    def carried(self) -> Carried:
        """What this process's clients learned that the next phase's must know to go on
        as the same clients (kv eventual: the causal context of each key written)."""
        ...

    def carry_on(self, carried: Carried) -> None:
        """Start from what an earlier phase's clients learned (`carried`)."""
        ...


class TargetSpec(Protocol):
    """A picklable description of a system under test; `prepare` runs once in the parent."""

    @property
    def name(self) -> str: ...

    @property
    def nodes(self) -> tuple[str, ...]: ...

    async def prepare(self) -> None: ...

    def open(self) -> Target: ...


def _session(connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, keepalive_timeout=60),
        timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S),
        skip_auto_headers=("User-Agent",),
    )


def _error_code(status: int, raw: bytes) -> str:
    try:
        return str(json.loads(raw)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return f"http_{status}"


def _exception_code(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "client_connect_error"
    if isinstance(exc, TimeoutError):
        return "client_timeout"
    if isinstance(exc, ValueError | KeyError):
        return "client_bad_response"
    return f"client_{type(exc).__name__}"


class KvEventualTarget:
    """kv's HTTP API over raw aiohttp with keep-alive (see docs/benchmarks.md for why not
    KvClient). A put sends the context of the last write of the key that this process or an
    earlier phase made (`carried`), as a well-behaved eventual client does: blind puts would
    pile up siblings until `sibling_limit`. Only a key's first write of the whole run is
    blind (or none, after a preload)."""

    def __init__(self, nodes: Sequence[str], keyspace: str, connections: int) -> None:
        self._bases = [f"http://{n}/v1/keyspaces/{keyspace}/keys/" for n in nodes]
        self._session = _session(connections)
        self._contexts: dict[str, str] = {}

    async def _call(self, method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else None
        async with self._session.request(method, url, data=body, headers=headers) as resp:
            return resp.status, await resp.read()

    async def put(self, node: int, key: str, value: str) -> str | None:
        doc: dict[str, Any] = {"value": value}
        context = self._contexts.get(key)
        if context is not None:
            doc["context"] = context
        status, raw = await self._call("PUT", self._bases[node] + key, json.dumps(doc).encode())
        if status != 200:
            return _error_code(status, raw)
        self._contexts[key] = json.loads(raw)["context"]
        return None

    def carried(self) -> Carried:
        return dict(self._contexts)

    def carry_on(self, carried: Carried) -> None:
        self._contexts.update(carried)

    async def get(self, node: int, key: str) -> str | None:
        status, raw = await self._call("GET", self._bases[node] + key, None)
        return None if status == 200 else _error_code(status, raw)

    async def load(self, node: int, key: str, value: str) -> str | None:
        status, raw = await self._call("GET", self._bases[node] + key, None)
        if status not in (200, 404):
            return _error_code(status, raw)
        try:  # a 404 of an eventual keyspace also carries the context
            body = json.loads(raw)
            context = body.get("context") or body.get("error", {}).get("context")
        except ValueError:
            context = None
        if context:
            self._contexts[key] = context
        return await self.put(node, key, value)

    async def close(self) -> None:
        await self._session.close()


@dataclass(frozen=True)
class KvEventualSpec:
    nodes: tuple[str, ...]
    keyspace: str = "bench_eventual"
    connections: int = 64
    config: dict[str, Any] = field(
        default_factory=lambda: {
            "consistency": "eventual",
            "replication": 3,
            "read_quorum": 2,
            "write_quorum": 2,
        }
    )
    name: str = "kv-eventual"

    async def prepare(self) -> None:
        """Create the keyspace if missing and wait until every node knows it."""
        async with _session(4) as s:
            url = f"http://{self.nodes[0]}/v1/keyspaces/{self.keyspace}"
            if not await _has_config(s, url, self.config):
                await _put_with_retries(s, url, self.config)
            for node in self.nodes:
                await _wait_for_keyspace(s, f"http://{node}/v1/keyspaces/{self.keyspace}")

    def open(self) -> Target:
        return KvEventualTarget(self.nodes, self.keyspace, self.connections)


async def _has_config(s: aiohttp.ClientSession, url: str, config: dict[str, Any]) -> bool:
    async with s.get(url) as resp:
        if resp.status != 200:
            return False
        have = await resp.json()
    return all(have.get(k) == v for k, v in config.items())


async def _put_with_retries(
    s: aiohttp.ClientSession, url: str, body: dict[str, Any], attempts: int = 5
) -> None:
    """PUT is idempotent here, so a 503/504 (e.g. during a meta leader change) is retried."""
    for attempt in range(attempts):
        async with s.put(url, json=body) as resp:
            if resp.status in (200, 201):
                return
            text = await resp.text()
            if resp.status not in (503, 504) or attempt == attempts - 1:
                raise RuntimeError(f"PUT {url}: {resp.status} {text}")
        await asyncio.sleep(0.5 * (attempt + 1))


async def _wait_for_keyspace(s: aiohttp.ClientSession, url: str, deadline_s: float = 30) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            async with s.get(url) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} still unknown after {deadline_s:.0f}s")


class KvLinearizableTarget:
    """kv's HTTP API for a linearizable keyspace: a put is a plain PUT (no context, no
    `if_version`) answered with `{"version": n}`; a get is a linearizable GET (the node
    confirms its read index with the group's leader before reading, docs/raft.md "Reads");
    `load` is a PUT."""

    def __init__(self, nodes: Sequence[str], keyspace: str, connections: int) -> None:
        self._bases = [f"http://{n}/v1/keyspaces/{keyspace}/keys/" for n in nodes]
        self._session = _session(connections)
        self._json = {"Content-Type": "application/json"}

    async def put(self, node: int, key: str, value: str) -> str | None:
        body = json.dumps({"value": value}).encode()
        async with self._session.put(self._bases[node] + key, data=body, headers=self._json) as r:
            raw = await r.read()
            if r.status != 200:
                return _error_code(r.status, raw)
        if not isinstance(json.loads(raw)["version"], int):
            raise ValueError("version is not an integer")
        return None

    async def get(self, node: int, key: str) -> str | None:
        async with self._session.get(self._bases[node] + key) as r:
            raw = await r.read()
            return None if r.status == 200 else _error_code(r.status, raw)

    async def load(self, node: int, key: str, value: str) -> str | None:
        return await self.put(node, key, value)

    async def close(self) -> None:
        await self._session.close()

    def carried(self) -> Carried:
        return {}  # a linearizable put needs no context

    def carry_on(self, carried: Carried) -> None:
        pass


@dataclass(frozen=True)
class KvLinearizableSpec:
    nodes: tuple[str, ...]
    keyspace: str = "bench_linearizable"
    connections: int = 64
    config: dict[str, Any] = field(
        default_factory=lambda: {"consistency": "linearizable", "replication": 3}
    )
    name: str = "kv-linearizable"
    probe_deadline_s: float = 30.0

    async def prepare(self) -> None:
        """Create the keyspace if missing, wait until every node knows it, then until a put
        through every node succeeds (the Raft groups have leaders)."""
        await KvEventualSpec(self.nodes, self.keyspace, config=self.config).prepare()
        target = self.open()
        try:
            for node in range(len(self.nodes)):
                end = time.monotonic() + self.probe_deadline_s
                while (code := await _probe(target, node)) is not None:
                    if time.monotonic() > end:
                        raise RuntimeError(f"{self.nodes[node]}: probe put failed: {code}")
                    await asyncio.sleep(0.1)
        finally:
            await target.close()

    def open(self) -> Target:
        return KvLinearizableTarget(self.nodes, self.keyspace, self.connections)


async def _probe(target: Target, node: int) -> str | None:
    try:
        return await target.put(node, "bench-probe", "x")
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError) as exc:
        return _exception_code(exc)


MODES: dict[str, Callable[[Cluster], TargetSpec]] = {
    "eventual": lambda cluster: KvEventualSpec(cluster.nodes),
    "eventual-fsync": lambda cluster: KvEventualSpec(
        cluster.nodes,
        keyspace="bench_eventual_fsync",
        config={**KvEventualSpec(()).config, "durability": "fsync"},
        name="kv-eventual-fsync",
    ),
    "linearizable": lambda cluster: KvLinearizableSpec(cluster.nodes),
}
# What the kv side does about durability, printed beside etcd's (docs/raft.md "Durability").
FSYNC_NOTES = {
    "eventual": "kv eventual: LevelDB writes not fsynced (a process crash loses nothing, "
    "a power loss may)",
    "eventual-fsync": "kv eventual, keyspace durability fsync: each replica's write synced "
    "(group commit) before it acknowledges",
    "linearizable": "kv linearizable: group commit, the node's Raft log (every group's journal) "
    "fdatasynced before any message leaves the node (node config raft_sync_journal, default true)",
}


# ---------------------------------------------------------------------- workload
OpCall = Callable[[Target, int, str, str], Awaitable[str | None]]


@dataclass(frozen=True)
class Op:
    name: str
    call: OpCall
    needs_preload: bool


OPS: dict[str, Op] = {
    "put": Op("put", lambda t, node, key, value: t.put(node, key, value), False),
    "get": Op("get", lambda t, node, key, _value: t.get(node, key), True),
}


@dataclass(frozen=True)
class Workload:
    op: str
    keys: int
    value_size: int
    clients: int
    seed: int

    def key_names(self) -> list[str]:
        return [f"k{i:07d}" for i in range(self.keys)]

    def worker_rng(self, worker: int) -> random.Random:
        return random.Random(f"{self.seed}/{self.op}/{worker}")

    def value(self, rng: random.Random) -> str:
        return "".join(rng.choices(string.ascii_letters + string.digits, k=self.value_size))


@dataclass(frozen=True)
class Window:
    """The measured window, in CLOCK_MONOTONIC ns (shared by every process on Linux)."""

    start_ns: int
    end_ns: int


@dataclass
class Recorder:
    latencies_ns: array.array[int] = field(default_factory=lambda: array.array("q"))
    errors: Counter[str] = field(default_factory=Counter)

    def merge(self, other: Recorder) -> None:
        self.latencies_ns.extend(other.latencies_ns)
        self.errors.update(other.errors)


async def _worker(
    target: Target,
    op: Op,
    node: int,
    keys: list[str],
    value: str,
    rng: random.Random,
    window: Window,
    rec: Recorder,
    busy: set[str],
) -> None:
    """Back-to-back requests until the window ends; only completions inside it count. A
    worker never picks a key another worker of its process has a request in flight for
    (`busy`): two concurrent puts of a key with the same context would leave it a sibling
    that no later put of this process resolves."""
    clock, pick = time.perf_counter_ns, rng.randrange
    n = len(keys)
    while (start := clock()) < window.end_ns:
        while (key := keys[pick(n)]) in busy:
            pass
        busy.add(key)
        try:
            code = await op.call(target, node, key, value)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError) as exc:
            code = _exception_code(exc)
        finally:
            busy.discard(key)
        end = clock()
        if window.start_ns <= end < window.end_ns:
            if code is None:
                rec.latencies_ns.append(end - start)
            else:
                rec.errors[code] += 1


async def _drive(
    spec: TargetSpec,
    wl: Workload,
    workers: Sequence[int],
    window: Window,
    keys: list[str],
    carried: Carried,
) -> tuple[Recorder, Carried]:
    target = spec.open()
    # only this process's keys: what it reports back must not overwrite what another
    # process learned about its own keys
    target.carry_on({k: carried[k] for k in keys if k in carried})
    rec = Recorder()
    op = OPS[wl.op]
    busy: set[str] = set()
    try:
        tasks = []
        for w in workers:
            rng = wl.worker_rng(w)
            node = w % len(spec.nodes)
            value = wl.value(rng)
            tasks.append(_worker(target, op, node, keys, value, rng, window, rec, busy))
        await asyncio.gather(*tasks)
    finally:
        await target.close()
    return rec, target.carried()


@dataclass(frozen=True)
class LoadPart:
    """One load process's share of a phase: its workers and its keys. Processes use
    disjoint keys, so no two write the same key with different contexts."""

    workers: list[int]
    keys: list[str]


def load_processes(procs: int, clients: int) -> int:
    """How many load processes a phase of `clients` forks: --procs, at most one per client."""
    return min(procs, clients)


def split_load(clients: int, keys: Sequence[str], procs: int) -> list[LoadPart]:
    """A phase's load processes (`load_processes`) and each one's share:
    workers and keys dealt round-robin. A worker picks a key no other worker of its process
    has in flight, so a share with fewer keys than workers could not run (`parse_args`
    refuses such a --keys)."""
    n = load_processes(procs, clients)
    return [LoadPart(list(range(p, clients, n)), list(keys[p::n])) for p in range(n)]


def _load_process(
    spec: TargetSpec,
    wl: Workload,
    part: LoadPart,
    window: Window,
    carried: Carried,
    conn: Connection,
) -> None:
    """Body of one forked load process: the parent handles Ctrl-C and SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        rec, learned = asyncio.run(_drive(spec, wl, part.workers, window, part.keys, carried))
        conn.send(("ok", rec.latencies_ns.tobytes(), dict(rec.errors), learned))
    except BaseException:
        conn.send(("error", traceback.format_exc(), {}, {}))
    finally:
        conn.close()


async def preload(spec: TargetSpec, wl: Workload, concurrency: int = 32) -> Carried:
    """Give every key of the workload one value (read + write with the context); what the
    loader learned (the keys' contexts) for the phases after it."""
    target = spec.open()
    keys = wl.key_names()
    value = wl.value(wl.worker_rng(-1))
    errors: Counter[str] = Counter()

    async def loader(first: int) -> None:
        for i in range(first, len(keys), concurrency):
            code = await target.load(i % len(spec.nodes), keys[i], value)
            if code is not None:
                errors[code] += 1

    try:
        await asyncio.gather(*(loader(i) for i in range(concurrency)))
    finally:
        await target.close()
    if errors:
        raise RuntimeError(f"preload failed for some keys: {dict(errors)}")
    return target.carried()


# ---------------------------------------------------------------------- CPU accounting
def cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of every thread of `pid`: fields 14 and 15 of /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def total_cpu(pids: Sequence[int]) -> tuple[float, float]:
    """Summed (user, system) CPU seconds of `pids`."""
    times = [cpu_seconds(p) for p in pids]
    return sum(u for u, _ in times), sum(s for _, s in times)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (first line of /proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / CLK_TCK  # guest time is already in user


@dataclass(frozen=True)
class CpuSample:
    server: tuple[float, float]  # (user, system) seconds
    client: tuple[float, float]
    machine: float
    at_ns: int

    @staticmethod
    def take(server_pids: Sequence[int], client_pids: Sequence[int]) -> CpuSample:
        return CpuSample(
            total_cpu(server_pids),
            total_cpu(client_pids),
            machine_busy_seconds(),
            time.perf_counter_ns(),
        )


def idle_server_cores(pids: Sequence[int], seconds: float = 2.0) -> float:
    before, t0 = sum(total_cpu(pids)), time.monotonic()
    time.sleep(seconds)
    return (sum(total_cpu(pids)) - before) / (time.monotonic() - t0)


# ---------------------------------------------------------------------- results
def percentile(sorted_ns: Sequence[int], q: float) -> float | None:
    """Nearest-rank percentile of sorted nanosecond samples, in milliseconds."""
    if not sorted_ns:
        return None
    rank = max(1, -(-len(sorted_ns) * q // 100))  # ceil(n*q/100)
    return sorted_ns[int(rank) - 1] / 1e6


@dataclass
class PhaseResult:
    op: str
    ops_per_s: float
    ok: int
    seconds: float
    errors: dict[str, int]
    latency_ms: dict[str, float | None]  # None when nothing succeeded
    target_p99_ms: float | None
    server_cpu_us_per_op: float  # user + system, summed over the node processes
    server_sys_us_per_op: float  # of which system (kernel: syscalls, loopback TCP)
    client_cpu_us_per_op: float
    client_sys_us_per_op: float
    server_cores: float
    client_cores: float
    other_cores: float  # the rest of the machine (other processes, kernel), same window
    cpu_ceiling_ops_per_s: float  # nproc / (server + client CPU per op): if nothing else ran
    load_processes: int
    target: str = ""  # the TargetSpec's name: kv-eventual, kv-linearizable, etcd-3.4.23
    clients: int = 0


def _delta(before: tuple[float, float], after: tuple[float, float]) -> tuple[float, float]:
    return after[0] - before[0], after[1] - before[1]


def summarize(
    op: str,
    rec: Recorder,
    before: CpuSample,
    after: CpuSample,
    procs: int,
    target: str = "",
    clients: int = 0,
) -> PhaseResult:
    seconds = (after.at_ns - before.at_ns) / 1e9
    server = _delta(before.server, after.server)
    client = _delta(before.client, after.client)
    lat = sorted(rec.latencies_ns)
    done = max(len(lat) + sum(rec.errors.values()), 1)
    return PhaseResult(
        op=op,
        ops_per_s=len(lat) / seconds,
        ok=len(lat),
        seconds=seconds,
        errors=dict(sorted(rec.errors.items())),
        latency_ms={
            "p50": percentile(lat, 50),
            "p99": percentile(lat, 99),
            "p99.9": percentile(lat, 99.9),
            "max": lat[-1] / 1e6 if lat else None,
            "mean": sum(lat) / len(lat) / 1e6 if lat else None,
        },
        target_p99_ms=TARGET_P99_MS.get(op),
        server_cpu_us_per_op=sum(server) / done * 1e6,
        server_sys_us_per_op=server[1] / done * 1e6,
        client_cpu_us_per_op=sum(client) / done * 1e6,
        client_sys_us_per_op=client[1] / done * 1e6,
        server_cores=sum(server) / seconds,
        client_cores=sum(client) / seconds,
        other_cores=(after.machine - before.machine - sum(server) - sum(client)) / seconds,
        cpu_ceiling_ops_per_s=NPROC * done / max(sum(server) + sum(client), 1e-9),
        load_processes=procs,
        target=target,
        clients=clients,
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _target_note(r: PhaseResult) -> str:
    p99 = r.latency_ms["p99"]
    if r.target_p99_ms is None or p99 is None:
        return ""
    verdict = "under" if p99 < r.target_p99_ms else "OVER"
    return f"   [brief: p99 {r.op.upper()} < {r.target_p99_ms:g} ms; measured {verdict}]"


def render(r: PhaseResult) -> str:
    lat = r.latency_ms
    errors = ", ".join(f"{c}={n}" for c, n in r.errors.items()) or "none"
    procs = f"{r.load_processes} process{'es' if r.load_processes > 1 else ''}"
    lines = [
        f"{r.op:<4} {r.ops_per_s:9.1f} ops/s   ({r.ok} ok in {r.seconds:.1f} s; errors: {errors})",
        f"     latency ms  p50 {_ms(lat['p50'])}  p99 {_ms(lat['p99'])}  "
        f"p99.9 {_ms(lat['p99.9'])}  max {_ms(lat['max'])}{_target_note(r)}",
        f"     CPU/op      server {r.server_cpu_us_per_op:.0f} µs "
        f"(sys {r.server_sys_us_per_op:.0f}; {r.server_cores:.2f} cores, all nodes)   "
        f"client {r.client_cpu_us_per_op:.0f} µs (sys {r.client_sys_us_per_op:.0f}; "
        f"{r.client_cores:.2f} cores, {procs})",
        f"     rest of machine {r.other_cores:.2f} cores (other processes, softirq); "
        f"CPU-bound ceiling ~{r.cpu_ceiling_ops_per_s:.0f} ops/s if nothing else ran",
    ]
    if r.client_cores / r.load_processes > CLIENT_BUSY_WARN:
        lines.append("     warning: the load generator is near a full core; try more --procs")
    return "\n".join(lines)


# ---------------------------------------------------------------------- runner
def _sleep_until_ns(t: int) -> None:
    while (left := t - time.perf_counter_ns()) > 0:
        time.sleep(left / 1e9)


def _collect(conns: list[Connection], deadline_ns: int) -> tuple[Recorder, Carried]:
    total, carried = Recorder(), {}
    for conn in conns:
        left = max(deadline_ns - time.perf_counter_ns(), 0) / 1e9
        if not conn.poll(left):
            raise RuntimeError("a load process did not report in time")
        status, payload, errors, learned = conn.recv()
        if status != "ok":
            raise RuntimeError(f"a load process failed:\n{payload}")
        part = Recorder(errors=Counter(errors))
        part.latencies_ns.frombytes(payload)
        total.merge(part)
        carried.update(learned)  # disjoint keys (LoadPart)
    return total, carried


def _fork_loaders(
    spec: TargetSpec,
    wl: Workload,
    window: Window,
    procs: int,
    carried: Carried,
    children: list[BaseProcess],
) -> list[Connection]:
    """Start the load processes (appended to `children` as they start); their pipes."""
    ctx = get_context("fork")  # no event loop is running here; children start their own
    conns = []
    for part in split_load(wl.clients, wl.key_names(), procs):
        parent_end, child_end = ctx.Pipe(duplex=False)
        args = (spec, wl, part, window, carried, child_end)
        proc = ctx.Process(target=_load_process, args=args)
        proc.start()
        children.append(proc)
        child_end.close()
        conns.append(parent_end)
    return conns


def _reap(children: list[BaseProcess], interrupted: bool) -> None:
    for proc in children:
        if interrupted:
            proc.terminate()
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join()


def run_phase(
    spec: TargetSpec,
    wl: Workload,
    server_pids: Sequence[int],
    procs: int,
    warmup_s: float,
    duration_s: float,
    carried: Carried | None = None,
) -> tuple[PhaseResult, Carried]:
    """Fork `procs` load processes, measure [warm-up end, + duration] and summarize; what
    the clients learned (`Target.carried`), for the next phase to carry on from."""
    start = time.perf_counter_ns() + int((START_ALLOWANCE_S + warmup_s) * 1e9)
    window = Window(start, start + int(duration_s * 1e9))
    children: list[BaseProcess] = []
    interrupted = True
    try:
        conns = _fork_loaders(spec, wl, window, procs, carried or {}, children)
        pids = [c.pid for c in children if c.pid is not None]
        _sleep_until_ns(window.start_ns)
        before = CpuSample.take(server_pids, pids)
        _sleep_until_ns(window.end_ns)
        after = CpuSample.take(server_pids, pids)
        rec, learned = _collect(conns, window.end_ns + int((CLIENT_TIMEOUT_S + 10) * 1e9))
        interrupted = False
    finally:
        _reap(children, interrupted)
    result = summarize(wl.op, rec, before, after, procs, spec.name, wl.clients)
    return result, {**(carried or {}), **learned}


# ---------------------------------------------------------------------- main
def code_version() -> str:
    """`git describe`-like id of the code under test: commit, plus "+dirty" if modified."""

    def git(*args: str) -> str:
        r = subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if "model name" in ln), "")
    except OSError:
        pass
    return {
        "code": code_version(),
        "nproc": NPROC,
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg": _loadavg(),
    }


def _loadavg() -> str:
    """1/5/15-minute load average when the run starts: other work on the machine."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def _names(text: str, known: dict[str, Any], what: str, p: argparse.ArgumentParser) -> list[str]:
    names = [x for x in text.split(",") if x]
    if not names or any(x not in known for x in names):
        p.error(f"{what}: unknown {text!r} (known: {', '.join(known)})")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ops/bench", description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group()
    where.add_argument("--dir", help="use the running cluster of ops/cluster --dir DIR")
    where.add_argument("--start", action="store_true", help="start a private cluster (default)")
    p.add_argument("--nodes", type=int, default=3, help="nodes of the private cluster (and etcd)")
    p.add_argument("--keep", action="store_true", help="keep the private clusters' dirs")
    p.add_argument(
        "--mode", default="eventual", help=f"comma-separated, run in order: {','.join(MODES)}"
    )
    p.add_argument("--op", default="put,get", help="comma-separated, run in order: put,get")
    p.add_argument(
        "--clients", default="16", help="concurrent closed-loop workers; a list (1,16) runs each"
    )
    p.add_argument(
        "--compare",
        choices=["etcd"],
        help="then run the same workload against a private etcd cluster (if installed)",
    )
    p.add_argument("--procs", type=int, default=1, help="load-generator processes")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per op")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    p.add_argument("--value-size", dest="value_size", type=int, default=64)
    p.add_argument("--keys", type=int, default=10000)
    p.add_argument("--seed", type=int)
    p.add_argument("--json", dest="json_out", metavar="OUT", help="also write results here")
    a = p.parse_args(argv)
    a.ops = _names(a.op, OPS, "--op", p)
    a.modes = _names(a.mode, MODES, "--mode", p)
    try:
        a.clients = [int(c) for c in a.clients.split(",") if c]
    except ValueError:
        p.error(f"--clients: integers expected, got {a.clients!r}")
    if not a.clients or min(a.clients) < 1 or a.procs < 1 or a.keys < 1:
        p.error("--clients, --procs, --keys must be >= 1")
    for clients in a.clients:
        parts = split_load(clients, [""] * a.keys, a.procs)
        if any(len(part.keys) < len(part.workers) for part in parts):
            p.error(f"--keys {a.keys} is too few for {clients} clients in {len(parts)} processes")
    if a.value_size < 0 or a.duration <= 0:
        p.error("--value-size must be >= 0, --duration > 0")
    a.seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 31)
    return a


def _cluster(a: argparse.Namespace) -> AbstractContextManager[Cluster]:
    return running_cluster(a.dir) if a.dir else local_cluster(a.nodes, a.keep)


def run_target(
    spec: TargetSpec, server_pids: Sequence[int], a: argparse.Namespace
) -> tuple[float, list[PhaseResult]]:
    """Every (clients, op) phase of `a` against one system: its idle CPU and the results.
    Keys are preloaded once, before the first op that needs them. Each phase's clients
    carry on from what the earlier phases' learned (`Target.carried`): an eventual put is
    an overwrite with the key's context in every phase, not a blind write."""
    print(f"target: {spec.name} on {', '.join(spec.nodes)}", flush=True)
    asyncio.run(spec.prepare())
    idle = idle_server_cores(server_pids)
    print(f"idle server CPU: {idle:.3f} cores over {len(server_pids)} server processes")
    results: list[PhaseResult] = []
    preloaded = False
    carried: Carried = {}
    for clients in a.clients:
        for op in a.ops:
            wl = Workload(op, a.keys, a.value_size, clients, a.seed)
            if OPS[op].needs_preload and not preloaded:
                print(f"preloading {a.keys} keys ...", flush=True)
                t = time.monotonic()
                carried.update(asyncio.run(preload(spec, wl)))
                print(f"preloaded {a.keys} keys in {time.monotonic() - t:.1f} s", flush=True)
                preloaded = True
            print(f"--- {spec.name}: {op}, {clients} client{'s' if clients > 1 else ''}")
            procs = load_processes(a.procs, clients)
            res, carried = run_phase(spec, wl, server_pids, procs, a.warmup, a.duration, carried)
            print(render(res), flush=True)
            results.append(res)
    return idle, results


def _ratio(kv: float | None, other: float | None) -> str:
    return "-" if kv is None or not other else f"{kv / other:.2f}"


def comparison(results: Sequence[PhaseResult], other: str) -> str:
    """kv next to `other` for each (op, clients) both ran: ratio = kv / other."""
    ref = {(r.op, r.clients): r for r in results if r.target == other}
    lines = [
        f"comparison with {other} (same op, clients, keys, value size and seed; "
        "ratio = kv / etcd: ops/s > 1 = kv faster, p99 > 1 = kv slower)",
        f"{'kv target':<16} {'op':<4} {'clients':>7} | {'kv ops/s':>9} {'etcd ops/s':>10} "
        f"{'ratio':>6} | {'kv p99 ms':>9} {'etcd p99 ms':>11} {'ratio':>6} | "
        f"{'kv p50':>7} {'etcd p50':>8}",
    ]
    for r in results:
        e = ref.get((r.op, r.clients))
        if r.target == other or e is None:
            continue
        kv99, e99 = r.latency_ms["p99"], e.latency_ms["p99"]
        lines.append(
            f"{r.target:<16} {r.op:<4} {r.clients:>7} | {r.ops_per_s:>9.1f} "
            f"{e.ops_per_s:>10.1f} {_ratio(r.ops_per_s, e.ops_per_s):>6} | {_ms(kv99):>9} "
            f"{_ms(e99):>11} {_ratio(kv99, e99):>6} | {_ms(r.latency_ms['p50']):>7} "
            f"{_ms(e.latency_ms['p50']):>8}"
        )
    return "\n".join(lines)


def compare_etcd(a: argparse.Namespace, results: list[PhaseResult]) -> dict[str, Any]:
    """Run the same phases against a private etcd; never fails when etcd is missing."""
    from ops import etcd_target

    binary = etcd_target.etcd_binary()
    if binary is None:
        print(
            "--compare etcd: no `etcd` binary on PATH (Debian package etcd-server): "
            "comparison skipped",
            flush=True,
        )
        return {"skipped": "etcd not installed"}
    print(f"durability: {etcd_target.FSYNC_NOTE}", flush=True)
    with etcd_target.local_etcd(a.nodes, binary, a.keep) as ec:
        spec = etcd_target.EtcdSpec(ec.nodes, ec.version)
        idle, etcd_results = run_target(spec, ec.pids, a)
    results.extend(etcd_results)
    print(comparison(results, spec.name), flush=True)
    return {"target": spec.name, "idle_server_cores": idle, "fsync": etcd_target.FSYNC_NOTE}


def run(a: argparse.Namespace) -> dict[str, Any]:
    facts = machine()
    clients = ",".join(map(str, a.clients))
    print(
        f"kv bench: mode={','.join(a.modes)} ops={','.join(a.ops)} clients={clients} "
        f"procs={a.procs} duration={a.duration:g}s warmup={a.warmup:g}s value={a.value_size}B "
        f"keys={a.keys} seed={a.seed}{' compare=' + a.compare if a.compare else ''}\n"
        f"machine: nproc={facts['nproc']} python={facts['python']} "
        f"cpu={facts['cpu'] or '?'} code={facts['code']} loadavg={facts['loadavg']}",
        flush=True,
    )
    results: list[PhaseResult] = []
    idle: dict[str, float] = {}
    nodes: list[str] = []
    with _cluster(a) as cluster:
        nodes = list(cluster.nodes)
        for mode in a.modes:
            spec = MODES[mode](cluster)
            print(f"durability: {FSYNC_NOTES[mode]}", flush=True)
            if os.environ.get("KV_NODE_SETTINGS") and not a.dir:  # the private cluster's nodes
                print(f"node settings: KV_NODE_SETTINGS={os.environ['KV_NODE_SETTINGS']}")
            idle[spec.name], mode_results = run_target(spec, cluster.pids, a)
            results.extend(mode_results)
    compared: dict[str, Any] = {}
    if a.compare == "etcd":
        compared = compare_etcd(a, results)
        if "target" in compared:
            idle[compared["target"]] = compared.pop("idle_server_cores")
    config = {k: getattr(a, k) for k in ("modes", "clients", "procs", "duration", "warmup")}
    config |= {"ops": a.ops, "value_size": a.value_size, "keys": a.keys, "seed": a.seed}
    config |= {"nodes": nodes, "compare": compared or None}
    return {
        "config": config,
        "machine": facts,
        "idle_server_cores": idle,
        "results": [asdict(r) for r in results],
    }


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # so `finally` stops the private cluster
    try:
        report = run(a)
    except KeyboardInterrupt:
        print("ops/bench: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"ops/bench: {exc}", file=sys.stderr)
        return 1
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"wrote {a.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
