"""3 → 5 → 3 node processes through `ops/cluster add` / `remove` (issue 9, item 1; the meta
group keeps at most 5 voters and never loses its majority; docs/membership.md "Meta group
voters").

An eventual and a linearizable keyspace hold a few keys (their replicas move with every
plan: transfers and Raft reconfiguration, alongside the meta group's own). Two nodes are
added (plans committed and waited for by `ops/cluster add --wait`): with five members all
five vote. Then two founders are removed, one at a time (`ops/cluster remove
--wait` stops each once its plan is done — possibly before the voters moved, so the group
must also cope with a leaving voter that is already down). Meanwhile a thread makes a
metadata change every 0.2 s through the nodes that stay, and each commits (retryable
answers retried). At the end the three remaining members are the voters, agree on the
epoch and the voters, a keyspace created afterwards is seen by all of them, and every key
reads back.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from tests.cluster.harness import Cluster, wait_until

EVENTUAL = {"consistency": "eventual", "replication": 3, "read_quorum": 2, "write_quorum": 2}
LINEARIZABLE = {"consistency": "linearizable", "replication": 3}
KEYS = [f"k{i}" for i in range(12)]


def call(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except OSError:
        return 0, None


def cluster_view(address: str) -> dict[str, Any]:
    status, info = call("GET", f"http://{address}/v1/cluster", timeout=5.0)
    assert status == 200, (address, status, info)
    view: dict[str, Any] = info
    return view


def wait_agreed(cluster: Cluster, nodes: list[str], want: set[str], what: str) -> None:
    """`agreed`, polled with a deadline; on failure the message carries every node's view
    of the meta group and the meta lines of their logs."""
    try:
        wait_until(lambda: agreed(cluster, nodes, want), 90, what)
    except AssertionError as exc:
        views = {n: call("GET", f"http://{cluster.http(n)}/v1/cluster")[1] for n in nodes}
        groups = {n: (v or {}).get("meta_group") for n, v in views.items()}
        logs = [line for line in cluster.logs(400).splitlines() if "meta" in line or "---" in line]
        raise AssertionError(f"{exc}\n{json.dumps(groups, indent=1)}\n" + "\n".join(logs)) from None


def agreed(cluster: Cluster, nodes: list[str], want: set[str]) -> bool:
    """`nodes` (all of them voters in `want`) agree on the epoch and the voters, and no
    configuration holds a voter beyond them."""
    views = [cluster_view(cluster.http(n)) for n in nodes]
    groups = [v["meta_group"] for v in views]
    return (
        len({v["epoch"] for v in views}) == 1
        and all(sorted(g["voters"]) == sorted(want) for g in groups)
        and all(g["role"] == "voter" and len(g["members"]) == len(want) for g in groups)
    )


class MetaChanges:
    """A metadata change every 0.2 s through `addresses`, each retried until it commits."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.committed = 0
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            body = {**EVENTUAL, "read_quorum": 1 + i % 2}
            end = time.monotonic() + 30.0
            while True:
                address = self.addresses[i % len(self.addresses)]
                status, reply = call("PUT", f"http://{address}/v1/keyspaces/m{i % 3}", body)
                if status in (200, 201):
                    self.committed += 1
                    break
                if time.monotonic() > end:
                    self.failed.append(f"m{i % 3}: last HTTP {status} {reply}")
                    break
                i += 1
                time.sleep(0.2)
            i += 1
            self.stop.wait(0.2)

    def __enter__(self) -> MetaChanges:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def test_three_to_five_to_three_keeps_the_meta_groups_majority(cluster: Cluster) -> None:
    n1 = f"http://{cluster.http('n1')}"
    assert call("PUT", f"{n1}/v1/keyspaces/ev", EVENTUAL)[0] in (200, 201)
    assert call("PUT", f"{n1}/v1/keyspaces/lin", LINEARIZABLE)[0] in (200, 201)
    for ks in ("ev", "lin"):
        for key in KEYS:
            wait_until(
                lambda ks=ks, key=key: (
                    call("PUT", f"{n1}/v1/keyspaces/{ks}/keys/{key}", {"value": key})[0] == 200
                ),
                30,
                f"{ks}/{key} written",
            )
    added = [cluster.add(commit=True, wait=True) for _ in range(2)]
    everyone = ["n1", "n2", "n3", *added]
    wait_agreed(cluster, everyone, set(everyone), "five voters")

    staying = ["n3", *added]
    with MetaChanges([cluster.http(n) for n in staying]) as changes:
        cluster.remove("n1", wait=True)
        cluster.remove("n2", wait=True)
        wait_agreed(cluster, staying, set(staying), "three voters")
    assert not changes.failed, changes.failed
    assert changes.committed >= 5, changes.committed

    leader = cluster_view(cluster.http("n3"))["meta_group"]["leader"]
    assert leader in staying
    url = f"http://{cluster.http(added[0])}"
    assert call("PUT", f"{url}/v1/keyspaces/after", EVENTUAL)[0] in (200, 201)
    for n in staying:
        wait_until(
            lambda n=n: call("GET", f"http://{cluster.http(n)}/v1/keyspaces/after")[0] == 200,
            30,
            f"{n} to see the keyspace",
        )
    for ks in ("ev", "lin"):
        for key in KEYS:
            status, got = call("GET", f"{url}/v1/keyspaces/{ks}/keys/{key}")
            assert status == 200 and got["value"] == key, (ks, key, status, got)
    print(f"{changes.committed} metadata changes committed while two founders left")
