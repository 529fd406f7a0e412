"""Anti-entropy on real nodes (issue: eventual keyspaces under failure, item 3; Dynamo §4.7).

A replica that missed writes while it was down gets them from Merkle exchanges alone:
no client read touches those keys, so read repair cannot be what fixes them, and with three
nodes and N=3 there is no fallback to hold a hint. The replica is confirmed dead before the
writes, so every missed key it ends up holding came from anti-entropy - whether that happened
before or after the first look (exchanges start as soon as it is back; how many it has
caught up with by then is not asserted).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from kv.client import KvClient
from tests.cluster.harness import Cluster, alive, wait_until

KS = "ev"
CONVERGE_DEADLINE_S = 120.0  # a poll, not a bound


@pytest.mark.cluster
def test_replica_that_missed_writes_converges_without_reads(cluster: Cluster) -> None:
    asyncio.run(_converges(cluster))


async def _converges(cluster: Cluster) -> None:
    n1, n2, n3 = (cluster.http(n) for n in ("n1", "n2", "n3"))
    async with KvClient([n1, n2]) as client:
        await client.create_keyspace(KS, consistency="eventual", replication=3, write_quorum=2)
        await asyncio.gather(*(client.put(KS, f"old-{i}", i) for i in range(300)))
        pid = cluster.nodes["n3"]["pid"]
        await asyncio.to_thread(cluster.kill, "n3")
        await asyncio.to_thread(wait_until, lambda: not alive(pid), 10.0, "n3 to be dead")
        missed = [f"new-{i}" for i in range(100)]
        await asyncio.gather(*(client.put(KS, k, k, w=2) for k in missed))
        await asyncio.to_thread(cluster.start, "n3")
        before = [k for k in missed if not (await client.replica(KS, k, n3))["versions"]]
        print(f"{len(before)} of {len(missed)} missed keys absent on n3 after restart")
        started = time.monotonic()
        remaining = before
        while remaining and time.monotonic() - started < CONVERGE_DEADLINE_S:
            await asyncio.sleep(0.5)
            remaining = [k for k in remaining if not (await client.replica(KS, k, n3))["versions"]]
        assert remaining == [], f"{len(remaining)} keys never reached n3 by anti-entropy"
        print(f"converged in {time.monotonic() - started:.1f}s")
        info = await client.cluster(node=n3)
        print("n3 anti-entropy:", info["anti_entropy"])
