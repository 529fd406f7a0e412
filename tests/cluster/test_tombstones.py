"""Deletes that stay deleted (issue: eventual keyspaces under failure, item 4; DESIGN.md §4).

A key is deleted while one replica is down holding the old value. The tombstone must not
be purged while that replica cannot confirm it, and the old value must not come back when
the replica returns; once every replica holds the tombstone it is purged everywhere.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from kv.client import KvClient
from kv.errors import KeyNotFound
from tests.cluster.harness import Cluster

KS = "ev"
GRACE_S = 1.0


@pytest.fixture
def fast_gc_cluster() -> object:
    c = Cluster(n=3, settings={"tombstone_grace_s": GRACE_S, "tombstone_gc_interval_s": 0.3})
    try:
        yield c.up()
    finally:
        c.down()


async def _versions(client: KvClient, node: str, key: str) -> list[object]:
    return [
        v["value"] if not v["deleted"] else "<tombstone>"
        for v in (await client.replica(KS, key, node))["versions"]
    ]


@pytest.mark.cluster
def test_deleted_while_a_replica_was_down_stays_deleted(fast_gc_cluster: Cluster) -> None:
    asyncio.run(_scenario(fast_gc_cluster))


async def _scenario(cluster: Cluster) -> None:
    n1, n2, n3 = (cluster.http(n) for n in ("n1", "n2", "n3"))
    async with KvClient([n1, n2]) as client:
        await client.create_keyspace(KS, consistency="eventual", replication=3, write_quorum=2)
        await client.put(KS, "k", "old", w=3)
        await asyncio.to_thread(cluster.kill, "n3")
        await client.delete(KS, "k", w=2)
        await asyncio.sleep(GRACE_S * 3)  # past the grace: only n3's silence blocks the purge
        assert await _versions(client, n1, "k") == ["<tombstone>"], "purged without n3"
        await asyncio.to_thread(cluster.start, "n3")
        deadline = time.monotonic() + 40
        states: list[list[object]] = []
        while time.monotonic() < deadline:
            with pytest.raises(KeyNotFound):  # never resurrected, at any moment
                await client.get(KS, "k", r=2)
            states = [await _versions(client, n, "k") for n in (n1, n2, n3)]
            if states == [[], [], []]:
                break
            await asyncio.sleep(0.3)
        assert states == [[], [], []], f"tombstone not purged everywhere: {states}"
        with pytest.raises(KeyNotFound):
            await client.get(KS, "k", r=3)
