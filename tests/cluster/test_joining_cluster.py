"""`ops/cluster add` (issue 9, item 1; DESIGN.md §6): one more node process started as a
joiner of a running local cluster — seeds = the members' HTTP addresses, fresh ports, its
own data dir. No membership plan is committed, so it stays `joining`: `status --json` lists
it with "member": false, and `down` stops it with the founders. (`add` in a cluster of
network namespaces: tests/cluster/test_netns.py.)
"""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

from tests.cluster.harness import ROOT, Cluster, alive, wait_until

CLUSTER_PY = os.path.join(ROOT, "ops", "cluster.py")


def get(address: str, path: str) -> Any:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=5.0) as r:
        return json.loads(r.read())


def test_add_starts_a_joiner_that_status_lists_as_no_member(cluster: Cluster) -> None:
    new = cluster.add()
    assert new == "n4"
    nodes = {nd["id"]: nd for nd in cluster.status()}
    joiner = nodes["n4"]
    assert joiner["healthy"] and joiner["pid"] and joiner["member"] is False
    assert sorted(joiner["seeds"]) == sorted(nodes[n]["http"] for n in ("n1", "n2", "n3"))
    assert all(nodes[n]["member"] is True for n in ("n1", "n2", "n3"))
    assert joiner["http"] not in {nodes[n]["http"] for n in ("n1", "n2", "n3")}
    health = get(joiner["http"], "/v1/health")
    assert health["status"] == "joining" and health["member"] is False
    founder_epoch = get(nodes["n1"]["http"], "/v1/health")["epoch"]
    wait_until(
        lambda: get(joiner["http"], "/v1/health")["epoch"] == founder_epoch,
        30,
        "the joiner at the founders' epoch",
    )
    assert os.path.exists(os.path.join(cluster.dir, "n4", "data"))

    refused = cluster.ops("add", "--id", "n2", check=False)
    assert refused.returncode != 0 and "already a node" in refused.stderr

    pid = int(joiner["pid"])
    cluster.stop()  # ops/cluster down
    wait_until(lambda: not alive(pid), 30, "the joiner to exit after down")
    assert all(nd["pid"] is None for nd in cluster.status())
