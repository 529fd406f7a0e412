"""`ops/cluster up --netns` and partition faults (issue 3 item 4, docs/netns.md).

Cluster tests need root, iproute2 and nftables; without them they are skipped with the reason
`ops/cluster` gives (its exit code 3). Every test that creates namespaces checks at its end
that none of them, no veth and no nft table of the run is left, and the fixture always runs
`down` and `cleanup` (also on SIGTERM, which it turns into an exception).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any

import pytest

from kv.client import KvClient
from kv.errors import KvError, QuorumUnavailable
from ops import netns
from tests.cluster.harness import ENABLE_NETNS, ROOT, Cluster, alive, sigterm_raises, wait_until

CLUSTER_PY = os.path.join(ROOT, "ops", "cluster.py")
NODES = ("n1", "n2", "n3")
KS = "ev"
BUSY_WAIT_S = 120.0
POLL_S = 60.0  # deadline of the convergence polls: generous, they are not bounds


# ---------------------------------------------------------------------- pure: rules
def test_isolate_cuts_both_directions_between_the_node_and_every_other() -> None:
    fault = netns.isolate(NODES, ["n1"])
    pairs = {(d.src, d.dst) for d in fault.drops}
    assert pairs == {("n1", "n2"), ("n2", "n1"), ("n1", "n3"), ("n3", "n1")}
    assert not any(d.originated_only for d in fault.drops)


def test_split_cuts_exactly_the_cross_group_pairs() -> None:
    fault = netns.parse_fault(NODES, "split", ["n1,n2", "n3"])
    pairs = {(d.src, d.dst) for d in fault.drops}
    assert pairs == {("n1", "n3"), ("n3", "n1"), ("n2", "n3"), ("n3", "n2")}


def test_oneway_drops_only_what_the_sender_originates() -> None:
    fault = netns.parse_fault(NODES, "oneway", ["n1", "n2"])
    assert fault.drops == (netns.Drop("n1", "n2", originated_only=True),)
    topo = netns.Topology("abc123", NODES)
    n1_rules = netns.ruleset(topo, "n1", fault) or ""
    assert "ip daddr 10.77.0.12 ct direction original counter drop" in n1_rules
    n2_rules = netns.ruleset(topo, "n2", fault) or ""
    assert "ip saddr 10.77.0.11 ct direction original counter drop" in n2_rules
    assert netns.ruleset(topo, "n3", fault) is None, "n3 is not involved: no table"


def test_rules_name_node_addresses_only_so_the_host_keeps_access() -> None:
    topo = netns.Topology("abc123", NODES)
    rules = netns.ruleset(topo, "n3", netns.isolate(NODES, ["n3"])) or ""
    named = set(re.findall(r"\d+\.\d+\.\d+\.\d+", rules))
    assert named == {"10.77.0.11", "10.77.0.12"}, "only peers are cut, never the host"


@pytest.mark.parametrize(
    ("kind", "args", "message"),
    [
        ("isolate", ["n9"], "unknown node"),
        ("isolate", [], "at least one"),
        ("split", ["n1,n2"], "two non-empty groups"),
        ("split", ["n1", "n2"], "missing n3"),
        ("split", ["n1,n2", "n2,n3"], "named twice"),
        ("oneway", ["n1"], "exactly two"),
        ("drop", ["n1"], "unknown partition kind"),
    ],
)
def test_bad_partition_specs_are_rejected(kind: str, args: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        netns.parse_fault(NODES, kind, args)


def test_names_fit_the_kernel_limits_and_addresses_follow_the_node_index() -> None:
    topo = netns.Topology.new([f"n{i}" for i in range(1, 6)])
    assert len(topo.host_link) <= 15
    assert [topo.address(n) for n in topo.nodes] == [f"10.77.0.{10 + i}" for i in range(1, 6)]
    assert netns.Topology.from_record(topo.record()) == topo


# ---------------------------------------------------------------------- no support
def _ops(d: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, CLUSTER_PY, *args, "--dir", d]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


def test_up_netns_without_nft_exits_3_naming_it(tmp_path: Any) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ip = shutil.which("ip")
    if ip:  # `ip` present, `nft` absent: the message must name nft
        os.symlink(ip, bin_dir / "ip")
    r = _ops(str(tmp_path / "c"), "up", "--netns", env=dict(os.environ, PATH=str(bin_dir)))
    assert r.returncode == netns.EXIT_UNAVAILABLE, r.stderr
    assert ("`nft` not found" if ip else "`ip` not found") in r.stderr
    assert not (tmp_path / "c" / "cluster.json").exists(), "nothing may be recorded or created"


def test_up_netns_without_privileges_exits_3(tmp_path: Any) -> None:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or not setpriv or not shutil.which("ip") or not shutil.which("nft"):
        pytest.skip(
            f"needs root, setpriv, ip and nft to drop the privileges itself: {ENABLE_NETNS}"
        )
    cmd = [setpriv, "--bounding-set=-all", "--", sys.executable, CLUSTER_PY]
    r = subprocess.run(
        [*cmd, "up", "--netns", "--dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == netns.EXIT_UNAVAILABLE, r.stderr
    assert "cannot create network namespaces" in r.stderr


def test_partition_of_a_loopback_cluster_exits_3(tmp_path: Any) -> None:
    layout = {"dir": str(tmp_path), "nodes": [{"id": "n1", "http": "127.0.0.1:1", "raft": "x"}]}
    (tmp_path / "cluster.json").write_text(json.dumps(layout))
    r = _ops(str(tmp_path), "partition", "isolate", "n1")
    assert r.returncode == netns.EXIT_UNAVAILABLE
    assert "up --netns" in r.stderr


# ---------------------------------------------------------------------- real namespaces
def _require_netns() -> None:
    if os.geteuid() != 0:
        pytest.skip(f"partition tests need root (network namespaces and nftables): {ENABLE_NETNS}")
    try:
        netns.check_support()
    except netns.NetnsUnavailable as exc:
        pytest.skip(f"partition tests skipped: {exc} ({ENABLE_NETNS})")


class NetnsCluster(Cluster):
    """The harness cluster started with `up --netns` (tests/cluster/harness.py)."""

    def __init__(self, n: int = 3, seed: int | None = None) -> None:
        super().__init__(n=n, seed=seed, netns=True)

    def assert_nothing_left(self) -> None:
        assert self.topo is not None
        assert netns.leftovers(self.topo) == []
        names = netns.run(["ip", "netns", "list"])
        assert f"kv-{self.topo.run_id}-" not in names
        assert self.topo.host_link not in netns.run(["ip", "-o", "link"])
        root_tables = netns.run(["nft", "list", "tables"])
        assert netns.FAULT_TABLE not in root_tables and netns.CT_TABLE not in root_tables
        running = [p for p in self.pids if alive(p)]
        assert running == [], f"node processes still running: {running}"


@pytest.fixture
def netns_cluster() -> Iterator[NetnsCluster]:
    _require_netns()
    c = NetnsCluster(n=3)
    with sigterm_raises():
        try:
            yield c.up()
        finally:
            c.down()


def _get(address: str, path: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout) as r:
        return json.loads(r.read())


def _member_status(address: str) -> dict[str, str]:
    return {m["id"]: m["status"] for m in _get(address, "/v1/cluster")["members"]}


def _sees_all_alive(address: str) -> bool:
    return set(_member_status(address).values()) == {"alive"}


def _has_keyspace(address: str, name: str) -> bool:
    return any(k["name"] == name for k in _get(address, "/v1/keyspaces")["keyspaces"])


@pytest.mark.cluster
def test_isolated_node_loses_its_peers_majority_serves_then_heal_converges(
    netns_cluster: NetnsCluster,
) -> None:
    c = netns_cluster
    assert all(c.http(n).startswith("10.77.0.") for n in NODES), c.nodes
    asyncio.run(_isolate_and_heal(c))
    c.down()
    c.assert_nothing_left()


async def _isolate_and_heal(c: NetnsCluster) -> None:
    n1, n2, n3 = (c.http(n) for n in NODES)
    keys = [f"key-{i}" for i in range(40)]
    async with KvClient([n1, n2, n3]) as client:
        await client.create_keyspace(
            KS, consistency="eventual", replication=3, read_quorum=2, write_quorum=2
        )
        for address in (n1, n2, n3):
            wait_until(partial(_has_keyspace, address, KS), POLL_S, f"{KS} on {address}")
        await asyncio.gather(*(client.put(KS, k, {"phase": "before"}, w=2) for k in keys))

        c.partition("isolate", "n3")
        wait_until(
            lambda: _member_status(n3) == {"n1": "down", "n2": "down", "n3": "alive"},
            POLL_S,
            "n3 to see n1 and n2 down",
        )
        wait_until(lambda: _member_status(n1)["n3"] == "down", POLL_S, "n1 to see n3 down")
        assert _get(n3, "/v1/health")["status"] == "ok", "the host must still reach n3"

        async with KvClient([n3], retries=0, timeout=10.0) as lone:
            # n3 sees n1 and n2 down (and, isolated, cannot hear otherwise), so the write is
            # refused before anything is written (hints.write_refusal), not a 504
            with pytest.raises(QuorumUnavailable):
                await lone.put(KS, "through-n3", {"phase": "isolated"}, w=3)

        async with KvClient([n1, n2]) as majority:
            got = await asyncio.gather(*(majority.get(KS, k, r=2) for k in keys))
            await asyncio.gather(
                *(
                    majority.put(KS, k, {"phase": "during"}, context=g["context"], w=2)
                    for k, g in zip(keys, got, strict=True)
                )
            )

        c.heal()
        for address in (n1, n2, n3):
            wait_until(partial(_sees_all_alive, address), POLL_S, f"{address} to see all alive")
        for address in (n1, n2, n3):  # R=3: every replica answers, the newest value wins
            await _eventually(
                partial(_all_read, client, address, keys),
                POLL_S,
                f"r=3 reads through {address} to return the majority's writes",
            )
        await _eventually(
            lambda: _replicas_agree(client, [n1, n2, n3], keys), POLL_S, "replicas to agree"
        )


async def _eventually(probe: Callable[[], Awaitable[bool]], deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    last: Any = None
    while time.monotonic() < end:
        try:
            if await probe():
                return
        except KvError as exc:  # a failing probe is just "not yet"
            last = exc
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what} (last: {last!r})")


async def _all_read(client: KvClient, node: str, keys: list[str]) -> bool:
    got = await asyncio.gather(*(client.get(KS, k, r=3, node=node) for k in keys))
    return all(g.get("value") == {"phase": "during"} for g in got)


async def _replicas_agree(client: KvClient, nodes: list[str], keys: list[str]) -> bool:
    for key in keys:
        states = [await client.replica(KS, key, node) for node in nodes]
        values = [[v["value"] for v in s["versions"]] for s in states]
        if values != [[{"phase": "during"}]] * len(nodes):
            return False
    return True


# ---------------------------------------------------------------------- reachability
PROBE = """
import sys, urllib.request
from concurrent.futures import ThreadPoolExecutor

def ok(address):
    try:
        with urllib.request.urlopen(f"http://{address}/v1/health", timeout=1.0) as r:
            return r.status == 200
    except OSError:
        return False

with ThreadPoolExecutor(len(sys.argv) - 1) as pool:
    print(" ".join("1" if r else "0" for r in pool.map(ok, sys.argv[1:])))
"""


def _reachability(c: NetnsCluster, nodes: tuple[str, ...] = NODES) -> set[tuple[str, str]]:
    """(from, to) pairs whose HTTP request and reply both got through, probed from inside
    each node's namespace (one probe process per namespace, all targets in parallel)."""
    targets = [c.http(n) for n in nodes]
    ok = set()
    for src in nodes:
        cmd = ["ip", "netns", "exec", c.ns(src), sys.executable, "-c", PROBE, *targets]
        out = netns.run(cmd).split()
        ok |= {(src, dst) for dst, bit in zip(nodes, out, strict=True) if bit == "1"}
    return ok


def _all_pairs_but(
    cut: set[tuple[str, str]], nodes: tuple[str, ...] = NODES
) -> set[tuple[str, str]]:
    return {(a, b) for a in nodes for b in nodes} - cut


@pytest.mark.cluster
def test_each_partition_cuts_exactly_its_links_and_heal_removes_the_tables(
    netns_cluster: NetnsCluster,
) -> None:
    c = netns_cluster
    assert _reachability(c) == _all_pairs_but(set())
    cases = [
        (["isolate", "n1"], {("n1", "n2"), ("n2", "n1"), ("n1", "n3"), ("n3", "n1")}),
        (["split", "n1,n2", "n3"], {("n1", "n3"), ("n3", "n1"), ("n2", "n3"), ("n3", "n2")}),
        # n1 cannot open connections to n2; n2's requests to n1 are answered
        (["oneway", "n1", "n2"], {("n1", "n2")}),
    ]
    for spec, cut in cases:
        c.partition(*spec)
        assert _reachability(c) == _all_pairs_but(cut), spec
        c.refresh()
        assert all(c.nodes[n]["healthy"] for n in NODES), "the host must reach every node"
        status = json.loads(c.ops("status", "--json").stdout)
        assert status["netns"]["partition"]["kind"] == spec[0]
    c.heal()
    assert _reachability(c) == _all_pairs_but(set())
    for node in NODES:
        assert f"inet {netns.FAULT_TABLE}" not in netns.nft_tables(c.ns(node))
    c.down()
    c.assert_nothing_left()


@pytest.mark.cluster
def test_add_gives_the_new_node_its_own_namespace_and_partitions_cover_it(
    netns_cluster: NetnsCluster,
) -> None:
    """`ops/cluster add --wait` in a --netns cluster (issue 9, item 8): the node gets its own
    namespace and 10.77.0.x, joins, becomes a member; `partition` cuts its links like any
    node's, and `down` removes its namespace with the others."""
    c = netns_cluster
    assert c.add(commit=True, wait=True) == "n4"
    c.refresh()
    assert c.topo is not None and c.topo.nodes == (*NODES, "n4")
    n4 = {nd["id"]: nd for nd in c.status()}["n4"]
    assert n4["member"] is True and n4["netns"] == c.topo.ns("n4")
    assert n4["http"].startswith(c.topo.address("n4") + ":")
    everyone = (*NODES, "n4")
    wait_until(
        lambda: _reachability(c, everyone) == _all_pairs_but(set(), everyone), 30, "full mesh"
    )
    c.partition("isolate", "n4")
    cut = {p for n in NODES for p in (("n4", n), (n, "n4"))}
    assert _reachability(c, everyone) == _all_pairs_but(cut, everyone)
    c.heal()
    assert _reachability(c, everyone) == _all_pairs_but(set(), everyone)
    c.down()
    c.assert_nothing_left()


# ---------------------------------------------------------------------- crash, interrupt
@pytest.mark.cluster
def test_cleanup_after_a_crash_removes_everything(netns_cluster: NetnsCluster) -> None:
    c = netns_cluster
    assert c.topo is not None
    c.partition("isolate", "n2")
    for node in NODES:  # the crash: every process gone at once, namespaces and rules left
        os.kill(int(c.nodes[node]["pid"]), signal.SIGKILL)
    wait_until(lambda: not any(alive(p) for p in c.pids), 10.0, "the nodes to die")
    assert set(c.topo.all_namespaces) <= netns.namespaces()
    assert f"inet {netns.FAULT_TABLE}" in netns.nft_tables(c.ns("n2"))

    first = c.ops("cleanup")
    assert "namespace " + c.ns("n1") in first.stdout, first.stdout
    c.assert_nothing_left()
    assert c.ops("cleanup").stdout.strip() == "nothing left to remove"
    assert c.ops("down", check=False).returncode == 0


def test_interrupted_up_removes_everything(tmp_path: Any) -> None:
    _require_netns()
    d = str(tmp_path)
    cmd = [sys.executable, CLUSTER_PY, "up", "--netns", "--no-examples", "--dir", d]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    topo: netns.Topology | None = None
    try:
        made = wait_until(
            lambda: _created(d) or proc.poll() is not None, 60.0, "namespaces", interval=0.01
        )
        topo = made if isinstance(made, netns.Topology) else None
        if topo is None:  # `up` ended before making them
            _, err = proc.communicate(timeout=60)
            if b"is in use by" in err:
                pytest.skip(f"10.77.0.0/24 busy: {err.decode().strip()}")
            raise AssertionError(f"up exited {proc.returncode} before the namespaces: {err!r}")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        if b"is in use by" in err:
            pytest.skip(f"10.77.0.0/24 busy: {err.decode().strip()}")
        assert proc.returncode != 0, "up finished before the signal: nothing was interrupted"
        assert b"interrupted by SIGTERM" in err, err
        assert netns.leftovers(topo) == []
        assert not [p for p in _node_pids(d) if alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _ops(d, "cleanup")
        if topo is not None:
            netns.destroy(topo)


def _created(d: str) -> netns.Topology | None:
    try:
        with open(os.path.join(d, "cluster.json")) as f:
            topo = netns.Topology.from_record(json.load(f)["netns"])
    except (OSError, ValueError, KeyError):
        return None
    return topo if netns.exists(topo) else None


def _node_pids(d: str) -> list[int]:
    """Processes whose command line names the directory (node pid files are removed)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if os.fsencode(d) in f.read() and int(entry) != os.getpid():
                        pids.append(int(entry))
            except OSError:
                continue
    return pids
