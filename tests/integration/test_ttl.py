"""TTL on real in-process nodes (issue 13 item 5, docs/ttl.md).

Three founders on loopback, a keyspace of each mode with replication 3: a key written with
`ttl_s=1` reads as absent on every node once it has expired, and is then gone from every
node's storage — the Raft group's records (deleted by the leader's `expire` command, through
the log) and the eventual replica's versions (turned into tombstones, then purged by the
tombstone reaper; its grace is shortened here). A key without TTL stays. Then, on one node,
a TTL kept across a consistency switch each way.

Every wait is a poll with a deadline; every node is stopped on the way out (`running`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dynamo_mode import expiry as dynamo_expiry
from dynamo_mode.replica import KeyRef
from kv import routing
from raft_groups import expiry as raft_expiry
from raft_groups import state_machine
from raft_groups.layout import bookkeeping_key
from raft_groups.placement import GroupSpec
from tests.integration.conftest import (
    Api,
    NodeThread,
    api_of,
    create_keyspace,
    founder_configs,
    key_path,
    poll,
    retry_503,
    running,
    single_node_config,
    wait_groups_led,
)

DEADLINE_S = 60.0
# the eventual purge: expired versions become tombstones, purged after this grace
FAST_PURGE = {"tombstone_grace_s": 0.5, "tombstone_gc_interval_s": 0.2}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NodeThread]]:
    root = tmp_path_factory.mktemp("ttl")
    with running(founder_configs(root, 3, **FAST_PURGE)) as nodes:
        api = api_of(nodes["n1"])
        create_keyspace(api, "lin", {"consistency": "linearizable", "replication": 3})
        create_keyspace(api, "ev", {"consistency": "eventual", "replication": 3})
        for node in nodes.values():
            wait_groups_led(api_of(node))
        yield nodes


def status_everywhere(nodes: dict[str, NodeThread], ks: str, key: str) -> set[int]:
    def status(node: NodeThread) -> int:
        return int(retry_503(lambda: api_of(node).get(key_path(ks, key)), DEADLINE_S).status)

    return {status(n) for n in nodes.values()}


def located(node: NodeThread, ks_name: str, key: str) -> tuple[Any, routing.Route]:
    md = node.node.meta.metadata
    ks = md.keyspace(ks_name)
    assert ks is not None
    return ks, routing.place(md, ks, key)


def raft_stored(node: NodeThread, key: str) -> bool:
    """Whether the node's Raft group still stores a record of `key`, or its expiry entry."""
    ks, route = located(node, "lin", key)
    spec = GroupSpec(route.partition, ks.replication, route.replicas)
    engine = node.node.groups.engine
    named = ks.uid.to_bytes(4, "big") + key.encode()
    index = bookkeeping_key(spec.number, raft_expiry.INDEX)
    entries = [k for k, _ in engine.iterate_prefix(index) if k.endswith(named)]
    record = engine.get(state_machine.group_prefix(spec.number) + named)
    return record is not None or bool(entries)


def eventual_stored(node: NodeThread, key: str) -> bool:
    """Whether the node's replica still stores versions of `key` (a tombstone too), or
    its expiry marker."""
    ks, route = located(node, "ev", key)
    ref = KeyRef(route.partition, ks.uid, key)
    found = node.node.replica_store.iterate_prefix(dynamo_expiry.MARKER_PREFIX)
    markers = [k for k, _ in found if k.endswith(ref.storage_key())]
    return bool(node.node.replica.fetch(ref)) or bool(markers)


@pytest.mark.parametrize(("ks", "stored"), [("lin", raft_stored), ("ev", eventual_stored)])
def test_a_key_with_ttl_1_is_absent_everywhere_after_expiry_then_gone_from_storage(
    cluster: dict[str, NodeThread], ks: str, stored: Callable[[NodeThread, str], bool]
) -> None:
    api = api_of(cluster["n1"])
    written = time.time()
    assert (
        retry_503(
            lambda: api.put(key_path(ks, "brief"), {"value": "x", "ttl_s": 1}), DEADLINE_S
        ).status
        == 200
    )
    assert (
        retry_503(lambda: api.put(key_path(ks, "stays"), {"value": "y"}), DEADLINE_S).status == 200
    )
    shown = retry_503(lambda: api_of(cluster["n2"]).get(key_path(ks, "brief")), DEADLINE_S)
    assert shown.status in (200, 404), shown  # 404: a slow machine saw it expire already
    if shown.status == 200:
        assert shown.json()["expires_at"] >= int(written * 1000) + 1000
    poll(lambda: status_everywhere(cluster, ks, "brief") == {404}, f"{ks}/brief absent", DEADLINE_S)
    assert status_everywhere(cluster, ks, "stays") == {200}
    listed = retry_503(lambda: api.get(f"/v1/keyspaces/{ks}/keys"), DEADLINE_S).json()["keys"]
    assert "brief" not in listed and "stays" in listed
    for node in cluster.values():

        def purged(n: NodeThread = node) -> bool:
            return not stored(n, "brief")

        poll(purged, f"{ks}/brief purged on {node}", DEADLINE_S)
    assert status_everywhere(cluster, ks, "brief") == {404}  # and it never comes back


@pytest.mark.parametrize("ks", ["lin", "ev"])
def test_a_write_without_ttl_makes_the_key_permanent(
    cluster: dict[str, NodeThread], ks: str
) -> None:
    api = api_of(cluster["n3"])
    assert (
        retry_503(lambda: api.put(key_path(ks, "p"), {"value": 1, "ttl_s": 1}), DEADLINE_S).status
        == 200
    )
    seen = retry_503(lambda: api.get(key_path(ks, "p")), DEADLINE_S).json()
    body: dict[str, Any] = {"value": 2}
    if ks == "ev" and "context" in seen:
        body["context"] = seen["context"]  # supersedes the TTL version
    assert retry_503(lambda: api.put(key_path(ks, "p"), body), DEADLINE_S).status == 200
    # a later key with the same TTL: once it has expired, so has the first write of "p"
    assert (
        retry_503(
            lambda: api.put(key_path(ks, "later"), {"value": 0, "ttl_s": 1}), DEADLINE_S
        ).status
        == 200
    )
    poll(lambda: status_everywhere(cluster, ks, "later") == {404}, f"{ks}/later absent", DEADLINE_S)
    reply = retry_503(lambda: api.get(key_path(ks, "p")), DEADLINE_S)
    assert reply.status == 200 and reply.json()["value"] == 2, reply
    assert "expires_at" not in reply.json()


# ---------------------------------------------------------------------- across a switch
def _switched(api: Api, name: str, to: str) -> None:
    def done() -> bool:
        ks = api.get(f"/v1/keyspaces/{name}").json()
        return bool(ks["consistency"] == to and "switch" not in ks)

    poll(done, f"{name} switched to {to}", DEADLINE_S)


def test_a_ttl_is_kept_across_a_switch_each_way(tmp_path: Path) -> None:
    with running([single_node_config(tmp_path / "n1")]) as nodes:
        api = api_of(nodes["n1"])
        create_keyspace(api, "sw", {"consistency": "eventual", "replication": 1})
        assert api.put(key_path("sw", "long"), {"value": "l", "ttl_s": 3600}).status == 200
        assert api.put(key_path("sw", "short"), {"value": "s", "ttl_s": 2}).status == 200
        expires = api.get(key_path("sw", "long")).json()["expires_at"]
        to_lin = {"consistency": "linearizable", "replication": 1}
        assert api.put("/v1/keyspaces/sw", to_lin).status == 202
        _switched(api, "sw", "linearizable")
        assert (
            retry_503(lambda: api.get(key_path("sw", "long")), DEADLINE_S).json()["expires_at"]
            == expires
        )
        poll(lambda: api.get(key_path("sw", "short")).status == 404, "short expired", DEADLINE_S)
        to_ev = {"consistency": "eventual", "replication": 1}
        assert api.put("/v1/keyspaces/sw", to_ev).status == 202
        _switched(api, "sw", "eventual")
        assert (
            retry_503(lambda: api.get(key_path("sw", "long")), DEADLINE_S).json()["expires_at"]
            == expires
        )
        assert api.get(key_path("sw", "short")).status == 404
