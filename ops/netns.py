"""Network namespaces and nftables partitions for `ops/cluster up --netns` (docs/netns.md).

Standard library only; every change to the system is an `ip` or `nft` command.

Topology of one run (run id R, nodes n1..nK):

    root namespace        kv-R-br (bridge namespace)       kv-R-n<i> (one per node)
    kvh-R 10.77.0.1 <-veth-> host --+                     +-- n<i> <-veth-> eth0 10.77.0.(10+i)
                                    +---- br0 (bridge) ---+

Nothing else is routed: node namespaces have no default route, so a node reaches exactly
the other nodes and the host address. Partitions are nft tables `inet kvfault` inside the
node namespaces; a table `inet kvct` in each node namespace only turns connection tracking on
from the start, so that the one-way rule can tell who opened a connection.

Everything a run creates is recorded before it is created (the caller's cluster.json and a
registry file under /run/kv-netns), and `destroy` removes it idempotently.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

SUBNET = ipaddress.IPv4Network("10.77.0.0/24")
HOST_ADDRESS = "10.77.0.1"
FAULT_TABLE = "kvfault"
CT_TABLE = "kvct"
REGISTRY = "/run/kv-netns"
RUN_ID_RE = re.compile(r"^[0-9a-f]{6}$")
EXIT_UNAVAILABLE = 3  # no root / no namespace support / `ip` or `nft` missing
EXIT_BUSY = 4  # 10.77.0.0/24 already in use in the root namespace
_CMD_TIMEOUT_S = 20.0


class NetnsError(RuntimeError):
    """An `ip`/`nft` command failed; the message names the command and its stderr."""


class NetnsUnavailable(NetnsError):
    """This machine cannot run --netns clusters (exit code 3)."""


class NetnsBusy(NetnsError):
    """The address range is taken by another run or by something else (exit code 4)."""


# ---------------------------------------------------------------------- commands
def tool(name: str) -> str:
    """Absolute path of `ip` or `nft` on PATH."""
    found = shutil.which(name)
    if found is None:
        package = "iproute2" if name == "ip" else "nftables"
        raise NetnsUnavailable(f"`{name}` not found (install {package}: apt-get install {package})")
    return found


def run(args: Sequence[str], stdin: str | None = None) -> str:
    """Run `ip ...` or `nft ...`; NetnsError with the command line and stderr on failure."""
    cmd = [tool(args[0]), *args[1:]]
    if cmd[1:3] == ["netns", "exec"] and cmd[4] in ("ip", "nft"):  # resolved here, not by ip
        cmd[4] = tool(cmd[4])
    try:
        r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=_CMD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise NetnsError(f"`{' '.join(args)}` timed out after {_CMD_TIMEOUT_S:.0f}s") from None
    if r.returncode != 0:
        raise NetnsError(f"`{' '.join(args)}` failed: {r.stderr.strip() or r.returncode}")
    return r.stdout


def _quiet(args: Sequence[str], stdin: str | None = None) -> bool:
    try:
        run(args, stdin)
    except NetnsError:
        return False
    return True


def namespaces() -> set[str]:
    """Names of the named network namespaces (`ip netns list`)."""
    return {line.split()[0] for line in run(["ip", "netns", "list"]).splitlines() if line.strip()}


def link_exists(name: str) -> bool:
    """Whether a link of that name exists in the root namespace."""
    return _quiet(["ip", "link", "show", "dev", name])


def ns_pids(ns: str) -> list[int]:
    try:
        out = run(["ip", "netns", "pids", ns])
    except NetnsError:
        return []
    return [int(p) for p in out.split() if p.isdigit()]


def nft_tables(ns: str) -> list[str]:
    """`family name` of every nft table in a namespace ([] if the namespace is gone)."""
    try:
        out = run(["ip", "netns", "exec", ns, "nft", "list", "tables"])
    except NetnsError:
        return []
    return [line.removeprefix("table ").strip() for line in out.splitlines() if line.strip()]


# ---------------------------------------------------------------------- topology
@dataclass(frozen=True)
class Topology:
    run_id: str
    nodes: tuple[str, ...]  # node ids in layout order: nodes[i-1] gets 10.77.0.(10+i)

    def __post_init__(self) -> None:
        if not RUN_ID_RE.fullmatch(self.run_id):
            raise ValueError(f"run_id: must be 6 hex digits, got {self.run_id!r}")
        if not 1 <= len(self.nodes) <= 200:
            raise ValueError(f"nodes: between 1 and 200, got {len(self.nodes)}")

    @classmethod
    def new(cls, nodes: Sequence[str]) -> Topology:
        return cls(secrets.token_hex(3), tuple(nodes))

    def ns(self, node: str) -> str:
        return f"kv-{self.run_id}-{node}"

    @property
    def bridge_ns(self) -> str:
        return f"kv-{self.run_id}-br"

    @property
    def host_link(self) -> str:
        return f"kvh-{self.run_id}"  # ≤ 15 characters (IFNAMSIZ)

    @property
    def all_namespaces(self) -> list[str]:
        return [*(self.ns(n) for n in self.nodes), self.bridge_ns]

    def address(self, node: str) -> str:
        return str(SUBNET.network_address + 10 + self.nodes.index(node) + 1)

    def exec_prefix(self, node: str) -> list[str]:
        """Prefix that runs a command inside the node's namespace. `ip netns exec` execs the
        command in place (no fork), so the pid of the prefixed process is the command's."""
        return [tool("ip"), "netns", "exec", self.ns(node)]

    def record(self) -> dict[str, Any]:
        """What cluster.json stores: enough for `destroy` after a crash."""
        return {
            "run_id": self.run_id,
            "nodes": list(self.nodes),
            "namespaces": self.all_namespaces,
            "bridge_ns": self.bridge_ns,
            "host_link": self.host_link,
            "host_address": f"{HOST_ADDRESS}/{SUBNET.prefixlen}",
            "addresses": {n: self.address(n) for n in self.nodes},
            "nft_tables": [f"inet {FAULT_TABLE}", f"inet {CT_TABLE}"],
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Topology:
        return cls(str(rec["run_id"]), tuple(str(n) for n in rec["nodes"]))


def check_support() -> None:
    """NetnsUnavailable naming what is missing: `ip`, `nft`, or the right to add namespaces."""
    tool("ip")
    tool("nft")
    probe = f"kv-probe-{secrets.token_hex(3)}"
    try:
        run(["ip", "netns", "add", probe])
    except NetnsError as exc:
        raise NetnsUnavailable(f"cannot create network namespaces (root needed): {exc}") from None
    try:
        run(["ip", "netns", "exec", probe, "nft", "list", "tables"])
    except NetnsError as exc:
        raise NetnsUnavailable(f"nftables does not work in a namespace: {exc}") from None
    finally:
        _quiet(["ip", "netns", "del", probe])


def _overlaps_subnet(dst: str) -> bool:
    """Whether a route destination in the root namespace collides with 10.77.0.0/24 (a
    broader route such as a default route does not: our /24 is more specific)."""
    if dst == "default":
        return False
    net = ipaddress.IPv4Network(dst, strict=False)
    return net.overlaps(SUBNET) and net.prefixlen >= SUBNET.prefixlen


def subnet_users() -> list[str]:
    """Root-namespace devices with an address or a route inside 10.77.0.0/24."""
    users = set()
    for route in json.loads(run(["ip", "-j", "-4", "route", "show", "table", "all"]) or "[]"):
        if _overlaps_subnet(str(route.get("dst", "default"))):
            users.add(str(route.get("dev", "?")))
    for link in json.loads(run(["ip", "-j", "-4", "addr", "show"]) or "[]"):
        for a in link.get("addr_info", []):
            if ipaddress.IPv4Address(a["local"]) in SUBNET:
                users.add(str(link.get("ifname", "?")))
    return sorted(users)


# ---------------------------------------------------------------------- registry
def _registry_path(run_id: str) -> str:
    return os.path.join(REGISTRY, f"{run_id}.json")


@contextmanager
def registry_lock() -> Iterator[None]:
    """Serialises the check-then-create of concurrent `up --netns` runs on this machine."""
    os.makedirs(REGISTRY, exist_ok=True)
    with open(os.path.join(REGISTRY, "lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def registered() -> list[tuple[Topology, str]]:
    """Every run on this machine that has not been destroyed, with its cluster directory."""
    runs = []
    try:
        names = sorted(os.listdir(REGISTRY))
    except FileNotFoundError:
        return []
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(REGISTRY, name)) as f:
                rec = json.load(f)
            runs.append((Topology.from_record(rec), str(rec["dir"])))
        except (OSError, ValueError, KeyError):
            continue
    return runs


def owner_records(topo: Topology, d: str) -> bool:
    """Whether DIR/cluster.json still names this run (if not, the run is an orphan)."""
    try:
        with open(os.path.join(d, "cluster.json")) as f:
            rec = json.load(f).get("netns") or {}
    except (OSError, ValueError):
        return False
    return bool(rec.get("run_id") == topo.run_id)


def _register(topo: Topology, d: str) -> None:
    os.makedirs(REGISTRY, exist_ok=True)
    tmp = _registry_path(topo.run_id) + ".tmp"
    with open(tmp, "w") as f:
        json.dump({**topo.record(), "dir": d}, f)
    os.replace(tmp, _registry_path(topo.run_id))


def _unregister(topo: Topology) -> None:
    try:
        os.remove(_registry_path(topo.run_id))
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------------- create / destroy
def exists(topo: Topology) -> bool:
    return set(topo.all_namespaces) <= namespaces() and link_exists(topo.host_link)


def claim(topo: Topology, d: str) -> list[str]:
    """Under the registry lock: reclaim orphaned runs (their directory no longer records
    them), refuse if 10.77.0.0/24 is still in use, then create this run's topology.
    Returns the runs reclaimed (for a note to the user)."""
    reclaimed: list[str] = []
    with registry_lock():
        for other, other_dir in registered():
            if other.run_id == topo.run_id:
                continue
            if owner_records(other, other_dir):
                raise NetnsBusy(
                    f"10.77.0.0/24 is in use by the --netns cluster in {other_dir} "
                    f"(run {other.run_id}); stop it first: ops/cluster down --dir {other_dir}"
                )
            removed = destroy(other)
            reclaimed.append(f"run {other.run_id} of {other_dir} ({len(removed)} items)")
        users = subnet_users()
        if users:
            raise NetnsBusy(
                f"10.77.0.0/24 is already used in the root namespace by {', '.join(users)}; "
                "ops/cluster --netns needs that range to itself"
            )
        create(topo, d)
    return reclaimed


def create(topo: Topology, d: str) -> None:
    """Create every namespace and link of the run (registered first); on failure remove
    whatever was created and raise NetnsUnavailable naming the failing command."""
    _register(topo, d)
    try:
        _create_bridge(topo)
        for node in topo.nodes:
            _create_node(topo, node)
        _create_host_link(topo, d)
    except NetnsError as exc:
        destroy(topo)
        raise NetnsUnavailable(f"could not build the namespaces: {exc}") from None
    except BaseException:
        destroy(topo)
        raise


def grow(topo: Topology, node: str, d: str) -> Topology:
    """The run with one more node: its namespace and its bridge port, made like `up` makes
    them (recorded in the registry first). On failure its namespace is removed, the
    registry names the old topology again, and NetnsUnavailable names the failing command."""
    if node in topo.nodes:
        raise ValueError(f"{node} is already a node of run {topo.run_id}")
    grown = Topology(topo.run_id, (*topo.nodes, node))
    with registry_lock():
        _register(grown, d)
        try:
            _create_node(grown, node)
        except BaseException as exc:
            for table in (FAULT_TABLE, CT_TABLE):
                _quiet(_delete_table(grown.ns(node), table))
            _quiet(["ip", "netns", "del", grown.ns(node)])
            _quiet(["ip", "-n", grown.bridge_ns, "link", "del", node])
            _register(topo, d)
            if isinstance(exc, NetnsError):
                raise NetnsUnavailable(f"could not add {node}'s namespace: {exc}") from None
            raise
    return grown


def _create_bridge(topo: Topology) -> None:
    br = topo.bridge_ns
    run(["ip", "netns", "add", br])
    run(["ip", "-n", br, "link", "set", "lo", "up"])
    run(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
    _no_ipv6(["ip", "-n", br], "br0")
    run(["ip", "-n", br, "link", "set", "br0", "up"])


def _create_node(topo: Topology, node: str) -> None:
    ns, br = topo.ns(node), topo.bridge_ns
    run(["ip", "netns", "add", ns])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    # both ends are created inside namespaces: nothing of a node appears in the root namespace
    run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", node, "netns", br])
    _no_ipv6(["ip", "-n", ns], "eth0")
    _no_ipv6(["ip", "-n", br], node)
    run(["ip", "-n", br, "link", "set", node, "master", "br0", "up"])
    run(["ip", "-n", ns, "addr", "add", f"{topo.address(node)}/{SUBNET.prefixlen}", "dev", "eth0"])
    run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    run(["ip", "netns", "exec", ns, "nft", "-f", "-"], stdin=_ct_table())


def _create_host_link(topo: Topology, d: str) -> None:
    host, br = topo.host_link, topo.bridge_ns
    run(["ip", "link", "add", host, "type", "veth", "peer", "name", "host", "netns", br])
    run(["ip", "link", "set", host, "alias", f"kv --netns cluster {d}"[:250]])
    _no_ipv6(["ip"], host)
    _no_ipv6(["ip", "-n", br], "host")
    run(["ip", "-n", br, "link", "set", "host", "master", "br0", "up"])
    run(["ip", "addr", "add", f"{HOST_ADDRESS}/{SUBNET.prefixlen}", "dev", host])
    run(["ip", "link", "set", host, "up"])


def _no_ipv6(ip: list[str], dev: str) -> None:
    """No IPv6 link-local address, hence no router solicitations or DAD on our links."""
    _quiet([*ip, "link", "set", dev, "addrgenmode", "none"])


def _ct_table() -> str:
    return (
        f"table inet {CT_TABLE} {{\n"
        "  chain track {\n"
        "    type filter hook prerouting priority -150; policy accept;\n"
        "    ct state invalid counter\n"
        "  }\n"
        "}\n"
    )


def destroy(topo: Topology, deadline_s: float = 15.0) -> list[str]:
    """Remove everything of the run that still exists; idempotent. Any process still inside
    one of the run's namespaces is SIGKILLed first (a namespace lives on while a process is
    in it, and so would its veths). Returns the names of what was removed."""
    present = namespaces() & set(topo.all_namespaces)
    removed: list[str] = []
    for ns in sorted(present):
        for pid in ns_pids(ns):
            _kill(pid)
    for node in topo.nodes:
        for table in (FAULT_TABLE, CT_TABLE):
            if topo.ns(node) in present and _quiet(_delete_table(topo.ns(node), table)):
                removed.append(f"{topo.ns(node)}: nft table inet {table}")
    for ns in [*(topo.ns(n) for n in topo.nodes), topo.bridge_ns]:
        if ns in present and _quiet(["ip", "netns", "del", ns]):
            removed.append(f"namespace {ns}")
    if link_exists(topo.host_link) and _quiet(["ip", "link", "del", topo.host_link]):
        removed.append(f"link {topo.host_link}")
    _wait_gone(topo, deadline_s)
    _unregister(topo)
    return removed


def _delete_table(ns: str, table: str) -> list[str]:
    return ["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", table]


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait_gone(topo: Topology, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while True:
        left = sorted(namespaces() & set(topo.all_namespaces))
        if link_exists(topo.host_link):
            left.append(topo.host_link)
        if not left:
            return
        if time.monotonic() > end:
            raise NetnsError(f"still present after {deadline_s:.0f}s: {', '.join(left)}")
        for name in left:  # deleting again is harmless; a half-torn-down name may need it
            kind = "netns" if name in topo.all_namespaces else "link"
            _quiet(["ip", kind, "del", name])
        time.sleep(0.1)


def leftovers(topo: Topology) -> list[str]:
    """What of the run still exists (namespaces, the host link, registry file): [] after
    a complete `destroy`."""
    left = sorted(namespaces() & set(topo.all_namespaces))
    if link_exists(topo.host_link):
        left.append(f"link {topo.host_link}")
    if os.path.exists(_registry_path(topo.run_id)):
        left.append(_registry_path(topo.run_id))
    return left


# ---------------------------------------------------------------------- faults
@dataclass(frozen=True)
class Drop:
    """Traffic from `src` to `dst` is dropped. `originated_only`: only packets of
    connections that `src` opened (conntrack direction original); replies of `src` on
    connections `dst` opened still flow."""

    src: str
    dst: str
    originated_only: bool = False


@dataclass(frozen=True)
class Fault:
    kind: str  # isolate | split | oneway
    args: tuple[str, ...]
    drops: tuple[Drop, ...]

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "args": list(self.args)}

    def describe(self) -> str:
        return f"{self.kind} {' '.join(self.args)}"


def _check_nodes(nodes: Sequence[str], named: Sequence[str]) -> None:
    unknown = [n for n in named if n not in nodes]
    if unknown:
        raise ValueError(f"unknown node(s) {', '.join(unknown)} (nodes: {', '.join(nodes)})")
    if len(set(named)) != len(named):
        raise ValueError(f"a node is named twice in {' '.join(named)}")


def isolate(nodes: Sequence[str], cut: Sequence[str]) -> Fault:
    """Each node in `cut` loses every other node, both directions (the host keeps access)."""
    _check_nodes(nodes, cut)
    if not cut:
        raise ValueError("isolate: name at least one node")
    pairs = {(a, b) for a in cut for b in nodes if a != b}
    drops = sorted({Drop(a, b) for a, b in pairs} | {Drop(b, a) for a, b in pairs}, key=_key)
    return Fault("isolate", tuple(cut), tuple(drops))


def split(nodes: Sequence[str], groups: Sequence[Sequence[str]]) -> Fault:
    """Nodes reach only the nodes of their own group; every node is in exactly one group."""
    named = [n for g in groups for n in g]
    _check_nodes(nodes, named)
    if len(groups) < 2 or any(not g for g in groups):
        raise ValueError("split: give at least two non-empty groups, e.g. split n1,n2 n3")
    missing = [n for n in nodes if n not in named]
    if missing:
        raise ValueError(f"split: every node must be in a group; missing {', '.join(missing)}")
    group_of = {n: i for i, g in enumerate(groups) for n in g}
    drops = [Drop(a, b) for a in nodes for b in nodes if group_of[a] != group_of[b]]
    return Fault("split", tuple(",".join(g) for g in groups), tuple(sorted(drops, key=_key)))


def oneway(nodes: Sequence[str], src: str, dst: str) -> Fault:
    """`src` cannot send to `dst` on connections it opens; see Drop.originated_only."""
    _check_nodes(nodes, [src, dst])
    return Fault("oneway", (src, dst), (Drop(src, dst, originated_only=True),))


def parse_fault(nodes: Sequence[str], kind: str, args: Sequence[str]) -> Fault:
    if kind == "isolate":
        return isolate(nodes, list(args))
    if kind == "split":
        return split(nodes, [[n for n in a.split(",") if n] for a in args])
    if kind == "oneway":
        if len(args) != 2:
            raise ValueError("oneway: give exactly two nodes: oneway SRC DST")
        return oneway(nodes, args[0], args[1])
    raise ValueError(f"unknown partition kind {kind!r} (isolate, split, oneway)")


def _key(d: Drop) -> tuple[str, str, bool]:
    return (d.src, d.dst, d.originated_only)


def ruleset(topo: Topology, node: str, fault: Fault) -> str | None:
    """The `inet kvfault` table for one node's namespace, or None if no rule concerns it.
    A drop is enforced on both ends: in the sender's output hook and the receiver's input
    hook (so it holds whichever end's rules are in place first)."""
    out = [_rule("daddr", topo.address(d.dst), d, fault) for d in fault.drops if d.src == node]
    inp = [_rule("saddr", topo.address(d.src), d, fault) for d in fault.drops if d.dst == node]
    if not out and not inp:
        return None
    return f"table inet {FAULT_TABLE} {{\n" + _chain("input", inp) + _chain("output", out) + "}\n"


def _rule(field: str, address: str, d: Drop, fault: Fault) -> str:
    ct = " ct direction original" if d.originated_only else ""
    return f'ip {field} {address}{ct} counter drop comment "{fault.describe()}: {d.src}->{d.dst}"'


def _chain(hook: str, rules: list[str]) -> str:
    body = "".join(f"    {r}\n" for r in rules)
    return (
        f"  chain {hook} {{\n"
        f"    type filter hook {hook} priority filter; policy accept;\n"
        f"{body}  }}\n"
    )


def apply(topo: Topology, fault: Fault) -> None:
    """Replace the current fault with this one, atomically per namespace (one `nft -f`
    transaction deletes the old table and loads the new one)."""
    for node in topo.nodes:
        rules = ruleset(topo, node, fault)
        script = f"table inet {FAULT_TABLE}\ndelete table inet {FAULT_TABLE}\n" + (rules or "")
        run(["ip", "netns", "exec", topo.ns(node), "nft", "-f", "-"], stdin=script)


def heal(topo: Topology) -> None:
    """Delete the `inet kvfault` table in every node namespace (idempotent)."""
    script = f"table inet {FAULT_TABLE}\ndelete table inet {FAULT_TABLE}\n"
    for node in topo.nodes:
        run(["ip", "netns", "exec", topo.ns(node), "nft", "-f", "-"], stdin=script)
