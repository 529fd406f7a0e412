"""Crash and size boundaries of linearizable keyspaces on real node processes
(issue: linearizable keyspaces, acceptance 2 and build item 9; DESIGN.md §3).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from kv.client import KvClient
from kv.errors import KeyNotFound, KeyspaceNotFound, Retryable, UnknownOutcome
from tests.cluster.harness import Cluster

KS = "lin"
POLL_S = 30.0


async def _create(client: KvClient, cluster: Cluster) -> None:
    """Create KS and wait until every node serves it: the node that created it answers once
    its own groups have leaders; the others learn the new metadata a little later, and until
    then answer 404 keyspace_not_found."""
    await client.create_keyspace(KS, consistency="linearizable", replication=3)
    end = time.monotonic() + POLL_S
    for node in sorted(cluster.nodes):
        while True:
            try:
                await client.request(
                    "GET", f"/v1/keyspaces/{KS}", idempotent=True, node=cluster.http(node)
                )
                break
            except KeyspaceNotFound:
                assert time.monotonic() < end, f"{KS} not visible on {node} after {POLL_S}s"
                await asyncio.sleep(0.1)


async def _replicas_agree(client: KvClient, cluster: Cluster, keys: list[str]) -> list[str]:
    differ = []
    for key in keys:
        states = await asyncio.gather(
            *(client.replica(KS, key, cluster.http(n)) for n in sorted(cluster.nodes))
        )
        if len({(repr(s["value"]), s["version"]) for s in states}) != 1:
            differ.append(key)
    return differ


async def _poll_agree(
    client: KvClient, cluster: Cluster, keys: list[str], deadline_s: float
) -> None:
    end = time.monotonic() + deadline_s
    differ = await _replicas_agree(client, cluster, keys)
    while differ and time.monotonic() < end:
        await asyncio.sleep(0.2)
        differ = await _replicas_agree(client, cluster, keys)
    assert differ == [], f"{len(differ)} keys differ between replicas, e.g. {differ[:5]}"


@pytest.mark.cluster
def test_member_killed_during_writes_catches_up_with_every_acknowledged_write(
    cluster: Cluster,
) -> None:
    asyncio.run(_crash(cluster))


async def _crash(cluster: Cluster) -> None:
    async with KvClient([cluster.http("n1"), cluster.http("n2")], timeout=4.0) as client:
        await _create(client, cluster)
        keys = [f"c{i}" for i in range(200)]
        acked: dict[str, int] = {}

        async def writer(worker: int) -> None:
            for round_ in range(6):
                for key in keys[worker::8]:
                    try:
                        reply = await client.put(KS, key, {"round": round_})
                    except (Retryable, UnknownOutcome):
                        # not acknowledged while n3 is down or its group elects: certainly not
                        # applied (503) or maybe applied (504); any other error is a bug
                        continue
                    acked[key] = max(acked.get(key, 0), reply["version"])

        async def crash() -> None:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(cluster.kill, "n3")
            await asyncio.sleep(2.0)
            await asyncio.to_thread(cluster.start, "n3")

        await asyncio.gather(*(writer(w) for w in range(8)), crash())
        assert len(acked) == len(keys)
        await _poll_agree(client, cluster, keys, deadline_s=30)
        for key, version in acked.items():  # nothing acknowledged is lost
            state = await client.replica(KS, key, cluster.http("n3"))
            assert state["version"] >= version, (key, state, version)


@pytest.mark.cluster
@pytest.mark.parametrize("size", [64 * 1024 - 64, 64 * 1024, 128 * 1024 + 7, 1024 * 1024 - 16])
def test_large_values_replicate_to_every_member(cluster: Cluster, size: int) -> None:
    asyncio.run(_large(cluster, size))


async def _large(cluster: Cluster, size: int) -> None:
    async with KvClient(cluster.addresses(), timeout=10.0) as client:
        await _create(client, cluster)
        value: Any = "v" * (size - 2)  # JSON-encoded size = size (the quotes)
        reply = await client.put(KS, f"big-{size}", value)
        assert reply["version"] == 1
        got = await client.get(KS, f"big-{size}")
        assert got["value"] == value
        await _poll_agree(client, cluster, [f"big-{size}"], deadline_s=15)


@pytest.mark.cluster
def test_whole_cluster_sigkilled_and_restarted_keeps_every_acknowledged_write(
    cluster: Cluster,
) -> None:
    """Journal replay after a restart re-applies entries at or below applied_index: the
    state machine must skip them (a CAS or delete applied twice would show here)."""
    asyncio.run(_whole_cluster(cluster))


async def _whole_cluster(cluster: Cluster) -> None:
    async with KvClient(cluster.addresses(), timeout=4.0) as client:
        await _create(client, cluster)
        keys = [f"w{i}" for i in range(60)]
        for key in keys:
            await client.put(KS, key, "first")
            await client.put(KS, key, "second", if_version=1)  # CAS: replay would fail it
        await client.delete(KS, keys[0])
    for node in sorted(cluster.nodes):
        await asyncio.to_thread(cluster.kill, node)
    for node in sorted(cluster.nodes):
        await asyncio.to_thread(cluster.ops, "start", node, "--no-wait")
    for node in sorted(cluster.nodes):
        await asyncio.to_thread(cluster.start, node)
    async with KvClient(cluster.addresses(), timeout=4.0, retries=10) as client:
        for key in keys[1:]:
            got = await client.get(KS, key)
            assert (got["value"], got["version"]) == ("second", 2), (key, got)
        with pytest.raises(KeyNotFound):  # deleted before the crash, and replay keeps it so
            await client.get(KS, keys[0])
        await _poll_agree(client, cluster, keys, deadline_s=30)
