"""The replica's side of the eventual mode's internode operations (dynamo_mode/messages.py).

Each handler performs one local replica operation on an already validated, typed request;
a write whose keyspace asks for `durability: "fsync"` is answered only once it is on disk
(`commit`, kv/group_commit.py: one sync covers the writes of many requests; the write
itself is made first, in the replica's atomic read-merge-write, so reads see it at once);
the coordinator (dynamo_mode/coordinator.py), anti-entropy, hinted handoff and the
tombstone reaper are its callers on other nodes (and on this one, without the wire).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from dynamo_mode import merkle, merkle_diff, siblings
from dynamo_mode.messages import (
    AE_QUERY,
    COORDINATE,
    FETCH,
    HINT,
    PURGE,
    STORE,
    Coordinated,
    CoordinateRequest,
    HintRequest,
    KeyRequest,
    Purged,
    PurgeRequest,
    Stored,
    StoreRequest,
    TreeAnswer,
    TreeQuery,
    Versions,
)
from dynamo_mode.replica import DynamoReplica, KeyRef
from dynamo_mode.scan_messages import (
    KEY_LIST,
    PART_DIGEST,
    PART_SCAN,
    SWITCH_SCAN,
    DigestBatch,
    ListScanRequest,
    ScanBatch,
    ScanRequest,
    SwitchScanRequest,
)
from kv.errors import NotReady, SiblingLimit, SiblingSetTooLarge
from kv.group_commit import GroupCommit
from kv.internode import OpTable
from kv.keyspace import FSYNC

# A partition transfer's batch stops at this many stored bytes (whatever its key limit), so
# its reply stays well under the internode frame cap (kv/wire.py MAX_PAYLOAD).
SCAN_BATCH_BYTES = 8 << 20


MAX_SWITCH_HINTS = 10_000  # hints of one keyspace and partition a switch scan returns


class ReplicaServer:
    def __init__(
        self,
        replica: DynamoReplica,
        commit: GroupCommit | None = None,
        frozen: Callable[[int, int], bool] = lambda uid, partition: False,
        epoch: Callable[[], int] = lambda: 1 << 62,
    ) -> None:
        self.replica = replica
        self.commit = commit  # None: the engine has nothing to sync (MemoryEngine)
        # the fence of a switch to linearizable (docs/mode_switch.md): this node's metadata
        # says partition `partition` of keyspace `uid` is served by Raft groups now, so it
        # takes no more eventual writes of it
        self.frozen = frozen
        self.epoch = epoch  # this node's metadata epoch

    def _writable(self, ref: KeyRef) -> None:
        if self.frozen(ref.uid, ref.partition):
            raise NotReady(
                "the keyspace is switching to linearizable: its eventual copies take no "
                "writes (retry: the coordinator routes by newer metadata)",
                retry_after=0.2,
            )

    async def _durable(self, durability: str) -> None:
        if durability == FSYNC and self.commit is not None:
            await self.commit.durable()

    def register(self, table: OpTable) -> None:
        table.register(FETCH, self.fetch)
        table.register(STORE, self.store)
        table.register(HINT, self.hint)
        table.register(PURGE, self.purge)
        table.register(COORDINATE, self.coordinate)
        table.register(AE_QUERY, self.tree_query)
        table.register(PART_SCAN, self.part_scan)
        table.register(PART_DIGEST, self.part_digest)
        table.register(SWITCH_SCAN, self.switch_scan)
        table.register(KEY_LIST, self.key_list)

    async def fetch(self, req: KeyRequest) -> Versions:
        return Versions(self.replica.fetch(req.ref))

    async def store(self, req: StoreRequest) -> Stored:
        if not req.switch_copy:
            self._writable(req.ref)
        self.replica.store(req.ref, req.versions)
        await self._durable(req.durability)
        return Stored()

    async def hint(self, req: HintRequest) -> Stored:
        """A fallback's side of a sloppy write: keep the versions for `owner` (Dynamo §4.6).
        A hint addressed to this node itself (the ring moved) is plain replica data."""
        self._writable(req.ref)
        if req.owner == self.replica.node_id:
            self.replica.store(req.ref, req.versions)
        else:
            self.replica.store_hint(req.owner, req.ref, req.versions)
        await self._durable(req.durability)
        return Stored()

    async def purge(self, req: PurgeRequest) -> Purged:
        return Purged(self.replica.purge(req.ref, set(req.dots)))

    async def coordinate(self, req: CoordinateRequest) -> Coordinated:
        self._writable(req.ref)
        try:
            new, merged = self.replica.coordinate(
                req.ref, req.context, req.value, req.deleted, req.max_siblings, req.dots, req.ttl_ms
            )
        except siblings.SiblingLimitExceeded as exc:
            raise SiblingLimit(str(exc), count=exc.count, limit=exc.limit) from None
        except siblings.SiblingBytesExceeded as exc:
            raise SiblingSetTooLarge(str(exc), size=exc.size, limit=exc.limit) from None
        await self._durable(req.durability)
        return Coordinated(new, merged)

    async def part_scan(self, req: ScanRequest) -> ScanBatch:
        found, done = self.replica.scan(
            req.partition, req.uid, req.after, req.limit, max_bytes=SCAN_BATCH_BYTES
        )
        return ScanBatch(tuple((ref.key, versions) for ref, versions in found), done)

    async def key_list(self, req: ListScanRequest) -> ScanBatch:
        """A key listing's batch (kv/listing.py): the versions' causal data decides whether
        a key is live once merged with the other replicas'; their values are left out."""
        s = req.scan
        found, done = self.replica.scan(
            s.partition, s.uid, s.after, s.limit, SCAN_BATCH_BYTES, key_prefix=req.prefix
        )
        items = ((ref.key, tuple(replace(v, value=None) for v in vs)) for ref, vs in found)
        return ScanBatch(tuple(items), done)

    async def switch_scan(self, req: SwitchScanRequest) -> ScanBatch:
        """A switch's migrator reading this member's versions of a partition: only once
        this node's metadata holds the switch — from then on it takes no eventual write of
        the keyspace (`_writable`), so what it returns is all it will ever have acknowledged.
        The first batch also carries the hints held here for the partition's keys."""
        if self.epoch() < req.since:
            why = f"this node's metadata (epoch {self.epoch()}) lacks the switch ({req.since})"
            raise NotReady(why, retry_after=0.5)
        batch = await self.part_scan(req.scan)
        if req.scan.after is not None:
            return batch
        scan = req.scan
        held = self.replica.hints_of(scan.partition, scan.uid, MAX_SWITCH_HINTS + 1)
        if len(held) > MAX_SWITCH_HINTS:
            raise NotReady(f"more than {MAX_SWITCH_HINTS} hints to read", retry_after=5.0)
        # hints first: the batch's last item stays the replica data's last key (the next
        # batch's `after`)
        return ScanBatch((*((r.key, v) for r, v in held), *batch.items), batch.done)

    async def part_digest(self, req: ScanRequest) -> DigestBatch:
        found, done = self.replica.scan(req.partition, req.uid, req.after, req.limit)
        items = tuple((ref.key, merkle.version_hash(versions)) for ref, versions in found)
        return DigestBatch(items, done)

    async def tree_query(self, req: TreeQuery) -> TreeAnswer:
        """Answer one step of a peer's Merkle walk from this node's tree (Dynamo §4.7)."""
        return TreeAnswer(merkle_diff.answer(self.replica.tree(req.partition), req.query))


def serve(replica: DynamoReplica) -> OpTable:
    """A table serving only `replica` (the simulation tier's nodes)."""
    table = OpTable()
    ReplicaServer(replica).register(table)
    return table
