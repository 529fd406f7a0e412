"""Linearizable keyspaces on three real node processes, checked by the linearizability checker
(issue: linearizable keyspaces, acceptance 1; DESIGN.md §3).

8 clients do read / write / cas / delete on 8 keys of one partition while the leader of that
partition's Raft group is SIGKILLed and restarted, then SIGSTOPped for longer than the
election timeout and resumed. The recorded history must be linearizable. The negative
control runs the same with `consistency=stale` reads and must be rejected — a checker
that cannot fail proves nothing.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from kv.client import KvClient
from tests.cluster.harness import Cluster
from verification.checker import check
from verification.recorder import RecorderConfig, record

KS = "lin"
PAUSE_S = 3.0  # > election_timeout_max (1.5 s)


async def _same_group_keys(client: KvClient, node: str, n: int) -> tuple[str, list[str]]:
    """n keys whose Raft group is the same (found through /v1/admin/replica)."""
    by_group: dict[str, list[str]] = {}
    for i in range(2000):
        key = f"key-{i}"
        gid = (await client.replica(KS, key, node))["group"]
        by_group.setdefault(gid, []).append(key)
        if len(by_group[gid]) == n:
            return gid, by_group[gid]
    raise AssertionError("no group with enough keys")


async def _leader(client: KvClient, cluster: Cluster, gid: str) -> str:
    """The node id leading `gid`, as any live node reports it (polls until there is one)."""
    for _ in range(100):
        for node in sorted(cluster.nodes):
            try:
                info = await client.cluster(node=cluster.http(node))
            except Exception:  # noqa: BLE001 - a killed or paused node does not answer
                continue
            leader = info["raft_groups"].get(gid, {}).get("leader")
            by_raft = {m["raft"]: m["id"] for m in info["members"]}
            if leader in by_raft:
                return by_raft[leader]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no leader for {gid}")


async def _faults(client: KvClient, cluster: Cluster, gid: str, log: list[str]) -> None:
    await asyncio.sleep(2)
    victim = await _leader(client, cluster, gid)
    log.append(f"kill {victim}")
    await asyncio.to_thread(cluster.kill, victim)
    await asyncio.sleep(2.5)
    log.append(f"start {victim}")
    await asyncio.to_thread(cluster.start, victim)
    await asyncio.sleep(1)
    victim = await _leader(client, cluster, gid)
    log.append(f"pause {victim}")
    await asyncio.to_thread(cluster.pause, victim)
    await asyncio.sleep(PAUSE_S)
    log.append(f"resume {victim}")
    await asyncio.to_thread(cluster.resume, victim)


async def _run(cluster: Cluster, stale: bool, seed: int) -> tuple[Any, list[Any], list[str]]:
    print(f"seed={seed}")
    async with KvClient(cluster.addresses(), timeout=4.0) as client:
        await client.create_keyspace(KS, consistency="linearizable", replication=3)
        gid, keys = await _same_group_keys(client, cluster.http("n1"), 8)
        cfg = RecorderConfig(KS, keys, clients=8, duration_s=14, seed=seed, stale_reads=stale)
        log: list[str] = []
        history, _ = await asyncio.gather(record(client, cfg), _faults(client, cluster, gid, log))
    return check(history, time_limit_s=60), history, log


def _summary(history: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for op in history:
        out[op.outcome] = out.get(op.outcome, 0) + 1
    return out


@pytest.mark.cluster
def test_linearizable_through_leader_kill_and_pause(cluster: Cluster) -> None:
    seed = random.SystemRandom().randrange(1 << 30)
    result, history, log = asyncio.run(_run(cluster, stale=False, seed=seed))
    print(log, _summary(history), result.stats)
    assert result.verdict == "ok", f"{result.key}: {result.message}\n{result.ops_around}"
    assert _summary(history).get("ok", 0) > 200, "the workload made too little progress"


@pytest.mark.cluster
def test_stale_reads_are_caught_by_the_checker(cluster: Cluster) -> None:
    seed = random.SystemRandom().randrange(1 << 30)
    result, history, log = asyncio.run(_run(cluster, stale=True, seed=seed))
    print(log, _summary(history), result.stats)
    assert result.verdict == "violation", "stale reads under a paused leader should be caught"
