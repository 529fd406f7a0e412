"""Key expiry (TTL) in eventual keyspaces (docs/ttl.md, dynamo_mode/expiry.py).

Pure parts take `now` as an argument; the replica and the reaper take a fake clock. The
scenarios check what the design promises: the expiry travels with the version, an expired
version is hidden from reads but still covered by their context, replicas that expire a
version independently make the same tombstone (equal Merkle hashes, no exchange needed),
and the tombstone keeps a value the expired write had overwritten from coming back.
"""

from __future__ import annotations

import asyncio

import pytest

from dynamo_mode import expiry, merkle, siblings
from dynamo_mode.coordinator import ReadResult
from dynamo_mode.frontend import render_read
from dynamo_mode.listing import partition_slice
from dynamo_mode.messages import CoordinateRequest
from dynamo_mode.replica import DynamoReplica, KeyRef, decode_stored, encode_versions
from dynamo_mode.replica_server import serve
from dynamo_mode.scan_messages import ScanBatch
from dynamo_mode.siblings import Version, make_version
from dynamo_mode.tombstones import TombstoneReaper
from kv.errors import KeyNotFound
from kv.internode import Operation, Req, Resp
from kv.keyspace import KeyspaceConfig
from kv.listing import Slice
from kv.memory import MemoryEngine
from kv.meta import Member, Metadata
from kv.storage import WriteBatch

T0 = 1_700_000_000_000  # ms
REF = KeyRef(3, 7, "k")
OLD = make_version(("n1", 1), {}, "old")  # a value without TTL
TTL = make_version(("n2", 1), {"n1": 1}, "ttl", ts=T0, expires_at=T0 + 1000)  # overwrites OLD


def replica(node: str, now: list[float]) -> DynamoReplica:
    return DynamoReplica(MemoryEngine(), node, clock=lambda: now[0])


def markers(rep: DynamoReplica) -> list[bytes]:
    return [k for k, _ in rep._engine.iterate_prefix(expiry.MARKER_PREFIX)]


# --- the version carries its expiry ---------------------------------------------------------


def test_the_expiry_travels_in_the_wire_and_stored_forms() -> None:
    assert TTL.to_wire()["expires_at"] == T0 + 1000
    assert Version.from_wire(TTL.to_wire()) == TTL
    assert decode_stored(encode_versions((TTL,))) == (TTL,)
    assert "expires_at" not in OLD.to_wire()  # old data hashes as it always did
    with pytest.raises(ValueError):
        make_version(("n1", 2), {}, None, deleted=True, expires_at=T0)
    with pytest.raises(ValueError):
        Version.from_wire({**OLD.to_wire(), "expires_at": 0})


def test_a_write_with_ttl_expires_that_long_after_the_minting_replicas_clock() -> None:
    new, merged = siblings.coordinate((), "n1", {}, "v", False, 4, ts=T0, ttl_ms=1500)
    assert new.expires_at == T0 + 1500 and merged == (new,)
    plain, _ = siblings.coordinate((), "n1", {}, "v", False, 4, ts=T0)
    assert plain.expires_at is None
    request = CoordinateRequest(REF, {}, (), "v", False, 4, ttl_ms=1500)
    assert CoordinateRequest.from_wire(request.to_wire()) == request
    with pytest.raises(ValueError, match="ttl_ms"):
        CoordinateRequest.from_wire({**request.to_wire(), "deleted": True})


# --- reads -----------------------------------------------------------------------------------


def test_an_expired_version_is_hidden_but_covered_by_the_context() -> None:
    assert expiry.visible((TTL,), T0 + 999) == (TTL,)
    assert expiry.visible((TTL,), T0 + 1000) == ()
    result = ReadResult((TTL,), siblings.join_full((TTL,)), T0 + 1000)
    with pytest.raises(KeyNotFound):
        render_read("k", result, "ctx")
    assert ("n2", 1) in result.context[1] or result.context[0].get("n2") == 1
    shown = render_read("k", ReadResult((TTL,), ({}, ()), T0), "ctx")
    assert shown == {"key": "k", "value": "ttl", "context": "ctx", "expires_at": T0 + 1000}


def test_a_live_sibling_outlives_an_expired_one() -> None:
    other = make_version(("n3", 1), {"n1": 1}, "other")
    result = ReadResult((TTL, other), ({}, ()), T0 + 5000)
    assert render_read("k", result, "c") == {"key": "k", "value": "other", "context": "c"}


def test_a_listing_skips_keys_whose_versions_all_expired() -> None:
    batch = ScanBatch((("a", (TTL,)), ("b", (OLD,))), True)
    assert partition_slice([batch], T0) == Slice(("a", "b"), None)
    assert partition_slice([batch], T0 + 1000) == Slice(("b",), None)


# --- purge: expired versions become the same tombstone everywhere ----------------------------


def test_the_tombstone_of_an_expired_version_is_a_function_of_the_version() -> None:
    dead = expiry.tombstone_of(TTL)
    assert dead == expiry.tombstone_of(Version.from_wire(TTL.to_wire()))
    assert dead.deleted and dead.dot == ("ttl:n2", 1) and dead.ts == T0 + 1000
    assert siblings.obsoletes(dead, TTL) and siblings.obsoletes(dead, OLD)
    assert siblings.reconcile((OLD, TTL, dead)) == (dead,)
    assert expiry.tombstones((OLD, TTL), T0 + 999) == ()


def test_replicas_that_expire_on_their_own_converge_with_equal_hashes() -> None:
    now = [T0 / 1000]
    a, b = replica("n1", now), replica("n2", now)
    for rep in (a, b):
        rep.store(REF, (TTL,))
        assert markers(rep) == [expiry.marker(REF.storage_key(), T0 + 1000)]
    assert a.expire(T0 + 999, 10) == 0
    assert a.expire(T0 + 1000, 10) == 1 and b.expire(T0 + 2000, 10) == 1
    assert a.fetch(REF) == b.fetch(REF) == (expiry.tombstone_of(TTL),)
    assert merkle.version_hash(a.fetch(REF)) == merkle.version_hash(b.fetch(REF))
    assert a.tree(3).root() == b.tree(3).root()
    assert markers(a) == markers(b) == []
    assert [r for r, _ in a.tombstones(1e12, 10)] == [REF]  # the reaper's to purge now


def test_an_expired_overwrite_never_lets_the_old_value_come_back() -> None:
    """A replica that missed the TTL write still holds OLD; the tombstone supersedes it."""
    now = [0.0]
    behind, ahead = replica("n1", now), replica("n2", now)
    behind.store(REF, (OLD,))
    ahead.store(REF, (OLD,))
    ahead.store(REF, (TTL,))
    ahead.expire(T0 + 1000, 10)
    merged = behind.store(REF, ahead.fetch(REF))  # anti-entropy or read repair
    assert merged == (expiry.tombstone_of(TTL),) and expiry.visible(merged, T0) == ()


def test_markers_follow_the_earliest_live_expiry() -> None:
    now = [T0 / 1000]
    rep = replica("n1", now)
    new, _ = rep.coordinate(REF, {}, "a", False, 8, ttl_ms=500)
    assert markers(rep) == [expiry.marker(REF.storage_key(), T0 + 500)]
    rep.coordinate(REF, {}, "b", False, 8, ttl_ms=100)  # a sibling expiring sooner
    assert markers(rep) == [expiry.marker(REF.storage_key(), T0 + 100)]
    rep.coordinate(REF, siblings.join_full(rep.fetch(REF))[0], "c", False, 8)  # resolves both
    assert markers(rep) == []
    rep.store(KeyRef(3, 7, "z"), (TTL,))
    assert rep.drop(3, 7, 10) == 2 and markers(rep) == []


def test_a_stray_marker_is_dropped_rather_than_met_at_every_sweep() -> None:
    rep = replica("n1", [0.0])
    rep.store(REF, (OLD,))
    batch = WriteBatch()
    batch.put(expiry.marker(REF.storage_key(), 5), b"")  # names no expiring version
    rep._engine.write(batch)
    assert rep.expire(T0, 10) == 1 and markers(rep) == [] and rep.fetch(REF) == (OLD,)


# --- the reaper expires first, then purges under the tombstone rules -------------------------


class Local:
    def __init__(self, replicas: dict[str, DynamoReplica]) -> None:
        self.replicas = replicas

    async def call(self, node: str, op: Operation[Req, Resp], request: Req, timeout: float) -> Resp:
        return await serve(self.replicas[node]).call_local(op, request)


def test_the_reaper_turns_expired_versions_into_tombstones_and_purges_them() -> None:
    names = ("n1", "n2", "n3")
    ks = KeyspaceConfig("ks", "eventual", 3, 2, 2, uid=7)
    members = tuple(Member(n, f"h:{i}", f"h:{i + 10}") for i, n in enumerate(names))
    md = Metadata(epoch=1, members=members, partitions=4, vnodes=4, keyspaces=(ks,))
    now = [(T0 + 5000) / 1000]
    replicas = {n: replica(n, now) for n in names}
    ref = KeyRef(0, 7, "k")
    for rep in replicas.values():
        rep.store(ref, (TTL,))
    reapers = [
        TombstoneReaper(rep, Local(replicas), lambda: md, lambda: now[0], grace=1.0)
        for rep in replicas.values()
    ]
    for reaper in reapers:  # each replica expires on its own clock
        asyncio.run(reaper.sweep_once())
    assert sum(r.expired for r in reapers) == 3 and sum(r.purged for r in reapers) == 0
    now[0] += 2.0  # past the grace
    asyncio.run(reapers[0].sweep_once())
    assert all(rep.fetch(ref) == () for rep in replicas.values())
