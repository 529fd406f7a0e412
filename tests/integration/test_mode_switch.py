"""A live switch of an eventual keyspace to linearizable on a real node (issue 12,
docs/mode_switch.md): `PUT /v1/keyspaces/KS` with the other consistency starts it (202),
`GET` shows its progress, the data written before is readable and writable through the
Raft groups afterwards, and bad input changes nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from raft_groups import state_machine
from tests.integration.conftest import (
    Api,
    api_of,
    create_keyspace,
    key_path,
    retry_503,
    running,
    single_node_config,
)

DEADLINE_S = 60.0


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running([single_node_config(tmp_path / "n1")]) as nodes:
        yield api_of(nodes["n1"])


def _wait_switched(api: Api, name: str) -> dict[str, Any]:
    end = time.monotonic() + DEADLINE_S
    while True:
        ks = api.get(f"/v1/keyspaces/{name}").json()
        if ks["consistency"] == "linearizable" and "switch" not in ks:
            return dict(ks)
        assert time.monotonic() < end, f"switch not done: {ks}"
        time.sleep(0.1)


def test_eventual_to_linearizable_keeps_every_value_and_serves_through_raft(api: Api) -> None:
    create_keyspace(api, "carts", {"consistency": "eventual", "replication": 1})
    for i in range(40):
        assert api.put(key_path("carts", f"k{i}"), {"value": {"n": i}}).status == 200
    assert api.delete(key_path("carts", "k0")).status in (200, 204)
    started = api.put("/v1/keyspaces/carts", {"consistency": "linearizable", "replication": 1})
    assert started.status == 202, started
    assert started.json()["switch"]["to"] == "linearizable"
    after = retry_503(lambda: api.put(key_path("carts", "k1"), {"value": "after"}), DEADLINE_S)
    assert after.status == 200 and after.json()["version"] == 2  # migrated v1, then this
    final = _wait_switched(api, "carts")
    assert final["replication"] == 1
    for i in range(2, 40):
        got = retry_503(lambda i=i: api.get(key_path("carts", f"k{i}")), DEADLINE_S)
        assert got.status == 200 and got.json()["value"] == {"n": i}, got
        assert got.json()["version"] == 1
    assert api.get(key_path("carts", "k1")).json()["value"] == "after"
    assert api.get(key_path("carts", "k0")).status == 404  # the tombstone: absent
    cas = api.put(key_path("carts", "k2"), {"value": "cas", "if_version": 1})
    assert cas.status == 200 and cas.json()["version"] == 2


def test_siblings_merge_as_json_lists(api: Api) -> None:
    create_keyspace(api, "lists", {"consistency": "eventual", "replication": 1})
    for item in ([1, 2], [2, 3]):  # blind writes: concurrent siblings
        assert api.put(key_path("lists", "k"), {"value": item}).status == 200
    assert len(api.get(key_path("lists", "k")).json()["siblings"]) == 2
    body = {"consistency": "linearizable", "replication": 1, "siblings": "merge-json-list"}
    assert api.put("/v1/keyspaces/lists", body).status == 202
    _wait_switched(api, "lists")
    got = retry_503(lambda: api.get(key_path("lists", "k")), DEADLINE_S)
    assert got.json()["value"] == [1, 2, 3]


def test_lww_keeps_the_sibling_written_last(api: Api) -> None:
    """`lww`: of a key's siblings the one with the latest write time (docs/mode_switch.md);
    a deleted key stays absent. Blind writes through one node, one after
    the other, so the later one carries the later (or, within a millisecond, the larger
    dot: the same node's next counter) write time."""
    create_keyspace(api, "lw", {"consistency": "eventual", "replication": 1})
    for value in ("first", "second", "third"):
        assert api.put(key_path("lw", "k"), {"value": value}).status == 200
    for value in ("x", "y"):
        assert api.put(key_path("lw", "gone"), {"value": value}).status == 200
    assert len(api.get(key_path("lw", "k")).json()["siblings"]) == 3
    assert api.delete(key_path("lw", "gone")).status in (200, 204)
    body = {"consistency": "linearizable", "replication": 1, "siblings": "lww"}
    assert api.put("/v1/keyspaces/lw", body).status == 202
    _wait_switched(api, "lw")
    got = retry_503(lambda: api.get(key_path("lw", "k")), DEADLINE_S)
    assert got.status == 200 and got.json()["value"] == "third", got
    assert retry_503(lambda: api.get(key_path("lw", "gone")), DEADLINE_S).status == 404


def test_refuse_lists_the_keys_with_siblings_and_changes_nothing(api: Api) -> None:
    create_keyspace(api, "refusing", {"consistency": "eventual", "replication": 1})
    for value in ("a", "b"):
        assert api.put(key_path("refusing", "twice"), {"value": value}).status == 200
    assert api.put(key_path("refusing", "once"), {"value": 1}).status == 200
    before = api.get("/v1/keyspaces/refusing").json()
    reply = api.put("/v1/keyspaces/refusing", {"consistency": "linearizable", "replication": 1})
    assert reply.status == 409, reply
    error = reply.json()["error"]
    assert error["code"] == "keyspace_conflict" and error["keys"] == ["twice"]
    assert error["count"] == 1 and "refuse" in error["message"]
    assert api.get("/v1/keyspaces/refusing").json() == before


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"consistency": "linearizable", "replication": 1, "siblings": "newest"}, 400, "siblings"),
        ({"consistency": "linearizable", "replication": 3}, 400, "replication"),
        ({"consistency": "eventual", "replication": 1, "siblings": "lww"}, 400, "siblings"),
    ],
)
def test_bad_switches_are_4xx_and_change_nothing(
    api: Api, body: dict[str, Any], status: int, field: str
) -> None:
    create_keyspace(api, "ev", {"consistency": "eventual", "replication": 1})
    before = api.get("/v1/keyspaces/ev").json()
    reply = api.put("/v1/keyspaces/ev", body)
    assert reply.status == status and reply.json()["error"]["field"] == field, reply
    assert api.get("/v1/keyspaces/ev").json() == before


def test_the_eventual_copies_are_deleted_after_the_switch(tmp_path: Path) -> None:
    config = replace(single_node_config(tmp_path / "n1"), disowned_grace_s=0.2)
    with running([config]) as nodes:
        node, api = nodes["n1"], api_of(nodes["n1"])
        create_keyspace(api, "moved", {"consistency": "eventual", "replication": 1})
        for i in range(20):
            assert api.put(key_path("moved", f"k{i}"), {"value": i}).status == 200
        uid = api.get("/v1/cluster").json()["epoch"]  # the keyspace is the latest change
        replica, partitions = node.node.replica, range(config.partitions)

        def held() -> int:
            return sum(bool(replica.scan(p, uid, None, 1)[0]) for p in partitions)

        assert held() > 0
        body = {"consistency": "linearizable", "replication": 1}
        assert api.put("/v1/keyspaces/moved", body).status == 202
        _wait_switched(api, "moved")
        end = time.monotonic() + DEADLINE_S
        while held():
            assert time.monotonic() < end, f"{held()} partitions still hold eventual copies"
            time.sleep(0.2)
        assert retry_503(lambda: api.get(key_path("moved", "k7")), DEADLINE_S).json()["value"] == 7


def _wait_mode(api: Api, name: str, mode: str) -> dict[str, Any]:
    end = time.monotonic() + DEADLINE_S
    while True:
        ks = api.get(f"/v1/keyspaces/{name}").json()
        if ks["consistency"] == mode and "switch" not in ks:
            return dict(ks)
        assert time.monotonic() < end, f"switch not done: {ks}"
        time.sleep(0.1)


def test_linearizable_to_eventual_keeps_every_value_and_every_delete(tmp_path: Path) -> None:
    config = single_node_config(tmp_path / "n1")
    with running([config]) as nodes:
        node, api = nodes["n1"], api_of(nodes["n1"])
        create_keyspace(api, "orders", {"consistency": "linearizable", "replication": 1})
        for i in range(30):
            put = retry_503(
                lambda i=i: api.put(key_path("orders", f"k{i}"), {"value": i}), DEADLINE_S
            )
            assert put.status == 200, put
        ks = node.node.meta.metadata.keyspace("orders")
        assert ks is not None
        engine, uid = node.node.groups.engine, ks.uid

        def raft_copies() -> list[int]:
            return [
                p
                for p in range(config.partitions)
                if state_machine.records(engine, 1 << 16 | p, uid)
            ]

        assert raft_copies()
        started = api.put("/v1/keyspaces/orders", {"consistency": "eventual", "replication": 1})
        assert started.status == 202 and started.json()["switch"]["to"] == "eventual", started
        # during the switch: writes are eventual, deletes stick, reads see both sides
        assert (
            retry_503(
                lambda: api.put(key_path("orders", "k1"), {"value": "new"}), DEADLINE_S
            ).status
            == 200
        )
        gone = retry_503(lambda: api.delete(key_path("orders", "k2")), DEADLINE_S)
        assert gone.status == 200 and gone.json()["deleted"] is True, gone
        assert retry_503(lambda: api.get(key_path("orders", "k3")), DEADLINE_S).json()["value"] == 3
        final = _wait_mode(api, "orders", "eventual")
        assert final["replication"] == 1 and "write_quorum" in final
        for i in range(3, 30):
            got = api.get(key_path("orders", f"k{i}"))
            assert got.status == 200 and got.json()["value"] == i, got
        assert api.get(key_path("orders", "k1")).json()["value"] == "new"
        assert api.get(key_path("orders", "k2")).status == 404  # not brought back
        context = api.get(key_path("orders", "k4")).json()["context"]
        assert api.put(key_path("orders", "k4"), {"value": 5, "context": context}).status == 200
        assert raft_copies() == []  # the Raft copies are purged
