"""Sloppy quorum and hinted handoff on real nodes (issue 5, item 2; Dynamo §4.6).

Four nodes, N=3: every partition has a fallback, so when one replica is SIGKILLed the
write that was its copy goes to the next alive node of the ring walk as a hint. W=2 (and
W=3, counting the hint) writes keep succeeding; pw=3 is refused with 503
quorum_unavailable once the coordinator sees the replica down. After the replica restarts,
every write it missed is in its replica-local state and no hint is left anywhere.

A node holding hints is SIGKILLed and restarted while the replica is still down: its hints
are durable (LevelDB) and still delivered afterwards.

The hint backlog is read from `/v1/cluster` ("hinted_handoff") when the node exposes it;
the replica-local state is checked in any case. Anti-entropy runs too (it is the backstop,
docs/hinted_handoff.md), so convergence alone does not prove the hints were delivered: the
backlog reaching zero does.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from kv.client import KvClient
from kv.errors import KvError, QuorumUnavailable
from tests.cluster.harness import Cluster, hint_backlog, until, wait_until

KS = "hh"
VICTIM = "n3"
HOLDER = "n4"  # a fallback for every partition n3 replicates (4 nodes, N=3)
DEADLINE_S = 60.0


def poll(check: Callable[[], Awaitable[Any]], what: str) -> Awaitable[Any]:
    """Poll `check` (tests/cluster/harness.py `until`) for at most DEADLINE_S."""
    return until(check, DEADLINE_S, what, interval=0.2)


@pytest.fixture
def cluster4() -> Iterator[Cluster]:
    c = Cluster(n=4)
    try:
        yield c.up()
    finally:
        c.down()


@pytest.mark.cluster
def test_writes_missed_by_a_killed_replica_are_handed_off(cluster4: Cluster) -> None:
    asyncio.run(_scenario(cluster4))


async def _scenario(cluster: Cluster) -> None:
    others = [cluster.http(n) for n in sorted(cluster.nodes) if n != VICTIM]
    victim = cluster.http(VICTIM)
    async with KvClient(others) as client, KvClient(others[:1], retries=0) as strict:
        await client.create_keyspace(
            KS, consistency="eventual", replication=3, read_quorum=2, write_quorum=2
        )
        # a node that does not vote in the meta group reads the new metadata by polling
        for address in [*others, victim]:
            await asyncio.to_thread(_wait_keyspace, address)
        owned = await _keys_replicated_on(client, others[0], VICTIM, 300)
        missed_w2, missed_w3, probes = owned[:80], owned[80:100], iter(owned[100:])

        await asyncio.to_thread(cluster.kill, VICTIM)
        await asyncio.gather(*(client.put(KS, k, f"v-{k}", w=2) for k in missed_w2))
        await asyncio.gather(*(client.put(KS, k, f"v-{k}", w=3) for k in missed_w3))
        await poll(lambda: _refused_with_pw3(strict, probes), "pw=3 refused with 503")
        # a w=2 write can be answered before its hint is stored (the coordinator follows the
        # send to the end after replying), so the backlog is polled, not read once
        expected = len(missed_w2) + len(missed_w3)
        await poll(lambda: _backlog_at_least(client, others, expected), f"{expected} hints")
        print(f"hint backlog while {VICTIM} is down: {await hint_backlog(client, others)}")
        await _restart_a_hint_holder(cluster, client)

        await asyncio.to_thread(cluster.start, VICTIM)
        missed = missed_w2 + missed_w3
        started = time.monotonic()
        await poll(lambda: _all_present(client, victim, missed), f"{VICTIM} has every write")
        print(f"{VICTIM} caught up in {time.monotonic() - started:.1f}s")
        await poll(lambda: _backlog_is_zero(client, [*others, victim]), "hint backlog zero")
        for node in others:
            print(node, (await client.cluster(node=node)).get("hinted_handoff"))


async def _restart_a_hint_holder(cluster: Cluster, client: KvClient) -> None:
    """Hints are in the holder's LevelDB: a SIGKILL and restart keeps every one of them."""
    holder = cluster.http(HOLDER)
    before = await hint_backlog(client, [holder])
    await asyncio.to_thread(cluster.kill, HOLDER)
    await asyncio.to_thread(cluster.start, HOLDER)
    after = await hint_backlog(client, [holder])
    print(f"hints on {HOLDER} before and after its restart: {before}, {after}")
    assert before == after


async def _keys_replicated_on(client: KvClient, via: str, node: str, count: int) -> list[str]:
    keys: list[str] = []
    i = 0
    while len(keys) < count:
        state = await client.replica(KS, f"k{i}", via)
        if node in state["replicas"]:
            keys.append(f"k{i}")
        i += 1
    return keys


async def _refused_with_pw3(strict: KvClient, probes: Iterator[str]) -> bool:
    """Before the detector marks the victim down, pw=3 fails after the mint (504), so each
    attempt uses a fresh key; once it is down, the write is refused before anything is
    written."""
    key = next(probes, None)
    assert key is not None, "ran out of probe keys before the victim was seen down"
    try:
        await strict.put(KS, key, "pw", pw=3)
    except QuorumUnavailable:
        return True
    except KvError:
        return False
    raise AssertionError("pw=3 succeeded with one of three primaries killed")


async def _all_present(client: KvClient, node: str, keys: list[str]) -> bool:
    for key in keys:
        state = await client.replica(KS, key, node)
        if f"v-{key}" not in [v["value"] for v in state["versions"]]:
            return False
    return True


async def _backlog_at_least(client: KvClient, nodes: list[str], count: int) -> bool:
    return await hint_backlog(client, nodes) >= count


async def _backlog_is_zero(client: KvClient, nodes: list[str]) -> bool:
    return await hint_backlog(client, nodes) == 0


def _wait_keyspace(address: str) -> None:
    """Poll (deadline) until `address` knows the keyspace."""

    def known() -> bool:
        try:
            with urllib.request.urlopen(f"http://{address}/v1/keyspaces/{KS}", timeout=5) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    wait_until(known, 30.0, f"{address} to know keyspace {KS}")
