"""Backup and restore of linearizable keyspaces (docs/backup.md).

Export: one partition's group, whole, after a read barrier, from one LevelDB snapshot — so
a page is the group's state at one applied index, which the page names; a node outside
the group asks a member (`lin_export`). Import: the records of each partition become
`migrate` commands of its group (raft_groups/state_machine.py: create-only, the key's
expiry kept, version 1), proposed by a member (`lin_import` from outside the group);
records already expired on the importing member's clock are left out, as a switch's
migrator leaves them out (docs/ttl.md). Create-only makes an import safe to send again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from kv import json_codec, routing
from kv.backup import (
    LIN_EXPORT,
    LIN_IMPORT,
    ExportPage,
    ExportRequest,
    Imported,
    ImportRequest,
    LinRecord,
    migrate_items,
)
from kv.batching import chunks
from kv.errors import InvalidRequest, NotReady, Retryable
from kv.internode import OpTable
from kv.keyspace import KeyspaceConfig
from kv.meta import Metadata
from kv.transport import Transport
from raft_groups.commands import MAX_MIGRATE_ITEMS, Command
from raft_groups.frontend import call_a_member
from raft_groups.manager import RaftGroups
from raft_groups.placement import GroupSpec

MIGRATE_BYTES = 4 << 20  # a migrate command's values stay under this (one Raft entry)


class LinearizableBackup:
    def __init__(
        self,
        groups: RaftGroups,
        self_id: str,
        transport: Transport,
        metadata: Callable[[], Metadata],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._groups = groups
        self._self_id = self_id
        self._transport = transport
        self._metadata = metadata
        self._clock = clock

    def register(self, table: OpTable) -> None:
        table.register(LIN_EXPORT, self.serve_export)
        table.register(LIN_IMPORT, self.serve_import)

    async def export(
        self, md: Metadata, ks: KeyspaceConfig, partition: int, timeout: float
    ) -> dict[str, Any]:
        spec = _spec(md, ks, partition)
        request = ExportRequest(ks.name, ks.uid, partition, timeout)
        if self._self_id in spec.members:
            page = await self.serve_export(request)
        else:
            page = await call_a_member(self._transport, spec, LIN_EXPORT, request, timeout)
        return page.to_wire()

    async def import_records(
        self, md: Metadata, ks: KeyspaceConfig, records: list[LinRecord], timeout: float
    ) -> int:
        """Create the records in their groups (all partitions at once); how many were new."""
        by_partition: dict[int, list[LinRecord]] = {}
        for r in records:
            by_partition.setdefault(routing.place(md, ks, r.key).partition, []).append(r)
        calls = (
            self._import_partition(md, ks, p, tuple(found), timeout)
            for p, found in sorted(by_partition.items())
        )
        return sum(await asyncio.gather(*calls))

    async def _import_partition(
        self,
        md: Metadata,
        ks: KeyspaceConfig,
        partition: int,
        records: tuple[LinRecord, ...],
        timeout: float,
    ) -> int:
        spec = _spec(md, ks, partition)
        request = ImportRequest(ks.name, ks.uid, partition, records, timeout)
        if self._self_id in spec.members:
            return (await self.serve_import(request)).created
        imported: Imported = await call_a_member(
            self._transport, spec, LIN_IMPORT, request, timeout
        )
        return imported.created

    # ------------------------------------------------------------------ served here
    async def serve_export(self, req: ExportRequest) -> ExportPage:
        spec = self._hosted_spec(req.keyspace, req.uid, req.partition)
        applied, entries = await self._groups.export(spec, req.uid, req.timeout_s)
        records = (LinRecord(k, r.value, r.version, r.expires_at) for k, r in entries)
        return ExportPage(applied, tuple(records))

    async def serve_import(self, req: ImportRequest) -> Imported:
        spec = self._hosted_spec(req.keyspace, req.uid, req.partition)
        items = migrate_items(req.records, int(self._clock() * 1000))
        created = 0
        for batch in chunks(items, MAX_MIGRATE_ITEMS, MIGRATE_BYTES, _weight):
            try:
                command = Command("migrate", req.uid, "", items=tuple(batch))
            except ValueError as exc:  # kv/backup.py checked them as a PUT is checked
                raise InvalidRequest("records", str(exc)) from None
            result = await self._groups.propose(spec, command, req.timeout_s)
            if not result.get("ok"):
                raise Retryable(f"import into {spec.gid} refused: {result}", retry_after=0.5)
            created += int(result.get("migrated", 0))
        return Imported(created)

    def _hosted_spec(self, name: str, uid: int, partition: int) -> GroupSpec:
        """The partition's group under this node's metadata, which must host it here."""
        md = self._metadata()
        ks = md.keyspace(name)
        if ks is None or ks.uid != uid or ks.consistency != "linearizable":
            raise NotReady(f"keyspace {name!r} is not this incarnation here", retry_after=0.5)
        spec = _spec(md, ks, partition)
        if self._self_id not in spec.members:
            raise NotReady("this node is not in the partition's group now", retry_after=0.2)
        return spec


def _spec(md: Metadata, ks: KeyspaceConfig, partition: int) -> GroupSpec:
    return GroupSpec.at(md, partition, ks.replication)


def _weight(item: tuple[Any, ...]) -> int:
    """A migrate item's share of MIGRATE_BYTES: its key and its value's JSON."""
    return len(item[0]) + len(json_codec.dumps(item[1]))
