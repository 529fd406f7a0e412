"""A node joining a running cluster (issue 9, item 1; docs/membership.md "Joining nodes").

Three founders (the meta group's voters) and a fourth node started with only the cluster
secret and two seeds, all in-process (real LevelDB, pysyncobj on loopback, real HTTP). No
membership plan is committed, so the fourth node stays `joining`: it reads the founders'
metadata without voting (kv/meta_reader.py), follows later changes, coordinates eventual
requests and forwards linearizable ones like any node, sends keyspace changes made through
its API to a voter, and hosts no replica. Every wait is a poll with a deadline; every node
is stopped even when the test fails.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kv.config import NodeConfig
from kv.meta import Member
from tests.integration.conftest import (
    POLL_INTERVAL_S,
    START_DEADLINE_S,
    NodeThread,
    api_of,
    free_port,
    key_path,
    running,
)

EVENTUAL = {"consistency": "eventual", "replication": 3, "read_quorum": 2, "write_quorum": 2}
LINEARIZABLE = {"consistency": "linearizable", "replication": 3}


def configs(root: Path) -> tuple[list[NodeConfig], NodeConfig]:
    secret = secrets.token_hex(16)
    addrs = {f"n{i}": (f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}") for i in (1, 2, 3)}
    founders = tuple(Member(id=n, http=h, raft=r) for n, (h, r) in addrs.items())
    common: dict[str, Any] = {"cluster_secret": secret, "meta_poll_interval_s": 0.1}
    made = [
        NodeConfig(n, str(root / n), h, h, r, r, initial_cluster=founders, **common)
        for n, (h, r) in addrs.items()
    ]
    http, raft = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    seeds = (founders[0].http, founders[1].http)
    joiner = NodeConfig("n4", str(root / "n4"), http, http, raft, raft, seeds=seeds, **common)
    return made, joiner


def poll(probe: Callable[[], Any], what: str) -> Any:
    end = time.monotonic() + START_DEADLINE_S
    while True:
        last = probe()
        if last:
            return last
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(POLL_INTERVAL_S)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NodeThread]]:
    founders, joiner = configs(tmp_path_factory.mktemp("join"))
    with running(founders) as started, running([joiner]) as joining:
        yield {**started, **joining}


def body(reply: Any) -> dict[str, Any]:
    assert reply.status in (200, 201), reply
    data: dict[str, Any] = reply.json()
    return data


def epoch(node: NodeThread) -> int:
    return int(body(api_of(node).get("/v1/health"))["epoch"])


def create(via: NodeThread, name: str, config: dict[str, Any]) -> None:
    assert api_of(via).put(f"/v1/keyspaces/{name}", config).status == 201


def wait_keyspace(node: NodeThread, name: str) -> None:
    poll(lambda: api_of(node).get(f"/v1/keyspaces/{name}").status == 200, f"{name} on {node}")


def test_the_joiner_reports_joining_and_reads_the_founders_metadata(
    nodes: dict[str, NodeThread],
) -> None:
    joiner = api_of(nodes["n4"])
    health = body(joiner.get("/v1/health"))
    assert health["status"] == "joining" and health["member"] is False and health["node"] == "n4"
    assert body(api_of(nodes["n1"]).get("/v1/health"))["member"] is True
    poll(lambda: len({epoch(n) for n in nodes.values()}) == 1, "one epoch everywhere")
    info = body(joiner.get("/v1/cluster"))
    assert info["member"] is False
    assert [m["id"] for m in info["members"]] == ["n1", "n2", "n3"]
    assert [j["id"] for j in info["joining"]] == ["n4"]
    assert info["joining"][0]["status"] == "joining"
    assert info["meta_group"]["voter"] is False
    assert info["meta_group"]["voters"] == ["n1", "n2", "n3"]
    assert info["raft_groups"] == {}  # a joiner hosts no replica
    founder = body(api_of(nodes["n2"]).get("/v1/cluster"))
    assert founder["meta_group"]["voter"] is True and founder["joining"] == []
    assert founder["partitions"] == info["partitions"]  # one placement, read from the voters


def test_the_joiner_follows_a_keyspace_created_afterwards(nodes: dict[str, NodeThread]) -> None:
    create(nodes["n1"], "later", EVENTUAL)
    wait_keyspace(nodes["n4"], "later")
    poll(lambda: epoch(nodes["n4"]) == epoch(nodes["n1"]), "the joiner at the founders' epoch")


def test_the_joiner_coordinates_eventual_requests(nodes: dict[str, NodeThread]) -> None:
    create(nodes["n2"], "ev", EVENTUAL)
    wait_keyspace(nodes["n4"], "ev")
    joiner, path = api_of(nodes["n4"]), key_path("ev", "k1")
    assert "context" in body(joiner.put(path, {"value": "v1"}))
    assert body(joiner.get(path))["value"] == "v1"
    assert body(api_of(nodes["n3"]).get(path))["value"] == "v1"
    state = body(joiner.get("/v1/admin/replica/ev/k1"))
    assert "n4" not in state["replicas"] and state["versions"] == []  # nothing stored here


def test_the_joiner_forwards_linearizable_requests(nodes: dict[str, NodeThread]) -> None:
    create(nodes["n3"], "lin", LINEARIZABLE)
    wait_keyspace(nodes["n4"], "lin")
    joiner, path = api_of(nodes["n4"]), key_path("lin", "k1")
    reply = poll(lambda: _ok_or_none(joiner.put(path, {"value": 1})), "a forwarded write")
    assert reply == {"version": 1}
    assert body(joiner.put(path, {"value": 2, "if_version": 1})) == {"version": 2}
    assert body(joiner.get(path)) == {"key": "k1", "value": 2, "version": 2}
    assert body(api_of(nodes["n1"]).get(path))["version"] == 2
    assert body(joiner.get("/v1/cluster"))["raft_groups"] == {}


def _ok_or_none(reply: Any) -> dict[str, Any] | None:
    """A write the groups could not take yet (503, leaders still being elected) is retried."""
    if reply.status == 503:
        return None
    return body(reply)


def test_a_keyspace_created_through_the_joiner_goes_to_a_voter(
    nodes: dict[str, NodeThread],
) -> None:
    joiner = api_of(nodes["n4"])
    reply = joiner.put("/v1/keyspaces/via_joiner", EVENTUAL)
    assert reply.status == 201, reply
    assert body(joiner.get("/v1/keyspaces/via_joiner"))["name"] == "via_joiner"  # at once
    for name in ("n1", "n2", "n3"):
        wait_keyspace(nodes[name], "via_joiner")
    assert joiner.put("/v1/keyspaces/via_joiner", EVENTUAL).status == 200  # unchanged
    conflict = joiner.put("/v1/keyspaces/via_joiner", {**EVENTUAL, "replication": 2})
    assert conflict.status == 409, conflict  # replication is fixed
    assert joiner.delete("/v1/keyspaces/via_joiner").status == 204
    assert joiner.get("/v1/keyspaces/via_joiner").status == 404


def test_a_keyspace_acknowledged_elsewhere_is_never_404_on_a_lagging_node(
    nodes: dict[str, NodeThread],
) -> None:
    """kv/service.py: a node whose metadata lacks a keyspace waits for a meta read barrier
    before answering 404. The joiner's metadata poll is stopped, so only the barrier can
    bring it the keyspace created through n1."""
    joiner = nodes["n4"]
    reader = joiner.node.meta.reader
    assert reader is not None
    asyncio.run_coroutine_threadsafe(reader.stop(), joiner.loop).result(timeout=10.0)
    try:
        create(nodes["n1"], "unseen", EVENTUAL)
        api, path = api_of(joiner), key_path("unseen", "k")
        assert body(api.put(path, {"value": "v"}))["context"]
        assert body(api.get(path))["value"] == "v"
        assert body(api.get("/v1/keyspaces/unseen"))["name"] == "unseen"
        missing = api.get("/v1/keyspaces/never_created")
        assert missing.status == 404 and missing.json()["error"]["code"] == "keyspace_not_found"
    finally:
        joiner.loop.call_soon_threadsafe(reader.start)
