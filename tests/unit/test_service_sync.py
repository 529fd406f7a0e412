"""A node whose metadata lags answers for a keyspace only after a metadata read barrier
(kv/service.py `Service.current`): 404 only if the keyspace is still unknown after it, 503
(retryable, naming the keyspace) if no barrier can be had, and no barrier for a malformed
name. The first request after a start takes a barrier even for a keyspace the node knows
(its metadata may predate a plan); later ones for known keyspaces take none."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from kv.errors import InvalidRequest, KeyspaceNotFound, NoLeader, NotReady
from kv.keyspace import parse_keyspace
from kv.meta import Member, Metadata
from kv.service import Service

MEMBERS = (Member("n1", "127.0.0.1:1", "127.0.0.1:2"),)
BASE = Metadata(epoch=1, members=MEMBERS, partitions=8, vnodes=4)
KS = replace(parse_keyspace("ks", {"consistency": "eventual", "replication": 1}, 1), uid=2)
WITH_KS = replace(BASE, epoch=2, keyspaces=(KS,))


class LaggingMeta:
    """Holds `md`; a sync installs `after_sync` (what the meta group had committed) or
    raises `fails`."""

    def __init__(self, md: Metadata, after_sync: Metadata, fails: Exception | None = None):
        self.metadata, self.after_sync, self.fails = md, after_sync, fails
        self.syncs = 0

    async def change(self, change: dict[str, Any], timeout: float) -> dict[str, Any]:
        raise AssertionError("no change in these tests")

    async def sync(self, timeout: float) -> None:
        self.syncs += 1
        if self.fails is not None:
            raise self.fails
        self.metadata = self.after_sync


def current(meta: LaggingMeta, name: str) -> Metadata:
    return asyncio.run(Service(meta, {}, dict).current(name, 1.0))


def test_a_keyspace_missing_here_is_found_after_the_barrier() -> None:
    meta = LaggingMeta(BASE, WITH_KS)
    assert current(meta, "ks").keyspace("ks") == KS and meta.syncs == 1


def test_a_known_keyspace_needs_a_barrier_only_once_after_the_start() -> None:
    meta = LaggingMeta(WITH_KS, WITH_KS)
    service = Service(meta, {}, dict)
    for _ in range(3):
        assert asyncio.run(service.current("ks", 1.0)) is WITH_KS
    assert meta.syncs == 1


def test_the_first_request_after_a_start_routes_by_the_confirmed_metadata() -> None:
    """A restarted node's journal applied only up to a stale commit index: the keyspace is
    there, but a later epoch (e.g. a plan moving its partitions) is not yet."""
    later = replace(WITH_KS, epoch=9)
    meta = LaggingMeta(WITH_KS, later)
    assert current(meta, "ks") is later and meta.syncs == 1


def test_an_unconfirmed_known_keyspace_without_a_barrier_is_a_retryable_503() -> None:
    meta = LaggingMeta(WITH_KS, WITH_KS, fails=NoLeader("no meta leader", retry_after=0.7))
    with pytest.raises(NotReady) as caught:
        current(meta, "ks")
    assert "may be stale" in caught.value.message and caught.value.retry_after == 0.7


def test_a_malformed_name_is_400_without_a_barrier() -> None:
    meta = LaggingMeta(BASE, WITH_KS)
    with pytest.raises(InvalidRequest):
        current(meta, "bad name!")
    assert meta.syncs == 0


def test_still_missing_after_the_barrier_is_404() -> None:
    meta = LaggingMeta(BASE, BASE)
    with pytest.raises(KeyspaceNotFound):
        asyncio.run(Service(meta, {}, dict).describe_keyspace("ks", 1.0))
    assert meta.syncs == 1


def test_no_barrier_is_a_retryable_503_naming_the_keyspace() -> None:
    meta = LaggingMeta(BASE, WITH_KS, fails=NoLeader("no meta leader", retry_after=0.7))
    with pytest.raises(NotReady) as caught:
        current(meta, "ks")
    assert "'ks'" in caught.value.message and "no meta leader" in caught.value.message
    assert caught.value.retry_after == 0.7


def test_inspecting_the_local_replica_needs_no_barrier_for_a_known_keyspace() -> None:
    """A removed node cannot confirm its metadata, yet `/v1/admin/replica` must still show
    what it holds (seen in CI: test_transfer's removed n4 answered 503)."""
    meta = LaggingMeta(WITH_KS, WITH_KS, fails=NoLeader("removed", retry_after=0.7))
    service = Service(meta, {}, dict)
    assert asyncio.run(service.current("ks", 1.0, routes=False)) is WITH_KS
    assert meta.syncs == 0
