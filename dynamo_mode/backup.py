"""Backup and restore of eventual keyspaces (docs/backup.md).

Export: every member is asked for the partition — its replica data and the hints it holds
for it (`switch_scan`, as a switch's migrator reads: more than R = N, so a write
acknowledged on any W replicas or fallbacks is seen; every member must answer) — and each
key's versions are reconciled (siblings.reconcile: the versions no other version
supersedes): every version with its dot, causal context, write time and expiry. Keys whose
versions are all tombstones are left out: deleted.

Import: each key's versions are stored on every replica of the key in the target keyspace
(`store`, the replica merge anti-entropy and transfers use), so the causal history comes
along unchanged; a replica that already holds versions merges them (an import sent again
changes nothing). Every replica must take it, else the import is a retryable 503.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dynamo_mode import siblings
from dynamo_mode.frontend import placement
from dynamo_mode.messages import STORE, StoreRequest
from dynamo_mode.scan_messages import SWITCH_SCAN, ScanRequest, SwitchScanRequest
from dynamo_mode.siblings import Version
from kv import routing
from kv.backup import MAX_EXPIRES_AT
from kv.errors import InvalidRequest, KvError, Retryable
from kv.keyspace import KeyspaceConfig
from kv.meta import Metadata
from kv.transport import Transport

SCAN_LIMIT = 1000
STORES_IN_FLIGHT = 64  # store calls one import keeps outstanding


class EventualBackup:
    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def export(
        self, md: Metadata, ks: KeyspaceConfig, partition: int, timeout: float
    ) -> dict[str, Any]:
        scans = (self._scan(m.id, partition, ks.uid, timeout) for m in md.members)
        versions: dict[str, list[Version]] = {}
        for found in await asyncio.gather(*scans):
            for key, vs in found:
                versions.setdefault(key, []).extend(vs)
        records = []
        for key in sorted(versions, key=lambda k: k.encode()):
            merged = siblings.reconcile(versions[key])
            if siblings.live(merged):
                records.append([key, [v.to_wire() for v in merged]])
        return {"records": records}

    async def _scan(
        self, owner: str, partition: int, uid: int, timeout: float
    ) -> list[tuple[str, tuple[Version, ...]]]:
        found: list[tuple[str, tuple[Version, ...]]] = []
        after: str | None = None
        while True:
            # a switch scan at epoch 1 (always reached): replica data, and in the first
            # batch the hints held for the partition (dynamo_mode/replica_server.py)
            request = SwitchScanRequest(ScanRequest(partition, uid, after, SCAN_LIMIT), 1)
            try:
                batch = await self._transport.call(owner, SWITCH_SCAN, request, timeout)
            except KvError as exc:
                raise Retryable(
                    f"replica {owner} of partition {partition}: {exc.message}"
                ) from None
            found.extend(batch.items)
            if batch.done or not batch.items:
                return found
            after = batch.items[-1][0]

    async def import_records(
        self, md: Metadata, ks: KeyspaceConfig, records: list[Any], timeout: float
    ) -> int:
        parsed = [_record(i, raw) for i, raw in enumerate(records)]
        gate = asyncio.Semaphore(STORES_IN_FLIGHT)

        async def store(node: str, request: StoreRequest) -> bool:
            async with gate:
                try:
                    await self._transport.call(node, STORE, request, timeout)
                except KvError:
                    return False
                return True

        calls = []
        for key, versions in parsed:
            where = placement(routing.KeyRequest(ks, key, routing.place(md, ks, key), timeout))
            request = StoreRequest(where.ref, versions, ks.durability)
            calls += [store(node, request) for node in (*where.replicas, *where.incoming)]
        stored = await asyncio.gather(*calls)
        if not all(stored):
            missed = stored.count(False)
            raise Retryable(f"{missed} of {len(stored)} replica stores failed; send it again")
        return len(parsed)


def _record(i: int, raw: Any) -> tuple[str, tuple[Version, ...]]:
    """[key, [version, ...]]: the key and values checked as a PUT checks them."""
    try:
        if not isinstance(raw, list) or len(raw) != 2 or not isinstance(raw[1], list):
            raise ValueError("a record must be [key, [version, ...]]")
        key, versions = raw[0], tuple(Version.from_wire(v) for v in raw[1])
        if not isinstance(key, str) or not versions:
            raise ValueError("a record needs a string key and at least one version")
        routing.check_key(key)
        for v in versions:
            routing.check_value(v.value)
            _check_bounds(v)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest("records", f"record {i}: {exc}") from None
    except KvError as exc:
        if exc.code == "too_large":
            raise
        raise InvalidRequest("records", f"record {i}: {exc.message}") from None
    return key, versions


def _check_bounds(v: Version) -> None:
    """Numbers a replica stores in fixed widths (expiry markers: 8 bytes; counters and
    times as JSON integers) must fit them."""
    counters = [v.dot[1], v.ts, *(c for _, c in v.context), *(c for _, c in v.context_dots)]
    if max(counters) >= 1 << 63:
        raise ValueError("a counter or time of a version is out of range")
    if v.expires_at is not None and v.expires_at > MAX_EXPIRES_AT:
        raise ValueError(f"expires_at {v.expires_at} is out of range")
