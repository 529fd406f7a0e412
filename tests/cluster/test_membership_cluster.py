"""3 → 4 → 3 nodes on real processes while writers write (issue 9 acceptance, eventual part).

`ops/cluster add --wait` starts n4 and adds it (plan + commit, transfers to the end); then
`ops/cluster remove n1 --wait` removes a different founding node and stops its process, and
its data directory is deleted. Writers write fresh keys (W=2, unique values) through every
member the whole time. Afterwards every replica of the final placement holds its copy of
every acknowledged write (checked per replica before any read could repair it), and every
acknowledged write reads back with R=N. The replicas moved are printed against the ideal.
A linearizable keyspace moves at the same time (its Raft groups reconfigure one member at a
time): a second set of writers creates keys with `if_version: 0` and bumps each with a
compare-and-set; every acknowledged version reads back (or a later one), through every
final member. Recorded-history checking of linearizable moves is in
tests/integration/test_raft_moves.py.
"""

from __future__ import annotations

import json
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.cluster.harness import Cluster

KS = "grow"
LIN = "grow_lin"


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


class Writers:
    """One thread per address writing fresh keys; remembers every acknowledged write."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.acked: dict[str, Any] = {}
        self.versions: dict[str, int] = {}  # linearizable: the last acknowledged version
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(3)]
        self.threads += [threading.Thread(target=self.run_cas, args=(i,)) for i in range(2)]

    def run_cas(self, i: int) -> None:
        """Create a key (if_version 0), then bump it once with a compare-and-set."""
        n = 0
        while not self.stop.is_set():
            key = f"c{i}-{n}"
            address = self.addresses[n % len(self.addresses)]
            url = f"http://{address}/v1/keyspaces/{LIN}/keys/{quote(key)}"
            for version in (0, 1):
                status, reply = call("PUT", url, {"value": [key, version], "if_version": version})
                if status != 200:
                    break
                self.versions[key] = reply["version"]
            n += 1

    def run(self, i: int) -> None:
        n = 0
        while not self.stop.is_set():
            key, value = f"w{i}-{n}", {"writer": i, "n": n}
            address = self.addresses[n % len(self.addresses)]
            url = f"http://{address}/v1/keyspaces/{KS}/keys/{quote(key)}"
            if call("PUT", url, {"value": value})[0] == 200:
                self.acked[key] = value
            n += 1

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def test_grow_to_four_then_remove_a_founder_losing_no_acknowledged_write(
    cluster: Cluster,
) -> None:
    n1 = f"http://{cluster.http('n1')}"
    body = {"consistency": "eventual", "replication": 3, "read_quorum": 2, "write_quorum": 2}
    assert call("PUT", f"{n1}/v1/keyspaces/{KS}", body)[0] in (200, 201)
    lin = {"consistency": "linearizable", "replication": 3}
    assert call("PUT", f"{n1}/v1/keyspaces/{LIN}", lin, timeout=60)[0] in (200, 201)
    survivors = ["n2", "n3"]
    with Writers([cluster.http(n) for n in survivors]) as writers:
        added = cluster.add(commit=True, wait=True)
        cluster.remove("n1", wait=True)
    shutil.rmtree(Path(cluster.dir) / "n1")
    final = [*survivors, added]
    url = {n: f"http://{cluster.http(n)}" for n in final}
    status, info = call("GET", f"{url['n2']}/v1/membership")
    assert status == 200 and info["status"] == "idle" and sorted(info["members"]) == sorted(final)
    assert writers.acked, "the writers never got an acknowledgement"
    holes = []
    for key in writers.acked:
        path = f"/v1/admin/replica/{KS}/{quote(key)}"
        for replica in call("GET", url["n2"] + path)[1]["replicas"]:
            if not call("GET", url[replica] + path)[1]["versions"]:
                holes.append((key, replica))
    assert not holes, f"{len(holes)} replicas without their copy: {holes[:5]}"
    for name in final:
        lost = [
            k
            for k, v in writers.acked.items()
            if call("GET", f"{url[name]}/v1/keyspaces/{KS}/keys/{quote(k)}?r=3")[1].get("value")
            != v
        ]
        assert not lost, f"{name}: {len(lost)} acknowledged writes not read: {lost[:5]}"
    assert writers.versions, "no compare-and-set was acknowledged"
    for name in final:
        behind = []
        for key, version in writers.versions.items():
            got = call("GET", f"{url[name]}/v1/keyspaces/{LIN}/keys/{quote(key)}")[1]
            if got.get("version", 0) < version or got.get("value") != [key, got["version"] - 1]:
                behind.append((key, version, got))
        assert not behind, f"{name}: {len(behind)} linearizable keys behind: {behind[:3]}"
    print(
        f"{len(writers.acked)} eventual and {len(writers.versions)} linearizable keys "
        f"acknowledged; members now {final}"
    )
