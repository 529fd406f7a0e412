"""Partition transfers of eventual keyspaces while a membership plan runs (DESIGN.md §2,
Riak's ownership handoff).

Pull model: every round, this node looks at the plan in flight; for each pending
(eventual, replication n, partition) it is an incoming owner of, it copies the keys of every
eventual keyspace with replication n in that partition from a current owner, in key-ordered
batches (`part_scan`), merging each batch into its replica (a CRDT join: order and repeats
do not matter). Writes made meanwhile reach it directly: the coordinator sends every write
of a moving partition to its incoming owners too (kv/routing.py `Route.incoming`).

Completeness before the flip: a verification pass reads the source's version hashes of the
same keys (`part_digest`, the leaves a Merkle comparison would reach) and, for every key
whose hash differs from the local one, fetches the source's versions. A write in flight
differs too (the source stored it, its copy to this node is still on the way), so the
fetched versions are merged only after a grace (`settle_s`, once per pass) in which writes
in flight land: a version fetched at time t and still missing here at t + grace was not
delivered by the coordinator, and its merge counts as a repair. The transfer is complete
when a whole pass repairs nothing: every version the source held, as of each key's fetch,
is then held here — under any write rate (a check that counted in-flight writes as
missing never finished under a steady write load: seen in CI). Only then does this node
report `move_done` to the meta group; the partition flips to its new owners once every
incoming owner has (kv/meta_machine.py).

Progress counts the keys copied and their bytes (as the source stores them: what the plan's
expected bytes count, kv/sizes.py), and the keys verification merged in.

A transfer that fails (source unreachable, timeout) is retried from the start next round,
with the next current owner as source; progress and the last error are kept for
`/v1/cluster` ("transfers").

Throttle: with `keys_per_s` set (node setting `transfer_keys_per_s`), the copy waits after
each batch so that it pulls at most that many keys a second; verification passes are not
throttled (they move hashes, and only the few keys that differ).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from dynamo_mode import merkle
from dynamo_mode.messages import FETCH, KeyRequest
from dynamo_mode.replica import DynamoReplica, KeyRef, encode_versions
from dynamo_mode.scan_messages import PART_DIGEST, PART_SCAN, ScanRequest
from dynamo_mode.siblings import Version
from kv.errors import KvError
from kv.meta import Metadata, MoveKey
from kv.periodic import Periodic
from kv.transport import Transport

log = logging.getLogger(__name__)

Propose = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_VERIFY_PASSES = 8


@dataclass
class Progress:
    source: str = ""
    keys_copied: int = 0
    bytes_copied: int = 0  # of the keys copied, as the source stores them (key + versions)
    keys_repaired: int = 0  # merged in by verification passes
    state: str = "copying"  # copying | verifying | reported | failed
    error: str = ""


@dataclass
class Transfers:
    replica: DynamoReplica
    transport: Transport
    self_id: str
    metadata: Callable[[], Metadata]
    propose: Propose  # a change to the meta group (kv/meta_machine.py)
    interval: float = 0.5
    batch: int = 256
    timeout: float = 5.0
    settle_s: float = 0.5  # a verification pass's grace for writes in flight (above)
    keys_per_s: float = 0.0  # copy at most this many keys a second (0: no limit)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    progress: dict[MoveKey, Progress] = field(default_factory=dict)
    bytes_moved: int = 0  # bytes copied by every transfer since start (docs/metrics.md)
    _loop: Periodic | None = None

    def start(self) -> None:
        self._loop = Periodic("partition transfers", self.interval, self.round_once)
        self._loop.start()

    async def stop(self) -> None:
        if self._loop is not None:
            await self._loop.stop()

    def status(self) -> list[dict[str, Any]]:
        return [
            {"mode": m, "replication": n, "partition": p, **asdict(prog)}
            for (m, n, p), prog in sorted(self.progress.items())
        ]

    async def round_once(self) -> int:
        """Pull every partition this node is incoming for; returns how many it reported."""
        md = self.metadata()
        t = md.transition
        if t is None:
            self.progress.clear()
            return 0
        reported = 0
        for key in sorted(t.pending):
            if self._mine(md, key) and (*key, self.self_id) not in t.ready:
                reported += await self._transfer(md, key)
        return reported

    def _mine(self, md: Metadata, key: MoveKey) -> bool:
        mode, n, p = key
        return mode == "eventual" and self.self_id in md.owners(mode, n, p)[1]

    async def _transfer(self, md: Metadata, key: MoveKey) -> int:
        sources = [s for s in md.owners(*key)[0] if s != self.self_id]
        prog = self.progress.setdefault(key, Progress())
        for source in _rotate(sources, prog.source):
            prog.source, prog.state, prog.error = source, "copying", ""
            try:
                await self._pull(md, key, source, prog)
                # on disk before it is reported: the old owners drop their copies after
                # the plan completes, whatever the keyspaces' durability
                await asyncio.to_thread(self.replica.sync)
                await self._report(md, key)
            except KvError as exc:
                prog.state, prog.error = "failed", f"{exc.__class__.__name__}: {exc}"
                log.info("transfer %s from %s failed: %s", key, source, exc)
                continue
            prog.state = "reported"
            return 1
        return 0

    async def _pull(self, md: Metadata, key: MoveKey, source: str, prog: Progress) -> None:
        _, n, p = key
        uids = [k.uid for k in md.keyspaces if k.consistency == "eventual" and k.replication == n]
        for uid in uids:
            await self._copy(source, p, uid, prog)
        prog.state = "verifying"
        for _ in range(MAX_VERIFY_PASSES):
            repaired = sum([await self._verify(source, p, uid) for uid in uids])
            prog.keys_repaired += repaired
            if repaired == 0:
                return
        raise KvError(f"partition {p} still differs after {MAX_VERIFY_PASSES} passes")

    async def _copy(self, source: str, partition: int, uid: int, prog: Progress) -> None:
        """Copy one keyspace's keys of the partition; `prog` counts them batch by batch, and
        their bytes as partition sizes count them (kv/sizes.py: storage key + stored value)."""
        after, done = None, False
        while not done:
            req = ScanRequest(partition, uid, after, self.batch)
            got = await self.transport.call(source, PART_SCAN, req, self.timeout)
            for key, versions in got.items:
                ref = KeyRef(partition, uid, key)
                self.replica.store(ref, versions)
                size = len(ref.storage_key()) + len(encode_versions(versions))
                prog.bytes_copied += size
                self.bytes_moved += size
                after = key
            prog.keys_copied += len(got.items)
            done = got.done
            delay = pause(len(got.items), self.keys_per_s)
            if delay > 0:
                await self.sleep(delay)

    async def _verify(self, source: str, partition: int, uid: int) -> int:
        """One pass: fetch every key whose hash differs, merge after the grace; count the
        merges that changed something here (0: this replica holds every version the source
        held when each key was fetched)."""
        after, done = None, False
        fetched: list[tuple[KeyRef, tuple[Version, ...]]] = []
        while not done:
            req = ScanRequest(partition, uid, after, self.batch)
            got = await self.transport.call(source, PART_DIGEST, req, self.timeout)
            for key, digest in got.items:
                ref = KeyRef(partition, uid, key)
                local = self.replica.fetch(ref)
                if not local or merkle.version_hash(local) != digest:
                    reply = await self.transport.call(source, FETCH, KeyRequest(ref), self.timeout)
                    fetched.append((ref, reply.versions))
                after = key
            done = got.done
        if fetched:
            await self.sleep(self.settle_s)
        return sum(self._merge(ref, versions) for ref, versions in fetched)

    def _merge(self, ref: KeyRef, versions: tuple[Version, ...]) -> int:
        """1 if `versions` added something to the local replica, else 0."""
        local = self.replica.fetch(ref)
        before = merkle.version_hash(local) if local else None
        merged = self.replica.store(ref, versions)
        return int(merkle.version_hash(merged) != before)

    async def _report(self, md: Metadata, key: MoveKey) -> None:
        assert md.transition is not None
        mode, n, p = key
        change = {
            "type": "move_done",
            "plan_id": md.transition.plan_id,
            "mode": mode,
            "replication": n,
            "partition": p,
            "node": self.self_id,
        }
        await self.propose(change)


@dataclass
class Disowned:
    """Copies this node holds of partitions it no longer owns (a plan moved them away), and
    the eventual copies of a keyspace that switched to linearizable, are deleted `grace`
    seconds after it first saw them so — never while a plan may still move them (DESIGN.md
    §2: the old copy goes only after the new owner holds it, which the flip guarantees).
    The grace covers nodes acting on older metadata."""

    replica: DynamoReplica
    self_id: str
    metadata: Callable[[], Metadata]
    clock: Callable[[], float]
    grace: float = 60.0
    interval: float = 5.0
    batch: int = 1000
    dropped: int = 0
    _since: dict[tuple[int, int], float] = field(default_factory=dict)
    _loop: Periodic | None = None

    def start(self) -> None:
        self._loop = Periodic("drop disowned copies", self.interval, self.sweep_once)
        self._loop.start()

    async def stop(self) -> None:
        if self._loop is not None:
            await self._loop.stop()

    async def sweep_once(self) -> int:
        md, now, dropped = self.metadata(), self.clock(), 0
        if not md.bootstrapped or md.transition is not None:
            self._since.clear()  # a plan in flight (or an abort) may still need them
            return 0
        held = {(p, uid) for p, uid in self._disowned(md) if self.replica.scan(p, uid, None, 1)[0]}
        self._since = {k: self._since.get(k, now) for k in held}
        for (p, uid), since in self._since.items():
            if now - since >= self.grace:
                dropped += self.replica.drop(p, uid, self.batch)
        self.dropped += dropped
        return dropped

    def _disowned(self, md: Metadata) -> list[tuple[int, int]]:
        """(partition, keyspace uid) this node replicates for no eventual keyspace. A
        partition it replicates for a wider keyspace is kept whole: anti-entropy exchanges
        whole partitions among the widest replica set (dynamo_mode/anti_entropy.py)."""
        eventual = [k for k in md.keyspaces if k.consistency == "eventual"]
        widest = max((k.replication for k in eventual), default=0)
        out: list[tuple[int, int]] = []
        for p in range(md.partitions) if eventual else ():
            if self.self_id not in md.owners("eventual", widest, p)[0]:
                out.extend((p, k.uid) for k in eventual)
        # a keyspace that switched to linearizable: its eventual copies are left over
        # (docs/mode_switch.md), in every partition
        switched = [k.uid for k in md.keyspaces if k.consistency != "eventual"]
        switched = [uid for uid in switched if not any(s.uid == uid for s in md.switches)]
        out.extend((p, uid) for p in range(md.partitions) for uid in switched)
        return out


def pause(keys: int, keys_per_s: float) -> float:
    """Seconds to wait after copying `keys` so the copy stays under `keys_per_s` (0: none)."""
    return keys / keys_per_s if keys_per_s > 0 else 0.0


def _rotate(sources: list[str], last: str) -> list[str]:
    """Try the source after the one that failed last, so a dead owner is not retried first."""
    if last in sources:
        i = sources.index(last) + 1
        return sources[i:] + sources[:i]
    return sources
