"""The Raft groups of this node: started and stopped as the metadata says, and the
linearizable operations on them (DESIGN.md §3).

Writes are proposed to the key's group; a command that is not applied within the
caller's timeout ends as `UnknownOutcome` carrying its `request_id` (a retry with it is
deduplicated by the state machine). Reads are never served from local state alone: a read
waits for a ReadIndex round started after it arrived (raft_groups/syncobj_adapter/
read_index.py; coalesced by kv/barriers.py `ReadBarriers`), then reads local LevelDB;
`stale=True` skips it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from kv.barriers import ReadBarriers
from kv.errors import NotReady, UnknownOutcome
from kv.memory import MemoryEngine
from kv.meta import Metadata
from kv.storage import StorageEngine, WriteBatch
from raft_groups import commands, state_machine
from raft_groups.placement import GroupSpec, hosted_groups, replication_factors
from raft_groups.syncobj_adapter import (
    GroupSettings,
    GroupStats,
    RaftDriver,
    RaftGroup,
    RaftStatus,
)

log = logging.getLogger(__name__)


# a guarded request (docs/mode_switch.md) before its partition's data is migrated
MIGRATING = (
    "the keyspace is switching to linearizable and this key's partition is being migrated; "
    "retry (nothing was applied)"
)


class LinearizableMachine:
    """The StateMachine pysyncobj drives: pure `state_machine.apply` + one LevelDB batch."""

    def __init__(self, engine: StorageEngine, group: int) -> None:
        self._engine = engine
        self._group = group

    def apply(self, index: int, command: bytes) -> Any:
        batch, result = state_machine.apply(self._engine, self._group, index, command)
        if len(batch):
            self._engine.write(batch)
        return result

    def snapshot(self) -> Iterator[bytes]:
        """A LevelDB snapshot of the group's range taken now, streamed as length-prefixed
        records in ~1 MiB chunks (consumed by the adapter's background thread)."""
        snap = self._engine.snapshot()
        start, stop = state_machine.group_range(self._group)

        def chunks() -> Iterator[bytes]:
            try:
                buf: list[bytes] = []
                size = 0
                for key, value in snap.iterate(start, stop):
                    buf.append(struct.pack(">II", len(key), len(value)) + key + value)
                    size += len(key) + len(value) + 8
                    if size >= 1 << 20:
                        yield b"".join(buf)
                        buf, size = [], 0
                yield b"".join(buf)
            finally:
                snap.close()

        return chunks()

    def restore(self, chunks: Iterator[bytes]) -> None:
        """Install a snapshot — unless this replica is already at or past it (a follower was
        once sent a snapshot older than its own state, DESIGN.md §3). One atomic batch."""
        records = list(_records(b"".join(chunks)))
        incoming = _snapshot_applied(records, self._group)
        if incoming <= state_machine.applied_index(self._engine, self._group):
            log.warning(
                "group %d: ignoring snapshot at index %d, not newer than local state",
                self._group,
                incoming,
            )
            return
        batch = self._delete_all()
        for key, value in records:
            batch.put(key, value)
        self._engine.write(batch, sync=True)

    def drop(self) -> None:
        """Delete the group's whole range, `applied_index` included: for a member removed
        from the group (docs/raft.md "Membership changes"), whose data no longer follows
        the log. If it is ever added back it starts empty and installs a snapshot; kept,
        its `applied_index` would make it ignore that snapshot."""
        self._engine.write(self._delete_all(), sync=True)

    def _delete_all(self) -> WriteBatch:
        start, stop = state_machine.group_range(self._group)
        batch = WriteBatch()
        for key, _ in self._engine.iterate(start, stop):
            batch.delete(key)
        return batch


def _records(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    offset = 0
    while offset < len(data):
        klen, vlen = struct.unpack_from(">II", data, offset)
        offset += 8
        key = data[offset : offset + klen]
        value = data[offset + klen : offset + klen + vlen]
        offset += klen + vlen
        yield key, value


def _snapshot_applied(records: list[tuple[bytes, bytes]], group: int) -> int:
    view = MemoryEngine()
    batch = WriteBatch()
    for key, value in records[:1]:  # APPLIED sorts first: bookkeeping uid 0, "applied" < "rid/"
        batch.put(key, value)
    view.write(batch)
    return state_machine.applied_index(view, group)


@dataclass
class Hosted:
    spec: GroupSpec  # as of the last reconcile (an incoming owner becomes an owner in place)
    group: RaftGroup
    barriers: ReadBarriers
    machine: LinearizableMachine


class RaftGroups:
    def __init__(
        self,
        driver: RaftDriver,
        engine: StorageEngine,
        node_id: str,
        raft_address: Callable[[str], str | None],
        data_dir: str,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._driver = driver
        self._engine = engine
        self.engine = engine
        self._node_id = node_id
        self._raft_address = raft_address
        self._data_dir = data_dir
        self._loop = loop
        self._running: dict[str, Hosted] = {}
        self._reconciling = asyncio.Lock()

    async def reconcile(self, md: Metadata) -> None:
        """Start the groups the metadata gives this node and stop the others.

        A group this node owned and no longer hosts (while its replication factor is in
        use) was moved away: its move flipped only once the configuration was the target,
        without this node, so its journal and data range are deleted. One it owned and now
        joins again (an abort moves it back) restarts empty as a joining member. Any other
        group stops with its data kept (its keyspaces deleted, or a join that an abort
        dropped)."""
        async with self._reconciling:
            want = hosted_groups(md, self._node_id)
            stop = [g for g in self._running if g not in want or self._rejoins(g, want[g])]
            gone = [self._running.pop(gid) for gid in stop]
            moved = [h for h in gone if self._moved_away(md, h)]
            kept = [h for h in gone if all(h is not m for m in moved)]
            await asyncio.to_thread(self._driver.call, partial(_close, kept))
            await self._delete(moved)
            for gid, hosted in self._running.items():
                hosted.spec = want[gid]
            new = [spec for gid, spec in want.items() if gid not in self._running]
            started: list[Hosted] = []

            def start_each() -> None:  # driver thread
                for spec in new:
                    started.append(self._start(spec))

            try:
                await asyncio.to_thread(self._driver.call, start_each)
            finally:  # those started before a failure run: they are this node's to stop
                self._running.update((h.spec.gid, h) for h in started)

    def _rejoins(self, gid: str, spec: GroupSpec) -> bool:
        """An owner's replica that the metadata now lists as joining (it was removed)."""
        return not self._running[gid].spec.joining(self._node_id) and spec.joining(self._node_id)

    def _moved_away(self, md: Metadata, hosted: Hosted) -> bool:
        owned = not hosted.spec.joining(self._node_id)
        return owned and hosted.spec.replication in replication_factors(md)

    async def _delete(self, moved: list[Hosted]) -> None:
        """Close each group, delete its journal and snapshot, then its data range (a crash
        in between leaves a range without a journal: consistent with its applied_index)."""
        await asyncio.to_thread(self._driver.call, partial(_close, moved, True))
        for hosted in moved:
            await asyncio.to_thread(hosted.machine.drop)
            log.info("group %s moved off this node: journal and data deleted", hosted.spec.gid)

    def _start(self, spec: GroupSpec) -> Hosted:
        settings = GroupSettings(
            gid=spec.gid,
            self_address=self._address(self._node_id),
            peers=tuple(self._address(m) for m in spec.peers(self._node_id)),
            data_dir=os.path.join(self._data_dir, spec.gid),
            joining=spec.joining(self._node_id),
        )
        machine = LinearizableMachine(self._engine, spec.number)
        group = RaftGroup(self._driver, settings, machine)
        barriers = ReadBarriers(lambda: group.read_index(self._loop), self._loop)
        return Hosted(spec, group, barriers, machine)

    def _address(self, node_id: str) -> str:
        address = self._raft_address(node_id)
        if address is None:
            raise NotReady(f"no Raft address known for member {node_id!r}")
        return address

    def hosted(self, spec: GroupSpec) -> Hosted:
        hosted = self._running.get(spec.gid)
        if hosted is None:
            raise NotReady(
                f"Raft group {spec.gid} is not running on this node yet", retry_after=0.5
            )
        return hosted

    async def wait_for_leaders(self, md: Metadata, replication: int, timeout: float) -> bool:
        """Poll (deadline `timeout`) until every group of `replication` hosted here has a
        leader; reconciles first so the groups exist. Returns whether that happened."""
        await self.reconcile(md)
        want = [
            g
            for g in hosted_groups(md, self._node_id).values()
            if g.replication == replication and not g.joining(self._node_id)
        ]
        end = self._loop.time() + timeout
        while self._loop.time() < end:
            if all(
                self._running[g.gid].group.status().leader for g in want if g.gid in self._running
            ):
                return True
            await asyncio.sleep(0.05)
        return False

    def running(self) -> list[Hosted]:
        return list(self._running.values())

    def owned(self) -> list[int]:
        """Numbers (storage prefixes) of the groups this node runs as an owner."""
        return [h.spec.number for h in self._running.values() if not h.spec.joining(self._node_id)]

    def statuses(self) -> dict[str, RaftStatus]:
        return {gid: h.group.status() for gid, h in sorted(self._running.items())}

    def stats(self) -> dict[str, tuple[RaftStatus, GroupStats]]:
        """Each group's state and counters (`/metrics`, docs/metrics.md)."""
        running = sorted(self._running.items())
        return {gid: (h.group.status(), h.group.stats()) for gid, h in running}

    def summary(self) -> dict[str, dict[str, Any]]:
        """`/v1/cluster` "raft_groups": each group's leader, term and commit index, and
        why this node fenced it, if it did (docs/raft.md "Fencing")."""
        return {
            gid: {"leader": st.leader, "term": st.term, "commit_index": st.commit_index}
            | ({"fenced": st.fenced} if st.fenced else {})
            for gid, st in self.statuses().items()
        }

    async def propose(
        self, spec: GroupSpec, command: commands.Command, timeout: float
    ) -> dict[str, Any]:
        fut = self.hosted(spec).group.propose(commands.encode(command), self._loop)
        try:
            result: dict[str, Any] = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise UnknownOutcome(
                f"not committed within {timeout:.2f}s; it may still be applied "
                f"(retry with the same request_id to deduplicate)",
                request_id=command.request_id,
            ) from None
        return result

    async def read(
        self, spec: GroupSpec, uid: int, key: str, timeout: float, stale: bool, guard: bool = False
    ) -> state_machine.Record | None:
        """`guard`: the keyspace switches to linearizable (docs/mode_switch.md): its data
        of this partition must be migrated before a read may answer. An expired key is
        absent: its expiry is at or below the group's applied expiry horizon (docs/ttl.md)."""
        await self._readable(spec, uid, timeout, stale, guard)
        stored = state_machine.stored_record(self._engine, spec.number, uid, key)
        if stored is None or stored.expires_at is None:
            return stored  # one read: no horizon to judge it by
        # The driver thread applies while we read: the record and the horizon must come
        # from one state, or an `expire` and a rewrite applied between two reads could
        # make an answer no state held. A snapshot costs ~5 µs; only TTL keys take one.
        with self._engine.snapshot() as snap:
            return state_machine.read_record(snap, spec.number, uid, key)

    async def keys(
        self,
        spec: GroupSpec,
        uid: int,
        scan: tuple[str, str | None, int],
        timeout: float,
        guard: bool = False,
    ) -> list[str]:
        """A key listing's slice of this group (kv/listing.py), after a read barrier: up to
        `limit` keys with `prefix` after `after` (`scan`)."""
        await self._readable(spec, uid, timeout, False, guard)
        prefix, after, limit = scan
        with self._engine.snapshot() as snap:  # the horizon and the records of one state
            return state_machine.keys(snap, spec.number, uid, prefix, after, limit)

    async def export(
        self, spec: GroupSpec, uid: int, timeout: float
    ) -> tuple[int, list[tuple[str, state_machine.Record]]]:
        """A backup's page of this group (docs/backup.md): after a read barrier, every live
        record of `uid` and the applied index of the one state they were read from."""
        await self._readable(spec, uid, timeout, False, False)

        def read() -> tuple[int, list[tuple[str, state_machine.Record]]]:
            with self._engine.snapshot() as snap:
                applied = state_machine.applied_index(snap, spec.number)
                return applied, state_machine.entries(snap, spec.number, uid)

        return await asyncio.to_thread(read)

    async def _readable(
        self, spec: GroupSpec, uid: int, timeout: float, stale: bool, guard: bool
    ) -> None:
        hosted = self.hosted(spec)
        if not stale:
            await hosted.barriers.passed(timeout, "read barrier (no quorum?)")
        if guard and not state_machine.migrated(self._engine, spec.number, uid):
            raise NotReady(MIGRATING, retry_after=0.2)

    async def close(self) -> None:
        gone, self._running = list(self._running.values()), {}
        await asyncio.to_thread(self._driver.call, partial(_close, gone))


def _close(hosted: list[Hosted], delete_data: bool = False) -> None:
    """Stop these groups (on the driver thread); `delete_data`: their journals too."""
    for h in hosted:
        h.group.close(delete_data=delete_data)
