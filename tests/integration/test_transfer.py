"""Eventual partitions move by transfer when a membership plan runs (dynamo_mode/transfer.py).

Four in-process founders (real LevelDB, real meta Raft group, real HTTP) and an eventual
keyspace with N=3, R=W=2. The plan removes n4 while writers keep writing fresh keys through
every node; the incoming owners pull n4's partitions, verify them against their source and
report; each partition flips, the plan finishes with n4 gone from the placement. Then every
acknowledged write is read back with R=N through every remaining node (DESIGN.md: nothing
acknowledged is ever lost, including during membership changes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import (
    POLL_INTERVAL_S,
    Api,
    NodeThread,
    api_of,
    create_keyspace,
    founder_configs,
    key_path,
    running,
)

KS = "moving"
PLAN_DEADLINE_S = 120.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NodeThread]]:
    # only the transfer may move data here: anti-entropy is off
    settings = {"anti_entropy_interval_s": 3600.0, "disowned_grace_s": 1.0}
    root = tmp_path_factory.mktemp("t")
    with running(founder_configs(root, 4, **settings)) as nodes:
        body = {"consistency": "eventual", "replication": 3, "read_quorum": 2, "write_quorum": 2}
        create_keyspace(api_of(nodes["n1"]), KS, body)
        yield nodes


class Writers:
    """One thread per node writing fresh keys; remembers every acknowledged write."""

    def __init__(self, apis: list[Api]) -> None:
        self.apis = apis
        self.acked: dict[str, Any] = {}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(len(apis))]

    def run(self, i: int) -> None:
        n = 0
        while not self.stop.is_set():
            key, value = f"w{i}-{n}", {"writer": i, "n": n}
            try:
                reply = self.apis[i].put(key_path(KS, key), {"value": value}, timeout=10)
            except OSError:
                reply = None
            if reply is not None and reply.status == 200:
                self.acked[key] = value
            n += 1

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def wait_idle(api: Api) -> dict[str, Any]:
    end = time.monotonic() + PLAN_DEADLINE_S
    while True:
        status: dict[str, Any] = api.get("/v1/membership").json()
        if status["status"] == "idle":
            return status
        assert time.monotonic() < end, f"plan not finished: {status}"
        time.sleep(POLL_INTERVAL_S * 4)


def test_removing_a_node_moves_its_partitions_and_loses_no_acknowledged_write(
    cluster: dict[str, NodeThread],
) -> None:
    n1 = api_of(cluster["n1"])
    for i in range(200):  # data that exists before the plan
        assert n1.put(key_path(KS, f"pre-{i}"), {"value": i}).status == 200
    before = {f"pre-{i}": i for i in range(200)}
    changes = {"changes": [{"kind": "remove", "node": "n4"}]}
    with Writers([api_of(cluster[n]) for n in ("n1", "n2", "n3")]) as writers:
        plan = n1.request("POST", "/v1/membership/plan", json_body=changes).json()
        assert plan["summary"]["replicas_moving"] > 0
        commit = {"plan_id": plan["plan_id"], **changes}
        reply = n1.request("POST", "/v1/membership/commit", json_body=commit)
        assert reply.status == 202, reply
        status = wait_idle(n1)
    assert status["members"] == ["n1", "n2", "n3"]
    acked = {**before, **writers.acked}
    assert len(writers.acked) > 0
    print(f"moved {plan['summary']['replicas_moving']} replicas; {len(acked)} acked writes")
    # Every replica of the final placement holds its copy (checked before any read, so
    # read repair cannot have filled it in).
    apis = {n: api_of(cluster[n]) for n in ("n1", "n2", "n3")}
    holes = [
        (k, r)
        for k in acked
        for r in n1.get(f"/v1/admin/replica/{KS}/{k}").json()["replicas"]
        if not apis[r].get(f"/v1/admin/replica/{KS}/{k}").json()["versions"]
    ]
    assert not holes, f"{len(holes)} replicas without their copy: {holes[:5]}"
    wait_dropped(api_of(cluster["n4"]), [k for k in acked if k.startswith("pre-")])
    for name in ("n1", "n2", "n3"):
        api = api_of(cluster[name])
        missing = [
            k
            for k, v in acked.items()
            if api.get(f"{key_path(KS, k)}?r=3").json().get("value") != v
        ]
        assert not missing, f"{name}: {len(missing)} acknowledged writes not read: {missing[:5]}"


def wait_dropped(api: Api, keys: list[str]) -> None:
    """The removed node deletes its copies once the grace has passed (a poll, deadline)."""
    end = time.monotonic() + PLAN_DEADLINE_S
    while True:
        held = [k for k in keys if api.get(f"/v1/admin/replica/{KS}/{k}").json()["versions"]]
        if not held:
            return
        assert time.monotonic() < end, f"n4 still holds {len(held)} keys"
        time.sleep(POLL_INTERVAL_S * 10)
