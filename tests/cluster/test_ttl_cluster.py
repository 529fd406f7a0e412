"""A linearizable TTL write under leader changes, on three real node processes (issue 13
item 5 acceptance; docs/ttl.md).

The key's Raft group leader stamps the write's expiry and is SIGKILLed right after. The
new leader must serve the key with the same `expires_at` — or, only once that time has
passed, as absent — and expire it (its own `expire` command, through the log) so that it
is absent on every live node. Then the first leader comes back and the second is killed:
under the third leadership the key must still be absent (the expiry horizon never moves
back), while a key written without TTL in the same group keeps its value throughout.

Every wait is a poll with a deadline; the only time assertions are that a key is absent
only after its `expires_at` (the nodes share this machine's clock) and absent everywhere
before a deadline. The fixture stops every process, also on failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest

from kv.client import KvClient
from kv.errors import KeyNotFound
from tests.cluster.harness import Cluster, until

KS = "lin_ttl"
TTL_S = 5
DEADLINE_S = 90.0


def poll(check: Callable[[], Awaitable[Any]], what: str) -> Awaitable[Any]:
    """Poll `check` (tests/cluster/harness.py `until`) for at most DEADLINE_S."""
    return until(check, DEADLINE_S, what)


async def read(client: KvClient, node: str, key: str) -> tuple[dict[str, Any] | None, float]:
    """The key's reply through `node` (None: absent) and the time the answer arrived."""
    try:
        reply = await client.get(KS, key, node=node)
    except KeyNotFound:
        return None, time.time()
    return reply, time.time()


async def same_group(client: KvClient, node: str) -> tuple[str, str, str]:
    """Two fresh keys of one Raft group, and the group (through /v1/admin/replica)."""
    seen: dict[str, str] = {}
    for i in range(2000):
        key = f"ttl-{i}"
        gid = (await client.replica(KS, key, node))["group"]
        if gid in seen:
            return gid, seen[gid], key
        seen[gid] = key
    raise AssertionError("no two keys in one group")


async def leader_of(client: KvClient, cluster: Cluster, gid: str, live: list[str]) -> str:
    """The member leading `gid` as a live node reports it, once that is a live node."""

    async def found() -> str | None:
        for node in live:
            info = await client.cluster(node=cluster.http(node))
            by_raft = {m["raft"]: m["id"] for m in info["members"]}
            leader = by_raft.get(info["raft_groups"].get(gid, {}).get("leader"))
            if leader in live:
                return str(leader)
        return None

    leader: str = await poll(found, f"a live leader of {gid} among {live}")
    return leader


async def absent_everywhere(
    client: KvClient, cluster: Cluster, live: list[str], key: str, expires_at: int
) -> None:
    """Poll until `key` reads as absent through every live node; each absence is seen only
    after `expires_at` (no node expires a key early: it is at least the write's TTL after
    the write was sent, and the nodes share this machine's clock)."""

    async def absent() -> bool:
        for node in live:
            reply, at = await read(client, cluster.http(node), key)
            if reply is not None:
                return False
            assert at * 1000 >= expires_at, f"{key} absent on {node} before its expiry"
        return True

    await poll(absent, f"{key} absent on {live}")


async def scenario(cluster: Cluster) -> None:
    nodes = sorted(cluster.nodes)
    async with KvClient(cluster.addresses(), timeout=4.0) as client:
        await client.create_keyspace(KS, consistency="linearizable", replication=3)
        gid, key, plain = await same_group(client, cluster.http(nodes[0]))
        first = await leader_of(client, cluster, gid, nodes)
        at_first = cluster.http(first)
        await poll(lambda: client.put(KS, plain, "kept", node=at_first), "a plain write")
        sent = time.time()
        await client.put(KS, key, "brief", ttl_s=TTL_S, node=at_first, request_id="ttl-1")
        earliest = int(sent * 1000) + TTL_S * 1000  # the leader stamped it after `sent`
        written, _ = await read(client, at_first, key)
        stamped = None if written is None else written["expires_at"]
        assert stamped is None or stamped >= earliest, (stamped, earliest)
        print(f"group {gid}: {key} expires at {stamped}, leader {first} killed")

        await asyncio.to_thread(cluster.kill, first)
        live = [n for n in nodes if n != first]
        second = await leader_of(client, cluster, gid, live)
        reply, at = await poll(lambda: read(client, cluster.http(second), key), "a read")
        print(f"{second} leads now; {key} {'present' if reply else 'already expired'} there")
        if reply is None:  # only possible once its expiry has passed
            assert at * 1000 >= (stamped or earliest), "expired early under the new leader"
        else:
            assert reply["value"] == "brief" and reply["expires_at"] >= earliest, reply
            assert stamped is None or reply["expires_at"] == stamped, (reply, stamped)
            stamped = reply["expires_at"]
        await absent_everywhere(client, cluster, live, key, stamped or earliest)

        await asyncio.to_thread(cluster.start, first)
        await asyncio.to_thread(cluster.kill, second)
        live = [n for n in nodes if n != second]
        third = await leader_of(client, cluster, gid, live)
        print(f"leader {second} killed, {third} leads now")
        for node in live:
            reply, _ = await poll(partial(read, client, cluster.http(node), key), "a read")
            assert reply is None, f"{key} came back on {node}: {reply}"
            kept, _ = await read(client, cluster.http(node), plain)
            assert kept is not None and kept["value"] == "kept" and "expires_at" not in kept


@pytest.mark.cluster
def test_a_linearizable_ttl_write_expires_on_schedule_across_leader_changes(
    cluster: Cluster,
) -> None:
    asyncio.run(scenario(cluster))
