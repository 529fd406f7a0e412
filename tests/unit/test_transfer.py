"""Partition transfers (dynamo_mode/transfer.py) over MemoryEngine replicas and a transport
that calls the source's replica server directly: progress counts keys as batches arrive (so
`/v1/cluster` shows a copy under way), the copy keeps under `keys_per_s`, and verification
finishes under a steady write load (writes in flight are not missing versions) yet repairs
a version the coordinator never delivered."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from dynamo_mode.replica import DynamoReplica, KeyRef
from dynamo_mode.replica_server import serve
from dynamo_mode.scan_messages import PART_DIGEST, PART_SCAN
from dynamo_mode.siblings import make_version
from dynamo_mode.transfer import Transfers, pause
from kv.internode import Operation
from kv.memory import MemoryEngine
from kv.meta import Metadata, MoveKey
from tests.unit.test_meta_membership import ADD4, commit, metadata


def moving_metadata() -> Metadata:
    """n1..n3 with one eventual keyspace, and a committed plan adding n4."""
    md, outcome = commit(metadata(), ADD4)
    assert outcome["status"] == "committed"
    assert isinstance(md, Metadata)
    return md


class Direct:
    """A transport to the source's replica; records progress at each copy call."""

    def __init__(self, source: DynamoReplica) -> None:
        self.table = serve(source)
        self.transfers: Transfers | None = None
        self.copied_at_scan: list[int] = []
        self.before_digest: Callable[[], None] = lambda: None  # a write landing on the source

    async def call(self, node: str, op: Operation[Any, Any], request: Any, timeout: float) -> Any:
        if op is PART_SCAN and self.transfers is not None:
            self.copied_at_scan += [p.keys_copied for p in self.transfers.progress.values()]
        if op is PART_DIGEST:
            self.before_digest()
        return await self.table.call_local(op, request)


@dataclass
class Rig:
    transfers: Transfers
    transport: Direct
    md: Metadata
    key: MoveKey  # the pending move of the partition holding the keys
    uid: int
    source: DynamoReplica | None = None
    proposed: list[dict[str, Any]] = field(default_factory=list)
    slept: list[float] = field(default_factory=list)
    in_flight: list[Callable[[], None]] = field(default_factory=list)  # land during a sleep

    def run(self) -> None:
        asyncio.run(self.transfers._transfer(self.md, self.key))


def rig(keys: int, batch: int, keys_per_s: float = 0.0) -> Rig:
    """n4 pulls one partition holding `keys` keys from its first current owner."""
    md = moving_metadata()
    assert md.transition is not None
    key = next(k for k in sorted(md.transition.pending) if "n4" in md.owners(*k)[1])
    uid = md.keyspaces[0].uid
    source = DynamoReplica(MemoryEngine(), md.owners(*key)[0][0])
    for i in range(keys):
        source.store(KeyRef(key[2], uid, f"k{i:03}"), (make_version(("n1", i + 1), {}, i),))

    async def propose(change: dict[str, Any]) -> dict[str, Any]:
        r.proposed.append(change)
        return {"status": "ready"}

    async def sleep(seconds: float) -> None:
        r.slept.append(seconds)
        while r.in_flight:
            r.in_flight.pop(0)()

    transport = Direct(source)
    transfers = Transfers(
        DynamoReplica(MemoryEngine(), "n4"),
        transport,
        "n4",
        lambda: md,
        propose,
        batch=batch,
        keys_per_s=keys_per_s,
        sleep=sleep,
    )
    transport.transfers = transfers
    r = Rig(transfers, transport, md, key, uid)
    r.source = source
    return r


def write_on_source(r: Rig, name: str, deliver: bool) -> None:
    """A coordinator's write: stored on the source now; its copy to the incoming owner is in
    flight (lands at the next sleep) or, with `deliver` False, lost."""
    ref = KeyRef(r.key[2], r.uid, name)
    version = (make_version(("n2", 1), {}, name),)
    assert r.source is not None
    r.source.store(ref, version)

    def land() -> None:
        r.transfers.replica.store(ref, version)

    if deliver:
        r.in_flight.append(land)


def test_progress_counts_keys_as_each_batch_arrives() -> None:
    r = rig(keys=10, batch=3)
    r.run()
    # one keyspace: the count grew between batches, not only once the keyspace was done
    assert r.transport.copied_at_scan == [0, 3, 6, 9]
    prog = r.transfers.progress[r.key]
    assert (prog.keys_copied, prog.state) == (10, "reported")
    assert [c["partition"] for c in r.proposed] == [r.key[2]] and r.slept == []
    held = [r.transfers.replica.fetch(KeyRef(r.key[2], r.uid, f"k{i:03}")) for i in range(10)]
    assert all(held)


def test_progress_counts_the_bytes_copied_as_the_source_stores_them() -> None:
    """What the plan's sizes count for the partition (kv/sizes.py: storage key + value);
    the copy stored here is the source's, record for record."""
    r = rig(keys=10, batch=3)
    r.run()
    prog = r.transfers.progress[r.key]
    stored = sum(len(k) + len(v) for k, v in r.transfers.replica._engine.iterate_prefix(b"e"))
    assert prog.bytes_copied == stored > 0


def test_the_copy_waits_after_each_batch_to_keep_under_the_rate() -> None:
    r = rig(keys=10, batch=4, keys_per_s=20.0)
    r.run()
    assert r.slept == pytest.approx([0.2, 0.2, 0.1])  # 4 + 4 + 2 keys at 20 keys/s
    assert len(r.proposed) == 1


@pytest.mark.parametrize(
    ("keys", "rate", "seconds"), [(4, 0.0, 0.0), (0, 10.0, 0.0), (5, 10.0, 0.5), (256, 256.0, 1.0)]
)
def test_pause(keys: int, rate: float, seconds: float) -> None:
    assert pause(keys, rate) == pytest.approx(seconds)


def test_verification_finishes_under_a_steady_write_load() -> None:
    """Every digest scan finds a fresh write on the source whose copy is still in flight
    (a check that counted those as missing never finished: seen in CI)."""
    r = rig(keys=10, batch=4)
    writes = iter(range(1000))
    r.transport.before_digest = lambda: write_on_source(r, f"w{next(writes)}", deliver=True)
    r.run()
    prog = r.transfers.progress[r.key]
    assert (prog.state, prog.keys_repaired) == ("reported", 0)
    assert r.slept == [r.transfers.settle_s] and len(r.proposed) == 1


def test_a_write_the_coordinator_never_delivered_is_repaired() -> None:
    r = rig(keys=10, batch=4)
    lost = ["lost"]

    def lose_one() -> None:
        while lost:
            write_on_source(r, lost.pop(), deliver=False)

    r.transport.before_digest = lose_one
    r.run()
    prog = r.transfers.progress[r.key]
    assert (prog.state, prog.keys_repaired) == ("reported", 1)
    assert r.transfers.replica.fetch(KeyRef(r.key[2], r.uid, "lost"))
