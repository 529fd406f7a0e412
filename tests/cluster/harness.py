"""Real node processes for the cluster tier, driven through ops/cluster (DESIGN.md §7).

Every wait is a poll with a deadline; every process a test starts is stopped by pid in
`Cluster.down()`, which the fixture calls even when the test fails.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port(n: int, rng: random.Random) -> int:
    """A base P with P..P+n-1 and P+100..P+100+n-1 free, below the ephemeral range (so no
    client socket can take a stopped node's port before it restarts)."""
    for _ in range(200):
        base = rng.randrange(20000, 30000 - 200)
        ports = [base + i for i in range(n)] + [base + 100 + i for i in range(n)]
        if all(_port_free(p) for p in ports):
            return base
    raise RuntimeError("no free port range found")


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
    def __init__(self, n: int = 3, seed: int | None = None) -> None:
        self.n = n
        self.seed = seed if seed is not None else random.SystemRandom().randrange(1 << 30)
        print(f"cluster seed={self.seed}")
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
        try:
            self.ops("up", "-n", str(self.n), "--base-port", str(self.base_port), "--no-examples")
        finally:
            self.refresh()
        return self

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
        for pid in self.pids:  # belt and braces: nothing we started may outlive the test
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
