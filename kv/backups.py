"""The backup routes' layer (docs/backup.md): `GET /v1/keyspaces/{ks}/export?partition=P`
and `POST /v1/keyspaces/{ks}/import`, between kv/http and the modes' backup operations
(raft_groups/backup.py, dynamo_mode/backup.py), like kv/service.py for key requests.

A keyspace in the middle of a consistency switch is neither exported nor imported into
(409): its data is on both sides until the switch is done.
"""

from __future__ import annotations

from typing import Any, Protocol

from kv import backup, routing
from kv.errors import InvalidRequest, KeyspaceConflict, NotImplementedYet
from kv.keyspace import KeyspaceConfig
from kv.meta import Metadata
from kv.service import Service


class BackupOps(Protocol):
    """One consistency mode's backup operations."""

    async def export(
        self, md: Metadata, ks: KeyspaceConfig, partition: int, timeout: float
    ) -> dict[str, Any]:
        """{"records": [...]} (and, linearizable, "applied_index") of one partition."""

    async def import_records(
        self, md: Metadata, ks: KeyspaceConfig, records: list[Any], timeout: float
    ) -> int:
        """Create the records that are new (create-only); how many records were taken."""


class Backups:
    def __init__(self, service: Service, modes: dict[str, BackupOps]) -> None:
        self._service = service
        self._modes = modes

    async def _steady(self, name: str, timeout: float) -> tuple[Metadata, KeyspaceConfig]:
        md = await self._service.current(name, timeout)
        ks = routing.keyspace(md, name)
        if md.switch(name) is not None:
            raise KeyspaceConflict(
                f"keyspace {name!r} is switching its consistency: back it up or restore "
                "into it once the switch is done"
            )
        if ks.consistency not in self._modes:
            raise NotImplementedYet(f"{ks.consistency} keyspaces are not available")
        return md, ks

    async def export(self, name: str, partition: int | None, timeout: float) -> dict[str, Any]:
        md, ks = await self._steady(name, timeout)
        if partition is None:
            raise InvalidRequest("partition", "is required: 0 .. partitions - 1")
        if partition >= md.partitions:
            raise InvalidRequest(
                "partition", f"must be below {md.partitions} (the cluster's partitions)"
            )
        found = await self._modes[ks.consistency].export(md, ks, partition, timeout)
        config = {k: v for k, v in ks.to_wire().items() if k != "name"}
        return {
            "keyspace": ks.name,
            "config": config,
            "partition": partition,
            "partitions": md.partitions,
            "applied_index": found.get("applied_index"),
            "records": found["records"],
        }

    async def import_(self, name: str, body: Any, timeout: float) -> dict[str, Any]:
        md, ks = await self._steady(name, timeout)
        raw = backup.records_of(body)
        mode = self._modes[ks.consistency]
        if ks.consistency == "linearizable":
            created = await mode.import_records(md, ks, list(backup.lin_records(raw)), timeout)
        else:
            created = await mode.import_records(md, ks, raw, timeout)
        return {"records": len(raw), "created": created}
