"""Local multi-process cluster launcher (DESIGN.md §6). Standard library only.

    ops/cluster up [-n 3] [--dir DIR] [--base-port P] [--no-examples]
    ops/cluster down | status [--json] | kill ID | pause ID | resume ID | start ID   [--dir DIR]

Node i (1-based) listens on HTTP port P+i-1 and meta-Raft port P+100+i-1 on 127.0.0.1.
Each node gets DIR/<id>/ with its data, `node.pid` and `node.log`; DIR/cluster.json records
the layout and DIR/secret the cluster secret (generated once, mode 0600).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DIR = os.path.join(ROOT, "cluster-data")
EXAMPLES = {
    "example_eventual": {
        "consistency": "eventual",
        "replication": 3,
        "read_quorum": 2,
        "write_quorum": 2,
    },
}


def _http(method: str, url: str, body: Any = None, timeout: float = 2.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None
    except (OSError, ValueError):
        return 0, None


def _layout_path(d: str) -> str:
    return os.path.join(d, "cluster.json")


def _load(d: str) -> dict[str, Any]:
    try:
        with open(_layout_path(d)) as f:
            layout: dict[str, Any] = json.load(f)
            return layout
    except FileNotFoundError:
        sys.exit(f"ops/cluster: no cluster in {d} (run `ops/cluster up --dir {d}` first)")


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


def _start(d: str, layout: dict[str, Any], node: dict[str, Any]) -> int:
    ndir = os.path.join(d, node["id"])
    os.makedirs(ndir, exist_ok=True)
    cluster = ",".join(f"{m['id']}={m['http']}/{m['raft']}" for m in layout["nodes"])
    cmd = [
        sys.executable, "-m", "kv", "node",
        "--node-id", node["id"],
        "--data-dir", os.path.join(ndir, "data"),
        "--listen", node["http"],
        "--raft-listen", node["raft"],
        "--initial-cluster", cluster,
        "--cluster-secret-file", _secret_file(d),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(os.path.join(ndir, "node.log"), "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=ROOT, env=env, start_new_session=True,
        )  # fmt: skip
    with open(os.path.join(ndir, "node.pid"), "w") as f:
        f.write(str(proc.pid))
    return proc.pid


def _healthy(node: dict[str, Any]) -> bool:
    return _http("GET", f"http://{node['http']}/v1/health", timeout=1.0)[0] == 200


def _all_up(d: str, layout: dict[str, Any]) -> bool:
    for node in layout["nodes"]:
        if _pid(d, node["id"]) is None:
            log = os.path.join(d, node["id"], "node.log")
            with open(log, errors="replace") as f:
                tail = "".join(f.readlines()[-15:])
            sys.exit(f"ops/cluster: {node['id']} exited during start-up; end of {log}:\n{tail}")
    return all(_healthy(nd) for nd in layout["nodes"])


def _wait(pred: Any, deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    sys.exit(f"ops/cluster: timed out after {deadline_s:.0f}s waiting for {what}")


def cmd_up(a: argparse.Namespace) -> None:
    if a.netns:
        sys.exit("ops/cluster: --netns is not available yet (see the verification issue)")
    os.makedirs(a.dir, exist_ok=True)
    if os.path.exists(_layout_path(a.dir)):
        layout = _load(a.dir)
    else:
        layout = _layout(a.dir, a.n, a.base_port)
        with open(_layout_path(a.dir), "w") as f:
            json.dump(layout, f, indent=2)
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
    _print_usage(a.dir, layout)


def _examples(layout: dict[str, Any]) -> None:
    base = f"http://{layout['nodes'][0]['http']}"
    for name, body in EXAMPLES.items():
        status, reply = _http("PUT", f"{base}/v1/keyspaces/{name}", body, timeout=10)
        if status not in (200, 201):
            print(f"warning: could not create {name}: {status} {reply}", file=sys.stderr)


def _print_usage(d: str, layout: dict[str, Any]) -> None:
    first = layout["nodes"][0]["http"]
    print(f"kv cluster of {len(layout['nodes'])} nodes is up (data and logs in {d}):")
    for node in layout["nodes"]:
        print(f"  {node['id']}  http://{node['http']}  pid {_pid(d, node['id'])}")
    print(
        f"""
Try it (any node accepts any request):
  curl -s http://{first}/v1/keyspaces
  curl -s -X PUT http://{first}/v1/keyspaces/example_eventual/keys/hello -d '{{"value": "world"}}'
  curl -s http://{first}/v1/keyspaces/example_eventual/keys/hello
  curl -s http://{first}/v1/cluster

Stop it:   ops/cluster down --dir {d}"""
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
        _stop_all(a.dir, _load(a.dir))


def cmd_status(a: argparse.Namespace) -> None:
    layout = _load(a.dir)
    nodes = [
        {
            "id": nd["id"],
            "pid": _pid(a.dir, nd["id"]),
            "http": nd["http"],
            "raft": nd["raft"],
            "healthy": _healthy(nd),
        }
        for nd in layout["nodes"]
    ]
    if a.json:
        print(json.dumps({"nodes": nodes}))
        return
    for nd in nodes:
        state = "healthy" if nd["healthy"] else ("running" if nd["pid"] else "stopped")
        print(f"{nd['id']}  {nd['http']}  pid={nd['pid']}  {state}")


def cmd_start(a: argparse.Namespace) -> None:
    layout = _load(a.dir)
    node = next((n for n in layout["nodes"] if n["id"] == a.id), None)
    if node is None:
        sys.exit(f"ops/cluster: no node {a.id!r}")
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
    sub.add_parser("down")
    st = sub.add_parser("status")
    st.add_argument("--json", action="store_true")
    for name in ("kill", "pause", "resume", "start"):
        sub.add_parser(name).add_argument("id")
    sub.choices["start"].add_argument("--no-wait", dest="no_wait", action="store_true")
    for parser in sub.choices.values():
        parser.add_argument("--dir", default=DEFAULT_DIR)
    a = p.parse_args(argv)
    a.dir = os.path.abspath(a.dir)
    signals = {"kill": signal.SIGKILL, "pause": signal.SIGSTOP, "resume": signal.SIGCONT}
    if a.cmd in signals:
        _signal(a.dir, a.id, signals[a.cmd])
        return
    {"up": cmd_up, "down": cmd_down, "status": cmd_status, "start": cmd_start}[a.cmd](a)


if __name__ == "__main__":
    main()
