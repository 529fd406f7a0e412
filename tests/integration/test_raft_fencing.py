"""Fault isolation in the Raft driver (issue 11 item 4, docs/raft.md "Fencing"): a group
whose storage raises is stopped on its node — its requests get 503 (or 504 for the one in
flight), /v1/health says `degraded` naming it, /v1/cluster marks it — while every other
group of the node keeps serving. The failing engine is injected into one group's state
machine of a real node (real LevelDB, real pysyncobj groups)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kv import hashing
from kv.leveldb import LevelDBEngine
from kv.storage import StorageError
from raft_groups.manager import LinearizableMachine
from tests.integration.conftest import (
    Api,
    NodeThread,
    api_of,
    create_keyspace,
    key_path,
    linearizable_keyspace,
    running,
    single_node_config,
)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[NodeThread, Api]]:
    with running([single_node_config(tmp_path / "n1")]) as nodes:
        runner = nodes["n1"]
        yield runner, api_of(runner)


def _partition(runner: NodeThread, ks: str, key: str) -> int:
    ring = runner.node.meta.metadata.ring()
    return int(ring.partition_of(hashing.token(ks, key)))


def test_a_group_whose_storage_fails_is_fenced_and_the_others_serve(
    node: tuple[NodeThread, Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, api = node
    ks = linearizable_keyspace(api)
    broken = _partition(runner, ks, "victim")
    gid = f"p{broken}r1"
    others = [k for k in (f"k{i}" for i in range(200)) if _partition(runner, ks, k) != broken]
    apply = LinearizableMachine.apply

    def failing(self: LinearizableMachine, index: int, command: bytes) -> Any:
        if self._group == (1 << 16 | broken):
            raise StorageError("injected: the disk under this group failed")
        return apply(self, index, command)

    monkeypatch.setattr(LinearizableMachine, "apply", failing)
    first = api.put(key_path(ks, "victim"), {"value": 1}, timeout=30)
    assert first.status in (503, 504), first  # in flight when the group stopped: unknown
    health = api.get("/v1/health").json()
    assert health["status"] == "degraded", health
    assert "injected" in health["fenced_raft_groups"][gid]
    assert list(health["fenced_raft_groups"]) == [gid]
    again = api.put(key_path(ks, "victim"), {"value": 2})
    assert again.status == 503 and again.json()["error"]["code"] == "not_ready", again
    assert gid in again.json()["error"]["message"]
    read = api.get(key_path(ks, "victim"))
    assert read.status == 503, read
    for key in others[:20]:  # every other group of the node keeps serving
        assert api.put(key_path(ks, key), {"value": key}).status == 200
        assert api.get(key_path(ks, key)).json()["value"] == key
    groups = api.get("/v1/cluster").json()["raft_groups"]
    assert "injected" in groups[gid]["fenced"]
    assert not any("fenced" in g for name, g in groups.items() if name != gid)


def test_an_eventual_write_on_a_failing_disk_is_a_loud_504_not_a_500(
    node: tuple[NodeThread, Api], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _, api = node
    create_keyspace(api, "ev", {"consistency": "eventual", "replication": 1})

    def failing(self: LevelDBEngine, batch: Any, sync: bool = False) -> None:
        raise StorageError("injected: I/O error", path="/dev/broken")

    monkeypatch.setattr(LevelDBEngine, "write", failing)
    reply = api.put(key_path("ev", "k"), {"value": 1})
    assert reply.status == 504, reply
    assert reply.json()["error"]["code"] == "storage_failed"
    assert any("storage failed" in r.getMessage() for r in caplog.records)
