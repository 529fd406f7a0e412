"""Linearizable requests forwarded between nodes (raft_groups/frontend.py, `lin_forward`).

Three in-process nodes (real LevelDB, real pysyncobj groups on loopback, real HTTP) and a
linearizable keyspace with replication 1: each key's Raft group lives on one node, so a
request through either of the other two is forwarded to it over the internode transport.

The timeout path: the member's event loop is blocked (a bounded `time.sleep` scheduled on
it, so its HTTP server answers nothing) while a write is forwarded to it with a short
deadline. The forwarder must answer 504 `timeout` carrying the `request_id` (DESIGN.md §5:
"may have been applied"), never a 500; once the member wakes it applies the write, and a
retry with the same `request_id` is applied at most once.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import (
    POLL_INTERVAL_S,
    START_DEADLINE_S,
    Api,
    NodeThread,
    api_of,
    error_of,
    founder_configs,
    key_path,
    running,
    wait_groups_led,
)

KS = "fwd"
BLOCK_S = 3.0  # how long the member's loop is blocked; the forwarded deadline is far shorter
SHORT_TIMEOUT_MS = 300


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NodeThread]]:
    with running(founder_configs(tmp_path_factory.mktemp("c"), 3)) as nodes:
        reply = api_of(nodes["n1"]).put(
            f"/v1/keyspaces/{KS}", {"consistency": "linearizable", "replication": 1}
        )
        assert reply.status in (200, 201), reply
        for node in nodes.values():
            wait_groups_led(api_of(node))
        yield nodes


def owner_of(api: Api, key: str) -> str:
    state = api.get(f"/v1/admin/replica/{KS}/{key}").json()
    (owner,) = state["replicas"]
    return str(owner)


def remote_key(cluster: dict[str, NodeThread], via: str, prefix: str) -> tuple[str, str]:
    """A fresh key whose group is not on `via`, and its owner."""
    for i in range(1000):
        key = f"{prefix}-{secrets.token_hex(4)}-{i}"
        owner = owner_of(api_of(cluster[via]), key)
        if owner != via:
            return key, owner
    raise AssertionError("no key routed away from " + via)


def body(reply: Any) -> dict[str, Any]:
    data: dict[str, Any] = reply.json()
    return data


def test_forwarded_reads_writes_and_conditions(cluster: dict[str, NodeThread]) -> None:
    key, owner = remote_key(cluster, "n1", "k")
    via = api_of(cluster["n1"])
    path = key_path(KS, key)
    assert via.get(path).status == 404
    assert body(via.put(path, {"value": "a", "if_version": 0})) == {"version": 1}
    conflict = via.put(path, {"value": "b", "if_version": 0})
    assert conflict.status == 412 and error_of(conflict)["current_version"] == 1
    assert body(via.put(path, {"value": "b", "if_version": 1})) == {"version": 2}
    for node in cluster.values():  # every node, forwarding or not, reads the same
        assert body(api_of(node).get(path)) == {"key": key, "value": "b", "version": 2}
    assert body(api_of(cluster[owner]).get(f"{path}?consistency=stale"))["stale"] is True
    assert body(via.delete(path)) == {"version": 0, "deleted": True}  # absent = version 0
    assert via.get(path).status == 404


def test_a_forwarded_request_keeps_the_error_table(cluster: dict[str, NodeThread]) -> None:
    key, _ = remote_key(cluster, "n2", "e")
    via = api_of(cluster["n2"])
    bad = via.put(key_path(KS, key), {"value": 1, "if_version": -1})
    assert bad.status == 400 and error_of(bad)["field"] == "if_version"
    foreign = via.put(key_path(KS, key), {"value": 1, "context": "x"})
    assert foreign.status == 400 and error_of(foreign)["field"] == "context"


def block_loop(node: NodeThread, seconds: float) -> None:
    node.loop.call_soon_threadsafe(time.sleep, seconds)


def wait_visible(api: Api, path: str, deadline_s: float) -> dict[str, Any]:
    end = time.monotonic() + deadline_s
    while True:
        reply = api.get(path)
        if reply.status == 200:
            return body(reply)
        assert time.monotonic() < end, f"{path} never became visible: {reply}"
        time.sleep(POLL_INTERVAL_S)


def test_a_forwarded_write_that_times_out_is_504_with_its_request_id(
    cluster: dict[str, NodeThread],
) -> None:
    key, owner = remote_key(cluster, "n3", "t")
    via, path = api_of(cluster["n3"]), key_path(KS, key)
    block_loop(cluster[owner], BLOCK_S)
    reply = via.put(
        f"{path}?timeout_ms={SHORT_TIMEOUT_MS}", {"value": "maybe", "request_id": "rid-t1"}
    )
    assert reply.status == 504, reply
    err = error_of(reply)
    assert err["code"] == "timeout" and err["request_id"] == "rid-t1"
    # The member wakes and applies it; a retry with the same request_id is deduplicated.
    assert wait_visible(via, path, START_DEADLINE_S) == {
        "key": key,
        "value": "maybe",
        "version": 1,
    }
    assert body(via.put(path, {"value": "maybe", "request_id": "rid-t1"})) == {"version": 1}
    assert body(via.get(path))["version"] == 1


def test_a_forwarded_read_that_times_out_is_a_retryable_503(
    cluster: dict[str, NodeThread],
) -> None:
    key, owner = remote_key(cluster, "n1", "r")
    via = api_of(cluster["n1"])
    block_loop(cluster[owner], BLOCK_S)
    reply = via.get(f"{key_path(KS, key)}?timeout_ms={SHORT_TIMEOUT_MS}")
    assert reply.status == 503, reply
    assert "retry-after" in reply.headers
    wait_visible_or_absent(via, key_path(KS, key))


def wait_visible_or_absent(api: Api, path: str) -> None:
    """The member answers again once its loop is free (404: the key was never written)."""
    end = time.monotonic() + START_DEADLINE_S
    while api.get(path).status != 404:
        assert time.monotonic() < end, f"{path}: member never answered again"
        time.sleep(POLL_INTERVAL_S)
