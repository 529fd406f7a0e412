"""etcd as a system under test for ops/bench (`--compare etcd`, docs/benchmarks.md).

- `etcd_binary()`: the `etcd` found on PATH (Debian `etcd-server`), or None: the caller
  then says so and skips the comparison;
- `local_etcd(n)`: a private n-member etcd cluster on 127.0.0.1 (client and peer ports
  below 32768, checked bindable; data dirs in a temporary dir). It is always stopped by
  pid: SIGTERM, then SIGKILL after 10 s, on success, on an error, on Ctrl-C and SIGTERM;
  the members also get SIGTERM from the kernel if the bench process dies
  (PR_SET_PDEATHSIG). Durability is etcd's default: the WAL is fsynced before a write is
  acknowledged (`--unsafe-no-fsync` is never passed);
- `EtcdSpec` / `EtcdTarget`: the bench `TargetSpec`/`Target` over etcd's HTTP/JSON gRPC
  gateway (`POST /v3/kv/put`, `POST /v3/kv/range`, keys and values base64), aiohttp with
  keep-alive. Range requests are linearizable unless `serializable` is set, which it
  never is here.

Standard library + aiohttp only; it imports nothing from ops/bench (bench imports it lazily).
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

CLIENT_TIMEOUT_S = 10.0
START_DEADLINE_S = 30.0
STOP_GRACE_S = 10.0
FSYNC_NOTE = (
    "etcd default: WAL fdatasync before a write is acknowledged (--unsafe-no-fsync not set)"
)


def etcd_binary() -> str | None:
    return shutil.which("etcd")


def etcd_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    first = out.splitlines()[0] if out else ""
    return first.split(":", 1)[1].strip() if ":" in first else first.strip() or "?"


@dataclass(frozen=True)
class EtcdCluster:
    nodes: tuple[str, ...]  # "127.0.0.1:port" of each member's client URL
    pids: tuple[int, ...]
    dir: str
    version: str


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """`count` distinct bindable ports in [20000, 32768): below the ephemeral range, so no
    client connection can take one between the check and etcd's bind."""
    rng = random.SystemRandom()
    for _ in range(200):
        base = rng.randrange(20000, 32768 - count)
        ports = list(range(base, base + count))
        if all(_bindable(p) for p in ports):
            return ports
    raise RuntimeError("no bindable port range below 32768 found for etcd")


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when the bench process dies, even by SIGKILL."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _healthy(client: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{client}/health", timeout=1.0) as r:
            return bool(json.loads(r.read()).get("health") == "true")
    except (OSError, ValueError, urllib.error.URLError):
        return False


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each member by pid, wait, SIGKILL what is left."""
    for proc in procs:
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    end = time.monotonic() + STOP_GRACE_S
    for proc in procs:
        try:
            proc.wait(timeout=max(end - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def local_etcd(n: int, binary: str, keep: bool = False) -> Iterator[EtcdCluster]:
    """Start an n-member etcd cluster on loopback in a temporary dir; always stop it."""
    d = tempfile.mkdtemp(prefix="kv-bench-etcd-")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports = free_ports(2 * n)
        clients = [f"127.0.0.1:{p}" for p in ports[:n]]
        peers = [f"127.0.0.1:{p}" for p in ports[n:]]
        names = [f"e{i + 1}" for i in range(n)]
        initial = ",".join(f"{m}=http://{p}" for m, p in zip(names, peers, strict=True))
        token = f"kv-bench-{os.getpid()}-{random.SystemRandom().randrange(1 << 30)}"
        version = etcd_version(binary)
        print(
            f"starting a local {n}-member etcd {version} in {d} (client ports "
            f"{', '.join(c.rsplit(':', 1)[1] for c in clients)})",
            flush=True,
        )
        for name, client, peer in zip(names, clients, peers, strict=True):
            cmd = [
                binary,
                "--name", name,
                "--data-dir", os.path.join(d, name),
                "--listen-client-urls", f"http://{client}",
                "--advertise-client-urls", f"http://{client}",
                "--listen-peer-urls", f"http://{peer}",
                "--initial-advertise-peer-urls", f"http://{peer}",
                "--initial-cluster", initial,
                "--initial-cluster-token", token,
                "--initial-cluster-state", "new",
            ]  # fmt: skip
            with open(os.path.join(d, f"{name}.log"), "ab") as log:
                procs.append(
                    subprocess.Popen(
                        cmd,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                        preexec_fn=_die_with_parent,
                    )
                )
        end = time.monotonic() + START_DEADLINE_S
        while not all(_healthy(c) for c in clients):
            for name, proc in zip(names, procs, strict=True):
                if proc.poll() is not None:
                    log_path = os.path.join(d, f"{name}.log")
                    raise RuntimeError(
                        f"etcd member {name} exited ({proc.returncode}) during start-up; "
                        f"end of {log_path}:\n{_tail(log_path)}"
                    )
            if time.monotonic() > end:
                raise RuntimeError(f"etcd not healthy after {START_DEADLINE_S:.0f}s (logs in {d})")
            time.sleep(0.1)
        yield EtcdCluster(tuple(clients), tuple(p.pid for p in procs), d, version)
    finally:
        _stop(procs)
        if procs:
            print(f"stopped etcd (pids {', '.join(str(p.pid) for p in procs)})", flush=True)
        if keep:
            print(f"etcd data and logs kept in {d}", flush=True)
        else:
            shutil.rmtree(d, ignore_errors=True)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _etcd_error(status: int, raw: bytes) -> str:
    try:
        body = json.loads(raw)
        return f"etcd_{body.get('code', status)}"
    except (ValueError, AttributeError):
        return f"http_{status}"


class EtcdTarget:
    """One load process's connection to etcd's JSON gateway; worker w uses member w mod n."""

    def __init__(self, nodes: tuple[str, ...], connections: int) -> None:
        self._put = [f"http://{n}/v3/kv/put" for n in nodes]
        self._range = [f"http://{n}/v3/kv/range" for n in nodes]
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S),
            skip_auto_headers=("User-Agent",),
        )
        self._headers = {"Content-Type": "application/json"}

    async def _post(self, url: str, doc: dict[str, Any]) -> tuple[int, bytes]:
        body = json.dumps(doc).encode()
        async with self._session.post(url, data=body, headers=self._headers) as resp:
            return resp.status, await resp.read()

    async def put(self, node: int, key: str, value: str) -> str | None:
        # the value is the JSON text kv stores for the same request ("..."), so both
        # systems carry the same bytes
        doc = {"key": _b64(key), "value": _b64(json.dumps(value))}
        status, raw = await self._post(self._put[node], doc)
        return None if status == 200 else _etcd_error(status, raw)

    async def get(self, node: int, key: str) -> str | None:
        status, raw = await self._post(self._range[node], {"key": _b64(key)})
        if status != 200:
            return _etcd_error(status, raw)
        return None if json.loads(raw).get("kvs") else "not_found"

    async def load(self, node: int, key: str, value: str) -> str | None:
        return await self.put(node, key, value)

    async def close(self) -> None:
        await self._session.close()

    def carried(self) -> dict[str, str]:
        return {}  # an etcd put needs no context

    def carry_on(self, carried: dict[str, str]) -> None:
        pass


@dataclass(frozen=True)
class EtcdSpec:
    nodes: tuple[str, ...]
    version: str = "?"
    connections: int = 64

    @property
    def name(self) -> str:
        return f"etcd-{self.version}"

    async def prepare(self) -> None:
        """Wait until a put through every member succeeds (a leader is elected)."""
        target = self.open()
        try:
            for node in range(len(self.nodes)):
                end = time.monotonic() + START_DEADLINE_S
                while (code := await self._probe(target, node)) is not None:
                    if time.monotonic() > end:
                        raise RuntimeError(f"etcd {self.nodes[node]}: probe put failed: {code}")
                    await asyncio.sleep(0.1)
        finally:
            await target.close()

    @staticmethod
    async def _probe(target: EtcdTarget, node: int) -> str | None:
        try:
            return await target.put(node, "bench-probe", "x")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return type(exc).__name__

    def open(self) -> EtcdTarget:
        return EtcdTarget(self.nodes, self.connections)
