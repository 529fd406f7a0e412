"""Real node processes for the cluster tier, driven through ops/cluster (DESIGN.md §7).

Every wait is a poll with a deadline; every process a test starts is stopped by pid in
`Cluster.down()`, which the fixture calls even when the test fails.

`Cluster(netns=True)` starts the nodes with `ops/cluster up --netns` (one network namespace
per node, docs/netns.md) so that `partition(...)` and `heal()` can cut links. Where that is
impossible (no root, no `ip`/`nft`: ops/cluster exits 3) `up()` skips the test with the
reason; while another --netns cluster holds 10.77.0.0/24 (exit 4) it waits up to
BUSY_WAIT_S, then skips. `down()` runs `ops/cluster down` and `cleanup`, kills every node
pid it saw and, for a --netns cluster, removes the run's namespaces in-process as a last
resort.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from kv.client import KvClient
from ops import netns as netns_ops
from ops.ports import free_base_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUSY_WAIT_S = 120.0  # how long up(netns=True) waits for another run to free 10.77.0.0/24


def wait_until(pred: Callable[[], Any], deadline_s: float, what: str, interval: float = 0.1) -> Any:
    end = time.monotonic() + deadline_s
    last: Any = None
    while time.monotonic() < end:
        try:
            last = pred()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - a failing probe is just "not yet"
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what} (last: {last!r})")


class Cluster:
    topo: netns_ops.Topology | None = None  # the run's namespaces (netns=True, once recorded)

    def __init__(self, n: int = 3, seed: int | None = None, netns: bool = False) -> None:
        self.n = n
        self.seed = seed if seed is not None else random.SystemRandom().randrange(1 << 30)
        print(f"cluster seed={self.seed}")
        self.netns = netns
        self.dir = tempfile.mkdtemp(prefix="kv-cluster-")
        self.base_port = free_base_port(n, random.Random(self.seed))
        self.nodes: dict[str, dict[str, Any]] = {}
        self.pids: set[int] = set()

    def ops(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, os.path.join(ROOT, "ops", "cluster.py"), *args, "--dir", self.dir]
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}\n{self.logs()}"
            )
        return r

    def up(self) -> Cluster:
        if self.netns:
            return self._up_netns()
        try:
            self.ops("up", "-n", str(self.n), "--base-port", str(self.base_port), "--no-examples")
        finally:
            self.refresh()
        return self

    def _up_netns(self) -> Cluster:
        args = ["up", "--netns", "-n", str(self.n), "--base-port", str(self.base_port)]
        end = time.monotonic() + BUSY_WAIT_S
        while True:
            r = self.ops(*args, "--no-examples", check=False)
            self._read_topology()
            if r.returncode == netns_ops.EXIT_UNAVAILABLE:
                pytest.skip(f"partition tests skipped: {r.stderr.strip()}")
            if r.returncode != netns_ops.EXIT_BUSY:
                break
            if time.monotonic() > end:
                pytest.skip(f"10.77.0.0/24 stayed busy for {BUSY_WAIT_S:.0f}s: {r.stderr.strip()}")
            time.sleep(1.0)
        self.refresh()
        if r.returncode != 0:
            raise RuntimeError(
                f"up --netns -> {r.returncode}\n{r.stdout}\n{r.stderr}\n{self.logs()}"
            )
        return self

    def _read_topology(self) -> None:
        try:
            with open(os.path.join(self.dir, "cluster.json")) as f:
                self.topo = netns_ops.Topology.from_record(json.load(f)["netns"])
        except (OSError, ValueError, KeyError, TypeError):
            pass

    def partition(self, *args: str) -> None:
        """`ops/cluster partition ARGS` (a --netns cluster): isolate N.. | split A,B C | oneway
        SRC DST. Each call replaces the previous partition."""
        self.ops("partition", *args)

    def heal(self) -> None:
        """Remove every partition rule (`ops/cluster heal`)."""
        self.ops("heal")

    def ns(self, node: str) -> str:
        """The network namespace of a node of a --netns cluster."""
        assert self.topo is not None, "not a --netns cluster"
        return self.topo.ns(node)

    def refresh(self) -> None:
        try:
            data = json.loads(self.ops("status", "--json").stdout)
        except (RuntimeError, ValueError):
            return
        self.nodes = {nd["id"]: nd for nd in data["nodes"]}
        self.pids |= {nd["pid"] for nd in data["nodes"] if nd["pid"]}

    def http(self, node_id: str) -> str:
        return str(self.nodes[node_id]["http"])

    def addresses(self) -> list[str]:
        return [self.http(n) for n in sorted(self.nodes)]

    def kill(self, node_id: str) -> None:
        self.ops("kill", node_id)

    def pause(self, node_id: str) -> None:
        self.ops("pause", node_id)

    def resume(self, node_id: str) -> None:
        self.ops("resume", node_id)

    def start(self, node_id: str) -> None:
        self.ops("start", node_id)
        self.refresh()

    def logs(self, lines: int = 20) -> str:
        out = []
        for node_id in sorted(os.listdir(self.dir)) if os.path.isdir(self.dir) else []:
            path = os.path.join(self.dir, node_id, "node.log")
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    out.append(f"--- {node_id}\n" + "".join(f.readlines()[-lines:]))
        return "\n".join(out)

    def down(self) -> None:
        self.refresh()
        self.ops("down", check=False)
        self.ops("cleanup", check=False)  # what a crash left: processes, namespaces, rules
        for pid in self.pids:  # belt and braces: nothing we started may outlive the test
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.topo is not None:  # last resort, in-process: the run's namespaces must go
            try:
                netns_ops.destroy(self.topo)
            except netns_ops.NetnsUnavailable:  # no `ip`: nothing can have been created
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What of this cluster still exists after `down()`: node processes still running
        and, for a --netns cluster, namespaces, the host link and the registry entry."""
        left = [f"process {pid}" for pid in sorted(self.pids) if _alive(pid)]
        if self.topo is not None:
            left += netns_ops.leftovers(self.topo)
        return left


def _alive(pid: int) -> bool:
    """Running and not a zombie (an exited child not yet reaped is not running)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def alive(pid: int) -> bool:
    """Running and not a zombie (public name for tests)."""
    return _alive(pid)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM to the test run raises, so `finally` blocks still stop nodes and namespaces."""

    def handler(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


async def hint_backlog(client: KvClient, nodes: list[str]) -> int:
    """Hints pending on `nodes` for any owner, from /v1/cluster (hinted handoff)."""
    total = 0
    for node in nodes:
        info = (await client.cluster(node=node))["hinted_handoff"]
        total += sum(info["pending"].values())
    return total
