"""Local multi-process cluster launcher (DESIGN.md §6). Standard library only.

    ops/cluster up [-n 3] [--dir DIR] [--base-port P] [--no-examples] [--netns]
    ops/cluster add [--id ID] [--dir DIR]
    ops/cluster down | status [--json] | kill ID | pause ID | resume ID | start ID   [--dir DIR]
    ops/cluster cleanup [--dir DIR] [--stale]
    ops/cluster partition [--dir DIR] isolate ID... | split IDS IDS... | oneway SRC DST | heal
    ops/cluster heal [--dir DIR]

Node i (1-based) listens on HTTP port P+i-1 and meta-Raft port P+100+i-1 on 127.0.0.1.
Each node gets DIR/<id>/ with its data, `node.pid` and `node.log`; DIR/cluster.json records
the layout and DIR/secret the cluster secret (generated once, mode 0600).

`add` starts one more node as a joiner (docs/membership.md): `--seeds` = the HTTP addresses
of the running members, the next free port pair of the layout, its own DIR/<id>/. It stays
`joining` (`status --json`: "member": false) until a membership plan is committed; `down`
stops it with the others, `up` and `start` restart it with the same seeds. In a --netns
cluster the new node gets its own namespace and address, made like `up` makes them (a
partition in force does not cover it until the next `partition`).

With --netns (root, iproute2 and nftables needed; exit code 3 names what is missing) node i
runs in its own network namespace on 10.77.0.(10+i), the namespaces joined by a bridge and
reachable from the host through 10.77.0.1; `partition` cuts links with nftables rules. The
namespaces are recorded in cluster.json before they are created, and `down` or `cleanup`
removes all of them. Topology and rules: docs/netns.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kv import auth, keys

try:
    from ops import netns
    from ops.ports import port_bindable
except ModuleNotFoundError:  # run as `python ops/cluster.py`: ops/ itself is sys.path[0]
    import netns  # type: ignore[no-redef]
    from ports import port_bindable  # type: ignore[no-redef]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DIR = os.path.join(ROOT, "cluster-data")
EXAMPLES = {
    "example_eventual": {
        "consistency": "eventual",
        "replication": 3,
        "read_quorum": 2,
        "write_quorum": 2,
    },
    "example_linearizable": {"consistency": "linearizable", "replication": 3},
}


# the admin token's header once a cluster with auth is loaded (`_use_auth`)
_AUTH: dict[str, str] = {}
# the cluster CA's context once a --secure cluster is loaded (`_use_auth`): https, checked
_TLS: dict[str, ssl.SSLContext] = {}


def _http(method: str, url: str, body: Any = None, timeout: float = 2.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **_AUTH}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=_TLS.get("ca")) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None
    except (OSError, ValueError):
        return 0, None


PLAN_DEADLINE_S = 600.0  # --wait: how long a plan may take before add/remove give up
COMMIT_ATTEMPTS = 5  # add/remove: plan + commit, again while the metadata moves on
RETRY_STATUSES = (0, 503, 504)  # no answer, not ready, unknown outcome
VOTERS_DEADLINE_S = 60.0  # remove --wait: for the leaving node to be replaced as a voter


def _layout_path(d: str) -> str:
    return os.path.join(d, "cluster.json")


def _load(d: str) -> dict[str, Any]:
    try:
        with open(_layout_path(d)) as f:
            layout: dict[str, Any] = json.load(f)
            return layout
    except FileNotFoundError:
        sys.exit(f"ops/cluster: no cluster in {d} (run `ops/cluster up --dir {d}` first)")


def _save(d: str, layout: dict[str, Any]) -> None:
    tmp = _layout_path(d) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(layout, f, indent=2)
    os.replace(tmp, _layout_path(d))


def _layout(d: str, n: int, base: int) -> dict[str, Any]:
    nodes = [
        {
            "id": f"n{i}",
            "http": f"127.0.0.1:{base + i - 1}",
            "raft": f"127.0.0.1:{base + 100 + i - 1}",
        }
        for i in range(1, n + 1)
    ]
    return {"dir": os.path.abspath(d), "nodes": nodes}


def _netns_layout(d: str, n: int, base: int) -> dict[str, Any]:
    """Like _layout, each node on its own 10.77.0.x inside namespace kv-<run>-<id>."""
    topo = netns.Topology.new([f"n{i}" for i in range(1, n + 1)])
    nodes = [
        {
            "id": node,
            "http": f"{topo.address(node)}:{base + i}",
            "raft": f"{topo.address(node)}:{base + 100 + i}",
            "netns": topo.ns(node),
        }
        for i, node in enumerate(topo.nodes)
    ]
    return {
        "dir": os.path.abspath(d),
        "nodes": nodes,
        "netns": {**topo.record(), "partition": None},
    }


def _topology(layout: dict[str, Any]) -> netns.Topology | None:
    rec = layout.get("netns")
    return netns.Topology.from_record(rec) if rec else None


def _secret_file(d: str) -> str:
    path = os.path.join(d, "secret")
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(24))
    return path


def _pid(d: str, node_id: str) -> int | None:
    try:
        with open(os.path.join(d, node_id, "node.pid")) as f:
            pid = int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _running(pid) else None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not running
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _joiner(node: dict[str, Any]) -> bool:
    """A node added by `add` (it joins through seeds) rather than a founder of `up`."""
    return "seeds" in node


def _cluster_flags(layout: dict[str, Any], node: dict[str, Any]) -> list[str]:
    """Founders name each other (the meta group's voters); a joiner names its seeds. With
    auth, every node checks tokens and the founders bootstrap the admin token."""
    auth_flags = ["--auth"] if layout.get("auth") else []
    if _joiner(node):
        return ["--seeds", ",".join(node["seeds"]), *auth_flags]
    if auth_flags:
        auth_flags += ["--admin-token-file", _admin_token_file(layout["dir"])]
    founders = [m for m in layout["nodes"] if not _joiner(m)]
    members = ",".join(f"{m['id']}={m['http']}/{m['raft']}" for m in founders)
    return ["--initial-cluster", members, *auth_flags]


def _admin_token_file(d: str) -> str:
    """DIR/admin.token: an admin token (kv/auth.py), made once, mode 0600."""
    path = os.path.join(d, "admin.token")
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(auth.mint("admin", "admin", None)[0] + "\n")
    return path


def _use_auth(d: str, layout: dict[str, Any]) -> None:
    """Send the admin token with every request of this run (a cluster with auth), over
    TLS checked against DIR/ca.pem (a --secure cluster)."""
    if layout.get("auth"):
        with open(_admin_token_file(d)) as f:
            _AUTH["Authorization"] = f"Bearer {f.read().strip()}"
    if layout.get("secure"):
        _TLS["ca"] = ssl.create_default_context(cafile=_ca(d)[0])


def _url(node: dict[str, Any] | str) -> str:
    """The base URL of a node (or of a `host:port`): https for a --secure cluster."""
    address = node if isinstance(node, str) else node["http"]
    return f"{'https' if _TLS else 'http'}://{address}"


def _ca(d: str) -> tuple[str, keys.Pem]:
    """DIR/ca.pem (and DIR/ca.key, 0600): the private CA of a --secure cluster, made once."""
    cert, key = os.path.join(d, "ca.pem"), os.path.join(d, "ca.key")
    if not os.path.exists(cert):
        pem = keys.make_ca(f"kv local CA ({os.path.basename(os.path.abspath(d))})")
        _write_private(key, pem.key)
        with open(cert, "wb") as f:
            f.write(pem.cert)
    with open(cert, "rb") as c, open(key, "rb") as k:
        return cert, keys.Pem(c.read(), k.read())


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _tls_flags(d: str, layout: dict[str, Any], node: dict[str, Any]) -> list[str]:
    """A --secure node's certificate (made once, naming its addresses) and the CA; a
    --netns node without --secure listens on 10.77.0.x and says it means to (`--insecure`)."""
    if not layout.get("secure"):
        return ["--insecure"] if _topology(layout) is not None else []
    ndir = os.path.join(d, node["id"])
    cert, key = os.path.join(ndir, "node.pem"), os.path.join(ndir, "node.key")
    if not os.path.exists(cert):
        ca_path, ca = _ca(d)
        hosts = {"127.0.0.1", "localhost"} | {node[k].rpartition(":")[0] for k in ("http", "raft")}
        pem = keys.make_node_cert(ca, node["id"], tuple(sorted(hosts)))
        _write_private(key, pem.key)
        with open(cert, "wb") as f:
            f.write(pem.cert)
    return ["--tls-cert", cert, "--tls-key", key, "--tls-ca", _ca(d)[0]]


def _start(d: str, layout: dict[str, Any], node: dict[str, Any]) -> int:
    ndir = os.path.join(d, node["id"])
    os.makedirs(ndir, exist_ok=True)
    topo = _topology(layout)
    # `ip netns exec NS` execs the interpreter in place, so proc.pid is the node's pid
    prefix = topo.exec_prefix(node["id"]) if topo else []
    cmd = [
        *prefix,
        sys.executable, "-m", "kv", "node",
        "--node-id", node["id"],
        "--data-dir", os.path.join(ndir, "data"),
        "--listen", node["http"],
        "--raft-listen", node["raft"],
        *_cluster_flags(layout, node),
        *_tls_flags(d, layout, node),
        "--cluster-secret-file", _secret_file(d),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(os.path.join(ndir, "node.log"), "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=ROOT, env=env, start_new_session=True,
        )  # fmt: skip
    with open(os.path.join(ndir, "node.pid"), "w") as f:
        f.write(f"{proc.pid}\n")
    return proc.pid


def _healthy(node: dict[str, Any]) -> bool:
    return _http("GET", f"{_url(node)}/v1/health", timeout=1.0)[0] == 200


def _all_up(d: str, layout: dict[str, Any]) -> bool:
    for node in layout["nodes"]:
        _exit_if_gone(d, node)
    return all(_healthy(nd) for nd in layout["nodes"])


def _exit_if_gone(d: str, node: dict[str, Any]) -> None:
    if _pid(d, node["id"]) is None:
        log = os.path.join(d, node["id"], "node.log")
        with open(log, errors="replace") as f:
            tail = "".join(f.readlines()[-15:])
        sys.exit(f"ops/cluster: {node['id']} exited during start-up; end of {log}:\n{tail}")


def _members(layout: dict[str, Any]) -> set[str] | None:
    """Member ids in the cluster metadata, as the first node that answers `/v1/cluster`
    sees them (founders first: they vote); None when no node answers."""
    for node in sorted(layout["nodes"], key=_joiner):
        status, info = _http("GET", f"{_url(node)}/v1/cluster", timeout=2.0)
        if status == 200 and isinstance(info, dict):
            return {str(m["id"]) for m in info.get("members", [])}
    return None


def _wait(pred: Any, deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    sys.exit(f"ops/cluster: timed out after {deadline_s:.0f}s waiting for {what}")


def cmd_up(a: argparse.Namespace) -> None:
    os.makedirs(a.dir, exist_ok=True)
    existing = _load(a.dir) if os.path.exists(_layout_path(a.dir)) else None
    if a.netns and existing is not None and _topology(existing) is None:
        sys.exit(f"ops/cluster: {a.dir} holds a loopback cluster; use another --dir for --netns")
    if a.netns or (existing is not None and _topology(existing) is not None):
        _up_netns(a, existing)
        return
    if existing is not None:
        layout = existing
    else:
        access = {"auth": True, "secure": True} if a.secure else {"auth": True} if a.auth else {}
        layout = {**_layout(a.dir, a.n, a.base_port), **access}
        with open(_layout_path(a.dir), "w") as f:
            json.dump(layout, f, indent=2)
    _use_auth(a.dir, layout)
    for node in layout["nodes"]:
        if _pid(a.dir, node["id"]) is None:
            _start(a.dir, layout, node)
    try:
        _wait(lambda: _all_up(a.dir, layout), 90, "every node to be healthy")
    except SystemExit:
        _stop_all(a.dir, layout)
        raise
    if not a.no_examples:
        _examples(layout)
    _print_usage(a.dir, layout, examples=not a.no_examples)


def _up_netns(a: argparse.Namespace, existing: dict[str, Any] | None) -> None:
    """up --netns: namespaces first (recorded in cluster.json before they exist), then the
    nodes inside them. Any failure or SIGINT/SIGTERM/SIGHUP removes everything again."""
    netns.check_support()
    layout = existing or _netns_layout(a.dir, a.n, a.base_port)
    if existing is None:
        _save(a.dir, layout)
    topo = _topology(layout)
    assert topo is not None
    with _signals_raise():
        try:
            if not netns.exists(topo):
                _stop_all(a.dir, layout)  # a node outside its namespaces cannot be reused
                netns.destroy(topo)
                for what in netns.claim(topo, a.dir):
                    print(f"removed the orphaned --netns {what}", file=sys.stderr)
            for node in layout["nodes"]:
                if _pid(a.dir, node["id"]) is None:
                    _start(a.dir, layout, node)
            _wait(lambda: _all_up(a.dir, layout), 90, "every node to be healthy")
        except BaseException:
            _teardown(a.dir, layout, topo)
            raise
    if not a.no_examples:
        _examples(layout)
    _print_usage(a.dir, layout, examples=not a.no_examples)


@contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise SystemExit (so `finally`/`except` clean up); once
    one arrived, later ones are ignored so the clean-up itself is not interrupted."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def handler(signum: int, _frame: Any) -> None:
        for s in sigs:
            signal.signal(s, signal.SIG_IGN)
        raise SystemExit(f"ops/cluster: interrupted by {signal.Signals(signum).name}")

    old = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP wait until the block (a clean-up) has finished."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    got: list[int] = []
    old = {s: signal.signal(s, lambda signum, _frame: got.append(signum)) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if got:
        sys.exit(f"ops/cluster: {signal.Signals(got[0]).name} received; finished cleaning up first")


def _teardown(d: str, layout: dict[str, Any], topo: netns.Topology) -> list[str]:
    _stop_all(d, layout)
    removed = netns.destroy(topo)
    rec = layout.get("netns")
    if rec is not None and rec.get("partition") is not None:
        rec["partition"] = None
        _save(d, layout)
    return removed


def _examples(layout: dict[str, Any]) -> None:
    base = _url(layout["nodes"][0])
    for name, body in EXAMPLES.items():
        status, reply = _http("PUT", f"{base}/v1/keyspaces/{name}", body, timeout=10)
        if status not in (200, 201):
            print(f"warning: could not create {name}: {status} {reply}", file=sys.stderr)


def _print_usage(d: str, layout: dict[str, Any], examples: bool = True) -> None:
    first = _url(layout["nodes"][0])
    print(f"kv cluster of {len(layout['nodes'])} nodes is up (data and logs in {d}):")
    for node in layout["nodes"]:
        print(f"  {node['id']}  {_url(node)}  pid {_pid(d, node['id'])}")
    curl = "curl -s"
    if layout.get("secure"):
        curl += f" --cacert {d}/ca.pem"
    if layout.get("auth"):
        curl += f' -H "Authorization: Bearer $(cat {d}/admin.token)"'
    if examples:
        print(
            f"""
Keyspaces example_eventual (N=3, R=2, W=2) and example_linearizable (Raft, 3 replicas).
Try it (any node accepts any request; more in README.md):
  {curl} {first}/v1/keyspaces
  {curl} -X PUT {first}/v1/keyspaces/example_eventual/keys/hello -d '{{"value": "world"}}'
  {curl} {first}/v1/keyspaces/example_eventual/keys/hello
  {curl} -X PUT {first}/v1/keyspaces/example_linearizable/keys/n -d '{{"value": 1}}'
  {curl} {first}/v1/keyspaces/example_linearizable/keys/n
  {curl} {first}/v1/cluster"""
        )
    print(f"\nStop it:   ops/cluster down --dir {d}")
    if _topology(layout) is not None:
        print(
            f"""Partition it (nftables inside the node namespaces, docs/netns.md):
  ops/cluster partition --dir {d} isolate n1 | split n1,n2 n3 | oneway n1 n2 | heal"""
        )


def _signal(d: str, node_id: str, sig: int) -> None:
    pid = _pid(d, node_id)
    if pid is None:
        sys.exit(f"ops/cluster: {node_id} is not running")
    os.kill(pid, sig)


def _stop_all(d: str, layout: dict[str, Any]) -> None:
    pids = [p for p in (_pid(d, n["id"]) for n in layout["nodes"]) if p is not None]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)  # a paused node cannot act on SIGTERM
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.monotonic() + 10
    while time.monotonic() < end and any(_running(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if _running(pid):
            os.kill(pid, signal.SIGKILL)
    for node in layout["nodes"]:
        try:
            os.remove(os.path.join(d, node["id"], "node.pid"))
        except FileNotFoundError:
            pass


def cmd_down(a: argparse.Namespace) -> None:
    if os.path.exists(_layout_path(a.dir)):
        layout = _load(a.dir)
        topo = _topology(layout)
        if topo is None:
            _stop_all(a.dir, layout)
            return
        with _signals_deferred():
            _teardown(a.dir, layout, topo)


def cmd_cleanup(a: argparse.Namespace) -> None:
    """After a crash: SIGKILL what is left of the cluster (node processes whose command line
    names DIR, anything inside its namespaces), remove its namespaces, links and tables."""
    removed: list[str] = []
    if os.path.exists(_layout_path(a.dir)):
        layout = _load(a.dir)
        for node in layout["nodes"]:
            pid = _pid(a.dir, node["id"])
            if pid is not None and _is_node_of(pid, a.dir):
                os.kill(pid, signal.SIGKILL)
                removed.append(f"process {pid} ({node['id']})")
        topo = _topology(layout)
        if topo is not None:
            with _signals_deferred():
                removed += _teardown(a.dir, layout, topo)
    if a.stale:
        for topo, owner in netns.registered():
            if not netns.owner_records(topo, owner):
                removed += netns.destroy(topo)
    print("removed: " + "; ".join(removed) if removed else "nothing left to remove")


def _is_node_of(pid: int, d: str) -> bool:
    """Whether the pid is still a node of DIR (a pid file may outlive its process)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return os.fsencode(d) in f.read()
    except OSError:
        return False


def cmd_partition(a: argparse.Namespace) -> None:
    layout = _load(a.dir)
    topo = _topology(layout)
    if topo is None:
        print(
            f"ops/cluster: partitions need a cluster started with `up --netns` ({a.dir} is not)",
            file=sys.stderr,
        )
        sys.exit(netns.EXIT_UNAVAILABLE)
    if not netns.exists(topo):
        sys.exit(f"ops/cluster: the namespaces of {a.dir} are gone; `ops/cluster up` first")
    if a.kind == "heal":
        netns.heal(topo)
        fault = None
    else:
        try:
            fault = netns.parse_fault(topo.nodes, a.kind, a.nodes)
        except ValueError as exc:
            print(f"ops/cluster: partition: {exc}", file=sys.stderr)
            sys.exit(2)
        netns.apply(topo, fault)
    layout["netns"]["partition"] = fault.record() if fault else None
    _save(a.dir, layout)
    print(f"partition: {fault.describe()}" if fault else "healed: no partition rules")


def cmd_heal(a: argparse.Namespace) -> None:
    a.kind, a.nodes = "heal", []
    cmd_partition(a)


def cmd_status(a: argparse.Namespace) -> None:
    layout = _load(a.dir)
    members = _members(layout)
    nodes = [
        {
            "id": nd["id"],
            "pid": _pid(a.dir, nd["id"]),
            "http": nd["http"],
            "raft": nd["raft"],
            "healthy": _healthy(nd),
            # in the cluster metadata (None: no node answered); false while joining
            "member": None if members is None else nd["id"] in members,
            **({"seeds": nd["seeds"]} if _joiner(nd) else {}),
            **({"netns": nd["netns"]} if "netns" in nd else {}),
        }
        for nd in layout["nodes"]
    ]
    out: dict[str, Any] = {"nodes": nodes}
    rec = layout.get("netns")
    if rec is not None:
        out["netns"] = {"run_id": rec["run_id"], "partition": rec.get("partition")}
    if a.json:
        print(json.dumps(out))
        return
    for nd in nodes:
        state = "healthy" if nd["healthy"] else ("running" if nd["pid"] else "stopped")
        role = {True: "member", False: "joining", None: "membership unknown"}[nd["member"]]
        print(f"{nd['id']}  {nd['http']}  pid={nd['pid']}  {state}  {role}")
    if rec is not None:
        part = rec.get("partition")
        print(f"partition: {part['kind']} {' '.join(part['args'])}" if part else "partition: none")


def cmd_add(a: argparse.Namespace) -> None:
    """Start one more node as a joiner of the running cluster and add it with a membership
    plan (plan + commit, docs/membership.md); `--wait` until every transfer is done;
    `--no-commit` leaves it `joining`."""
    layout = _load(a.dir)
    node_id = a.id or _next_id(layout)
    _check_new_id(layout, node_id)
    members = _members(layout) or set()
    seeds = [nd["http"] for nd in layout["nodes"] if nd["id"] in members and _healthy(nd)]
    if not seeds:
        sys.exit(f"ops/cluster add: no running member to join through (`up --dir {a.dir}`)")
    node: dict[str, Any] = {"id": node_id, "seeds": seeds}
    topo = _topology(layout)
    if topo is None:
        node["http"], node["raft"] = _fresh_addresses(layout)
    else:  # a --netns cluster: the node gets its own namespace and 10.77.0.x (docs/netns.md)
        if not netns.exists(topo):
            sys.exit(f"ops/cluster add: the namespaces of {a.dir} are gone; `ops/cluster up` first")
        try:
            topo = netns.grow(topo, node_id, a.dir)
        except netns.NetnsError as exc:
            sys.exit(f"ops/cluster add: {exc}")
        node["http"], node["raft"] = _netns_addresses(layout, topo, node_id)
        node["netns"] = topo.ns(node_id)
        layout["netns"] = {**topo.record(), "partition": layout["netns"].get("partition")}
    http, raft = node["http"], node["raft"]
    layout["nodes"].append(node)
    _save(a.dir, layout)  # recorded before it starts: `down` and `cleanup` find it
    _start(a.dir, layout, node)
    try:
        _wait(lambda: _all_up(a.dir, {"nodes": [node]}), 60, f"{node_id} to answer /v1/health")
    except SystemExit:
        _stop_all(a.dir, {"nodes": [node]})
        layout["nodes"].remove(node)
        _save(a.dir, layout)
        raise
    pid = _pid(a.dir, node_id)
    print(f"{node_id}  {_url(http)}  pid {pid}  joining (seeds {','.join(seeds)})")
    if not a.no_commit:
        member = {"id": node_id, "http": http, "raft": raft}
        _change(layout, {"kind": "add", "node": node_id, "member": member}, a.wait)


def cmd_remove(a: argparse.Namespace) -> None:
    """Remove a member with a membership plan (plan + commit); with `--wait`, wait until
    every transfer is done, then stop its process: it holds nothing the cluster needs (its
    partitions flipped to their new owners) and its data directory can be deleted."""
    layout = _load(a.dir)
    if not any(nd["id"] == a.id for nd in layout["nodes"]):
        sys.exit(f"ops/cluster remove: no node {a.id!r}")
    change: dict[str, Any] = {"kind": "remove", "node": a.id}
    if a.force:
        change["force"] = True
    _change(layout, change, a.wait, leaving=a.id)
    if a.wait:
        leaving = [nd for nd in layout["nodes"] if nd["id"] == a.id]
        _wait_not_voting(leaving[0], VOTERS_DEADLINE_S)
        _stop_all(a.dir, {"nodes": leaving})
        print(f"{a.id} stopped; it is no member: its data in {a.dir}/{a.id} can be deleted")


def _wait_not_voting(node: dict[str, Any], deadline_s: float) -> None:
    """Until the leaving node no longer votes in the meta group: the leader replaces it
    (docs/membership.md "Meta group voters"), and stopping a voter — worse, the leader —
    before that costs the group a voter or an election. Gives up quietly if the node does
    not answer (it is stopped anyway)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        status, info = _http("GET", f"{_url(node)}/v1/cluster", timeout=5.0)
        if status != 200 or info.get("meta_group", {}).get("role") == "reader":
            return
        time.sleep(0.5)
    print(f"{node['id']} still votes in the meta group after {deadline_s:.0f}s; stopping it")


def _change(layout: dict[str, Any], change: dict[str, Any], wait: bool, leaving: str = "") -> None:
    """Plan one change, show it, commit it; with `wait`, follow it to the end.

    The operator asked for the change, not for one plan of it: when the metadata moved on
    between plan and commit (409 plan_changed, e.g. the last flip of the previous plan) it
    plans again; when a commit's outcome is unknown (no answer, 503, 504: a meta leader
    hand-over) it looks whether that plan is in flight, and else commits again — a commit
    is a compare-and-set on the plan id, so a repeat can never apply it twice."""
    url = _member_url(layout, avoid=leaving)
    tried: set[str] = set()  # plan ids sent in a commit
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        status, plan = _http("POST", f"{url}/v1/membership/plan", {"changes": [change]}, 10.0)
        if status in RETRY_STATUSES and attempt < COMMIT_ATTEMPTS:
            time.sleep(1.0)
            continue
        if status != 200:
            sys.exit(f"ops/cluster: plan refused: {_reason(status, plan)}")
        moving = plan["summary"]["replicas_moving"]
        print(f"plan {plan['plan_id']}: {moving} replicas move {plan['summary']['by_mode']}")
        body = {"plan_id": plan["plan_id"], "changes": [change]}
        tried.add(plan["plan_id"])
        status, reply = _http("POST", f"{url}/v1/membership/commit", body, 30.0)
        committed = plan["plan_id"] if status == 202 else _in_flight(url)
        if committed in tried:  # this commit, or an earlier one whose answer was lost
            print(f"committed plan {committed}")
            break
        again = status in RETRY_STATUSES or _conflict_reason(reply) == "plan_changed"
        if not again or attempt == COMMIT_ATTEMPTS:
            sys.exit(f"ops/cluster: commit refused: {_reason(status, reply)}")
        print(f"commit not applied ({_reason(status, reply)}); planning again")
        time.sleep(1.0)
    if wait:
        _wait_plan(url, PLAN_DEADLINE_S)


def _in_flight(url: str) -> str | None:
    """The plan id in flight as `url` sees it (None: none, or no answer)."""
    status, info = _http("GET", f"{url}/v1/membership", timeout=5.0)
    return str(info["plan_id"]) if status == 200 and info.get("plan_id") else None


def _conflict_reason(body: Any) -> str | None:
    err = body.get("error", {}) if isinstance(body, dict) else {}
    return str(err["reason"]) if err.get("code") == "plan_conflict" and "reason" in err else None


def _member_url(layout: dict[str, Any], avoid: str = "") -> str:
    members = _members(layout) or set()
    for nd in sorted(layout["nodes"], key=_joiner):
        if nd["id"] in members and nd["id"] != avoid and _healthy(nd):
            return _url(nd)
    sys.exit("ops/cluster: no running member answers (`ops/cluster status`)")


def _reason(status: int, body: Any) -> str:
    err = body.get("error", {}) if isinstance(body, dict) else {}
    return f"HTTP {status} {err.get('code', '')}: {err.get('message', body)}"


def _wait_plan(url: str, deadline_s: float) -> None:
    """Poll `GET /v1/membership` until the plan is done; a line per change of progress.
    Exits non-zero with what is still pending when the deadline passes."""
    end, last = time.monotonic() + deadline_s, None
    while True:
        status, info = _http("GET", f"{url}/v1/membership", timeout=5.0)
        if status == 200 and info.get("status") == "idle":
            print(f"done: members {', '.join(info['members'])}")
            return
        if status == 200 and info.get("moves_pending") != last:
            last = info.get("moves_pending")
            print(f"{info['status']}: {last} moves pending, {info.get('moves_done')} done")
        if time.monotonic() > end:
            pending = info.get("pending", [])[:5] if status == 200 else []
            sys.exit(f"ops/cluster: plan not done after {deadline_s:.0f}s; pending {pending}")
        time.sleep(0.5)


def _next_id(layout: dict[str, Any]) -> str:
    taken = {nd["id"] for nd in layout["nodes"]}
    return next(f"n{i}" for i in range(len(taken) + 1, len(taken) + 1000) if f"n{i}" not in taken)


def _check_new_id(layout: dict[str, Any], node_id: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", node_id):
        sys.exit(f"ops/cluster add: --id must match [A-Za-z0-9_.-]{{1,64}}, got {node_id!r}")
    if any(nd["id"] == node_id for nd in layout["nodes"]):
        sys.exit(f"ops/cluster add: {node_id} is already a node of this cluster (never reuse ids)")


def _fresh_addresses(layout: dict[str, Any]) -> tuple[str, str]:
    """The next HTTP/Raft port pair of the layout (P+k, P+100+k; P = the first node's HTTP
    port) that no node uses and the OS lets us bind."""
    host, _, port = layout["nodes"][0]["http"].rpartition(":")
    base = int(port)
    used = {nd[kind] for nd in layout["nodes"] for kind in ("http", "raft")}
    for k in range(len(layout["nodes"]), 100):
        http, raft = f"{host}:{base + k}", f"{host}:{base + 100 + k}"
        if used.isdisjoint({http, raft}) and port_bindable(base + k, host):
            if port_bindable(base + 100 + k, host):
                return http, raft
    sys.exit(f"ops/cluster add: no free port pair left in {base}..{base + 199}")


def _netns_addresses(layout: dict[str, Any], topo: netns.Topology, node: str) -> tuple[str, str]:
    """A --netns node's HTTP/Raft pair: its own 10.77.0.x, ports P+k and P+100+k as `up`
    numbers them (k = its place in the run; its fresh namespace has nothing bound)."""
    base = int(layout["nodes"][0]["http"].rpartition(":")[2])
    k = topo.nodes.index(node)
    return f"{topo.address(node)}:{base + k}", f"{topo.address(node)}:{base + 100 + k}"


def cmd_start(a: argparse.Namespace) -> None:
    layout = _load(a.dir)
    node = next((n for n in layout["nodes"] if n["id"] == a.id), None)
    if node is None:
        sys.exit(f"ops/cluster: no node {a.id!r}")
    topo = _topology(layout)
    if topo is not None and not netns.exists(topo):
        sys.exit(f"ops/cluster: the namespaces of {a.dir} are gone; `ops/cluster up` first")
    if _pid(a.dir, a.id) is None:
        _start(a.dir, layout, node)
    if not a.no_wait:  # a lone restarted node may need its peers before it is healthy
        _wait(lambda: _healthy(node), 60, f"{a.id} to be healthy")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="ops/cluster")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("-n", type=int, default=3)
    up.add_argument("--base-port", dest="base_port", type=int, default=7001)
    up.add_argument("--netns", action="store_true")
    up.add_argument("--no-examples", dest="no_examples", action="store_true")
    up.add_argument(
        "--secure",
        action="store_true",
        help="TLS everywhere (a private CA: DIR/ca.pem) and --auth",
    )
    up.add_argument(
        "--auth", action="store_true", help="require client tokens; DIR/admin.token is admin"
    )
    add = sub.add_parser("add", help="start one more node and add it (plan + commit)")
    add.add_argument("--id", help="node id (default: the next free n<i>)")
    add.add_argument("--wait", action="store_true", help="until every transfer is done")
    add.add_argument("--no-commit", dest="no_commit", action="store_true", help="stay joining")
    rm = sub.add_parser("remove", help="remove a member (plan + commit)")
    rm.add_argument("id")
    rm.add_argument("--wait", action="store_true", help="until done, then stop its process")
    rm.add_argument("--force", action="store_true", help="the node is gone for good")
    sub.add_parser("down")
    st = sub.add_parser("status")
    st.add_argument("--json", action="store_true")
    for name in ("kill", "pause", "resume", "start"):
        sub.add_parser(name).add_argument("id")
    sub.choices["start"].add_argument("--no-wait", dest="no_wait", action="store_true")
    clean = sub.add_parser("cleanup", help="remove what a crashed run left (idempotent)")
    clean.add_argument(
        "--stale", action="store_true", help="also remove --netns runs whose directory is gone"
    )
    part = sub.add_parser("partition", help="nftables faults of an `up --netns` cluster")
    part.add_argument("kind", choices=["isolate", "split", "oneway", "heal"])
    part.add_argument("nodes", nargs="*", help="isolate: IDs; split: ID,ID ID,..; oneway: SRC DST")
    sub.add_parser("heal", help="same as `partition heal`")
    for parser in sub.choices.values():
        parser.add_argument("--dir", default=DEFAULT_DIR)
    a = p.parse_args(argv)
    a.dir = os.path.abspath(a.dir)
    signals = {"kill": signal.SIGKILL, "pause": signal.SIGSTOP, "resume": signal.SIGCONT}
    if a.cmd in signals:
        _signal(a.dir, a.id, signals[a.cmd])
        return
    commands: dict[str, Callable[[argparse.Namespace], None]] = {
        "up": cmd_up,
        "add": cmd_add,
        "remove": cmd_remove,
        "down": cmd_down,
        "status": cmd_status,
        "start": cmd_start,
        "cleanup": cmd_cleanup,
        "partition": cmd_partition,
        "heal": cmd_heal,
    }
    _run(commands[a.cmd], a)


def _run(command: Callable[[argparse.Namespace], None], a: argparse.Namespace) -> None:
    """Namespace errors become one line on stderr and an exit code: 3 when this machine
    cannot run --netns clusters, 4 when 10.77.0.0/24 is taken, 1 for any other failure."""
    if os.path.exists(_layout_path(a.dir)):
        _use_auth(a.dir, _load(a.dir))
    try:
        command(a)
    except netns.NetnsUnavailable as exc:
        print(f"ops/cluster: --netns unavailable: {exc}", file=sys.stderr)
        sys.exit(netns.EXIT_UNAVAILABLE)
    except netns.NetnsBusy as exc:
        print(f"ops/cluster: {exc}", file=sys.stderr)
        sys.exit(netns.EXIT_BUSY)
    except netns.NetnsError as exc:
        sys.exit(f"ops/cluster: {exc}")


if __name__ == "__main__":
    main()
