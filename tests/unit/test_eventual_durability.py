"""An eventual keyspace's `durability` travels with each write to the replicas
(dynamo_mode/messages.py), and a replica answers an "fsync" write only after a group-commit
sync (dynamo_mode/replica_server.py); a "process" write never waits for one."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from dynamo_mode.messages import CoordinateRequest, HintRequest, StoreRequest
from dynamo_mode.replica import DynamoReplica, KeyRef
from dynamo_mode.replica_server import ReplicaServer
from dynamo_mode.siblings import Version
from kv.group_commit import GroupCommit
from kv.memory import MemoryEngine

REF = KeyRef(3, 7, "k")
VERSION = Version(("n2", 1), (), "v")


def _round_trip(request: Any) -> Any:
    return type(request).from_wire(json.loads(json.dumps(request.to_wire())))


@pytest.mark.parametrize("durability", ["process", "fsync"])
def test_durability_survives_the_wire(durability: str) -> None:
    requests = [
        StoreRequest(REF, (VERSION,), durability),
        HintRequest("n3", REF, (VERSION,), durability),
        CoordinateRequest(REF, {}, (), "v", False, 32, durability),
    ]
    for request in requests:
        assert _round_trip(request) == request
        assert ("durability" in request.to_wire()) == (durability == "fsync")


def test_an_unknown_durability_from_a_peer_is_refused() -> None:
    wire = {**StoreRequest(REF, (VERSION,)).to_wire(), "durability": "maybe"}
    with pytest.raises(ValueError, match="durability"):
        StoreRequest.from_wire(wire)


def test_only_fsync_writes_wait_for_a_sync() -> None:
    async def scenario() -> list[int]:
        syncs: list[int] = []
        commit = GroupCommit(lambda: syncs.append(1))
        server = ReplicaServer(DynamoReplica(MemoryEngine(), "n1"), commit)
        await server.store(StoreRequest(REF, (VERSION,), "process"))
        await server.coordinate(CoordinateRequest(REF, {}, (), "a", False, 32, "process"))
        counts = [commit.syncs]
        await server.store(StoreRequest(REF, (VERSION,), "fsync"))
        await server.hint(HintRequest("n3", REF, (VERSION,), "fsync"))
        await server.coordinate(CoordinateRequest(REF, {}, (), "b", False, 32, "fsync"))
        counts.append(commit.syncs)
        return counts

    assert asyncio.run(scenario()) == [0, 3]
