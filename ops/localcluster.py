"""A local cluster of `ops/cluster`, driven from Python: the one wrapper that ops/bench,
ops/verify, ops/ae_measure and the cluster tests (tests/cluster/harness.py) share.

    c = LocalCluster(n=3)          # private: a temp dir, a free port range below 32768
    with c:                        # leaving the block always runs c.down()
        c.up()                     # ops/cluster up -n 3 --base-port P --no-examples
        c.kill("n3"); c.start("n3")
        c.add()                    # ops/cluster add: one more node, joining (returns its id)
    c = LocalCluster("data")       # someone else's: status() reads it, nothing stops it

Every method runs `ops/cluster.py CMD ... --dir DIR` with this interpreter, under a
timeout; ops/cluster itself waits for health with deadlines. `LocalCluster(netns=True)`
starts the nodes with `up --netns` (one network namespace per node, docs/netns.md), which
`partition(...)` and `heal()` need; where that is impossible `up()` raises NetnsRefused.
`LocalCluster(settings={...})`: node settings (kv/config.py names) for every node it
starts — `up`, `add` and `start` alike — passed as KV_NODE_SETTINGS (kv/__main__.py).

Every node pid ever seen (in `status --json` and in DIR/<node>/node.pid) is remembered.
`down()` runs `ops/cluster down` and `cleanup`, SIGKILLs each remembered pid whose command
line still names DIR, and removes a --netns run's namespaces in process as a last resort;
`leftovers()` says what of the cluster still exists. Standard library and ops/ only.
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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops import netns as netns_ops
from ops.ports import free_base_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER_PY = os.path.join(ROOT, "ops", "cluster.py")
EXIT_UNAVAILABLE = netns_ops.EXIT_UNAVAILABLE  # up --netns: no root, no `ip` / `nft`
EXIT_BUSY = netns_ops.EXIT_BUSY  # up --netns: another run holds 10.77.0.0/24
COMMAND_TIMEOUT_S = 180.0  # one ops/cluster command (up waits up to 90 s for health)
TEARDOWN_TIMEOUT_S = 90.0

__all__ = [
    "ClusterError",
    "LocalCluster",
    "NetnsRefused",
    "alive",
    "free_base_port",
]


class ClusterError(RuntimeError):
    """An ops/cluster command exited non-zero; `result` holds its output."""

    def __init__(
        self, args: tuple[str, ...], result: subprocess.CompletedProcess[str], more: str = ""
    ) -> None:
        out = (result.stderr or result.stdout).strip()
        super().__init__(f"ops/cluster {' '.join(args)} exited {result.returncode}: {out}{more}")
        self.result = result


class NetnsRefused(Exception):
    """`up --netns` cannot run here (`code` EXIT_UNAVAILABLE: no root, `ip` or `nft`) or
    10.77.0.0/24 stayed taken by another run for the whole wait (EXIT_BUSY). Nothing of the
    run is left running; `reason` is ops/cluster's message."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def alive(pid: int) -> bool:
    """Running and not a zombie (an exited child not yet reaped is not running)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _names_dir(pid: int, directory: str) -> bool:
    """Whether the process's command line names the cluster directory (a node of it: its
    --data-dir is inside), so a recycled pid is never killed."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return os.fsencode(directory) in f.read()
    except OSError:
        return False


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """SIGINT and SIGTERM are ignored during a teardown: a second Ctrl-C must not cut it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


class LocalCluster:
    """One ops/cluster directory. `private` (no `directory` given): a new temp dir and a
    free base port; `down()` stops it and removes the dir (unless `keep`, or something of
    the run is still there, so that `ops/cluster cleanup --dir` can retry)."""

    def __init__(
        self,
        directory: str | None = None,
        *,
        n: int = 3,
        netns: bool = False,
        base_port: int | None = None,
        rng: random.Random | None = None,
        prefix: str = "kv-cluster-",
        keep: bool = False,
        logs_in_errors: bool = False,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.private = directory is None
        self.dir = (
            tempfile.mkdtemp(prefix=prefix) if directory is None else os.path.abspath(directory)
        )
        self.n = n
        self.netns = netns  # start with `up --netns`
        if base_port is None and self.private:
            base_port = free_base_port(n, rng)
        self.base_port = base_port  # None: an existing layout's ports (`up` keeps them)
        self.keep = keep
        self.logs_in_errors = logs_in_errors  # append the nodes' log tails to ClusterError
        self.settings = dict(settings or {})  # node settings for every node started here
        self.nodes: dict[str, dict[str, Any]] = {}  # id -> `status --json` entry
        self.pids: set[int] = set()  # every node pid seen, for down()'s final sweep
        self.netns_status: dict[str, Any] | None = None  # status --json "netns" (run_id, partition)
        self.topo: netns_ops.Topology | None = None  # the run's namespaces, once recorded

    # ------------------------------------------------------------------ commands
    def run(
        self, *args: str, timeout: float = COMMAND_TIMEOUT_S, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`ops/cluster ARGS --dir DIR`; ClusterError on a non-zero exit when `check`."""
        cmd = [sys.executable, CLUSTER_PY, *args, "--dir", self.dir]
        env = None
        if self.settings:
            env = dict(os.environ, KV_NODE_SETTINGS=json.dumps(self.settings))
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        if check and r.returncode != 0:
            raise ClusterError(args, r, "\n" + self.logs() if self.logs_in_errors else "")
        return r

    def status(self) -> list[dict[str, Any]]:
        """`status --json` nodes: {"id", "pid", "http", "raft", "healthy", "member"[, "seeds"]
        [, "netns"]}; "member" is false for a node that is still joining, None when no node
        answered."""
        doc = json.loads(self.run("status", "--json").stdout)
        nodes: list[dict[str, Any]] = doc["nodes"]
        self.nodes = {nd["id"]: nd for nd in nodes}
        self.pids |= {int(nd["pid"]) for nd in nodes if nd["pid"]}
        self.netns_status = doc.get("netns")
        return nodes

    def refresh(self) -> None:
        """status() where it can be read, plus the pids in DIR/<node>/node.pid and the
        recorded namespaces: whatever a failed or interrupted command left is known."""
        try:
            self.status()
        except (ClusterError, ValueError, KeyError, subprocess.TimeoutExpired):
            pass
        self.pids |= self.pid_files()
        self._read_topology()

    def pid_files(self) -> set[int]:
        pids = set()
        for node in os.listdir(self.dir) if os.path.isdir(self.dir) else []:
            try:
                with open(os.path.join(self.dir, node, "node.pid")) as f:
                    pids.add(int(f.read().strip()))
            except (OSError, ValueError):
                pass
        return pids

    def _read_topology(self) -> None:
        try:
            with open(os.path.join(self.dir, "cluster.json")) as f:
                rec = json.load(f).get("netns")
            if rec:
                self.topo = netns_ops.Topology.from_record(rec)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass

    def http(self, node: str) -> str:
        return str(self.nodes[node]["http"])

    def addresses(self) -> list[str]:
        return [self.http(n) for n in sorted(self.nodes)]

    def healthy_addresses(self) -> dict[str, str]:
        return {nd["id"]: nd["http"] for nd in self.status() if nd["healthy"]}

    # ------------------------------------------------------------------ life cycle
    def up(
        self, busy_wait_s: float = 0.0, say: Callable[[str], None] | None = None
    ) -> LocalCluster:
        """Start every node (again: an existing DIR keeps its data) and wait for health.
        --netns: NetnsRefused when impossible, or when the address range stays taken by
        another run for `busy_wait_s` (retried every second; `say` hears about the wait)."""
        args = ("up", *(["--netns"] if self.netns else []), "-n", str(self.n), "--no-examples")
        if self.base_port is not None:
            args += ("--base-port", str(self.base_port))
        if not self.netns:
            try:
                self.run(*args)
            finally:
                self.refresh()
            return self
        end = time.monotonic() + busy_wait_s
        while True:
            try:
                r = self.run(*args, check=False)
            finally:
                self.refresh()
            if r.returncode == 0:
                return self
            reason = (r.stderr or r.stdout).strip().removeprefix("ops/cluster: ")
            if r.returncode == EXIT_BUSY and time.monotonic() < end:
                if say is not None:
                    say(f"waiting up to {busy_wait_s:.0f}s: {reason}")
                    say = None
                time.sleep(1.0)
                continue
            if r.returncode in (EXIT_UNAVAILABLE, EXIT_BUSY):
                raise NetnsRefused(r.returncode, reason)
            raise ClusterError(args, r, "\n" + self.logs() if self.logs_in_errors else "")

    def add(
        self,
        node_id: str | None = None,
        timeout: float = COMMAND_TIMEOUT_S,
        commit: bool = False,
        wait: bool = False,
    ) -> str:
        """Start one more node (`ops/cluster add [--id ID]`); its id. Without `commit` it
        answers /v1/health as `joining` (no plan adds it); with it, a plan adds it and
        `wait` follows the plan to the end."""
        self.refresh()
        before = set(self.nodes)
        flags = [*(["--id", node_id] if node_id else []), *([] if commit else ["--no-commit"])]
        try:
            self.run("add", *flags, *(["--wait"] if wait else []), timeout=timeout)
        finally:
            self.refresh()
        (added,) = set(self.nodes) - before
        return added

    def remove(
        self, node_id: str, force: bool = False, wait: bool = True, timeout: float = 700.0
    ) -> None:
        """`ops/cluster remove ID [--force] [--wait]`: a plan removes it; with `wait`, its
        process is stopped once every transfer is done."""
        flags = [*(["--force"] if force else []), *(["--wait"] if wait else [])]
        try:
            self.run("remove", node_id, *flags, timeout=timeout)
        finally:
            self.refresh()

    def stop(self) -> None:
        """Stop every node and keep the data (`ops/cluster down`); `up()` restarts them."""
        self.refresh()
        self.run("down", timeout=TEARDOWN_TIMEOUT_S)

    def kill(self, node: str) -> None:
        """SIGKILL (`ops/cluster kill`)."""
        self.run("kill", node)

    def pause(self, node: str) -> None:
        """SIGSTOP (`ops/cluster pause`)."""
        self.run("pause", node)

    def resume(self, node: str) -> None:
        """SIGCONT (`ops/cluster resume`)."""
        self.run("resume", node)

    def start(self, node: str, timeout: float = COMMAND_TIMEOUT_S) -> None:
        """Restart a stopped node and wait until it is healthy (`ops/cluster start`)."""
        self.run("start", node, timeout=timeout)
        self.refresh()

    def partition(self, *args: str) -> None:
        """`ops/cluster partition ARGS` (a --netns cluster): isolate N.. | split A,B C |
        oneway SRC DST. Each call replaces the previous partition."""
        self.run("partition", *args)

    def heal(self) -> None:
        """Remove every partition rule (`ops/cluster heal`)."""
        self.run("heal")

    def ns(self, node: str) -> str:
        """The network namespace of a node of a --netns cluster."""
        assert self.topo is not None, "not a --netns cluster"
        return self.topo.ns(node)

    def restore(self, deadline_s: float) -> None:
        """Undo every fault: no partition rule, every node running and resumed, each
        answering /v1/health within `deadline_s` (TimeoutError otherwise)."""
        self.status()
        if self.netns_status is not None:
            self.heal()
        for nd in self.status():
            if nd["pid"]:  # SIGCONT is harmless to a running node
                try:
                    self.resume(nd["id"])
                except (ClusterError, subprocess.TimeoutExpired):
                    pass
            else:
                self.start(nd["id"], timeout=deadline_s + 30)
        end = time.monotonic() + deadline_s
        while not all(nd["healthy"] for nd in self.status()):
            if time.monotonic() > end:
                raise TimeoutError(f"the cluster did not heal within {deadline_s:.0f}s")
            time.sleep(0.2)

    def logs(self, lines: int = 20) -> str:
        """The last `lines` of every node's node.log."""
        out = []
        for node in sorted(os.listdir(self.dir)) if os.path.isdir(self.dir) else []:
            path = os.path.join(self.dir, node, "node.log")
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    out.append(f"--- {node}\n" + "".join(f.readlines()[-lines:]))
        return "\n".join(out)

    def down(self, keep: bool | None = None) -> list[str]:
        """Stop everything of this cluster; returns what is still there (leftovers()).
        A private cluster's dir is removed unless `keep` or something is left."""
        keep = self.keep if keep is None else keep
        with _signals_ignored():
            self.refresh()
            for cmd in ("down", "cleanup"):  # cleanup: what a crash left (processes, rules)
                try:
                    self.run(cmd, timeout=TEARDOWN_TIMEOUT_S, check=False)
                except subprocess.TimeoutExpired:
                    pass
            for pid in sorted(self.pids):  # nothing we started may outlive us
                if alive(pid) and _names_dir(pid, self.dir):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            if self.topo is not None:  # last resort, in process: the run's namespaces go
                try:
                    netns_ops.destroy(self.topo)
                except netns_ops.NetnsError:  # e.g. no `ip`: nothing can have been created
                    pass
            left = self.leftovers()
            if self.private and not keep and not left:
                shutil.rmtree(self.dir, ignore_errors=True)
        return left

    def leftovers(self) -> list[str]:
        """What of this cluster still exists: node processes and, for a --netns cluster,
        namespaces, the host link and the registry entry."""
        left = [
            f"process {pid}"
            for pid in sorted(self.pids)
            if alive(pid) and _names_dir(pid, self.dir)
        ]
        if self.topo is not None:
            try:
                left += netns_ops.leftovers(self.topo)
            except netns_ops.NetnsError as exc:  # `ip` itself failing: say so, not guess
                left.append(f"(could not check the namespaces: {exc})")
        return left

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
