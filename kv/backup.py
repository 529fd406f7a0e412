"""Backup and restore of a keyspace (docs/backup.md): the export and import bodies, their
validation, and the internode messages a node outside a Raft group uses to export or
import through a member (`lin_export`, `lin_import`). Pure.

An export is one partition of a keyspace, whole: linearizable, every live record of the
partition's group read at one applied index; eventual, every key's versions from every
member of the partition (replica data and hints), reconciled. An import is a batch of
records in the same shapes (kvctl/archive.py): linearizable, create-only (a key the
keyspace already holds is left as it is); eventual, merged into each replica as
anti-entropy merges, so importing twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kv.errors import InvalidRequest, KvError
from kv.internode import Operation, array, integer, number, obj, text
from kv.routing import MAX_TIMEOUT_S, MAX_TTL_S, check_key, check_value

MAX_IMPORT_RECORDS = 1000  # records one import request may carry
# an expires_at beyond this is not a time: the limit migrate items take (raft_groups/commands.py
# MAX_TIME_MS + MAX_TTL_MS)
MAX_EXPIRES_AT = (1 << 43) + MAX_TTL_S * 1000


@dataclass(frozen=True)
class LinRecord:
    """A linearizable key as a backup holds it; `version` is informational (a restored
    key starts at version 1, as a migrated one does: docs/backup.md)."""

    key: str
    value: Any
    version: int
    expires_at: int | None

    def to_wire(self) -> list[Any]:
        return [self.key, self.value, self.version, self.expires_at]

    @staticmethod
    def from_wire(raw: Any) -> LinRecord:
        if not isinstance(raw, list) or len(raw) != 4:
            raise ValueError("a record must be [key, value, version, expires_at]")
        key, value, version, expires = raw
        if not isinstance(key, str):
            raise ValueError("a record's key must be a string")
        expires_at = (
            None if expires is None else integer(expires, "expires_at", 1, MAX_EXPIRES_AT + 1)
        )
        return LinRecord(key, value, integer(version, "version", 1, 1 << 62), expires_at)


def records_of(body: Any) -> list[Any]:
    """The records of an import body `{"records": [...]}` (1..MAX_IMPORT_RECORDS)."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", 'must be a JSON object {"records": [...]}')
    unknown = sorted(set(body) - {"records"})
    if unknown:
        raise InvalidRequest(unknown[0], "unknown field (allowed: records)")
    records = body.get("records")
    if not isinstance(records, list) or not 1 <= len(records) <= MAX_IMPORT_RECORDS:
        raise InvalidRequest("records", f"must be a list of 1..{MAX_IMPORT_RECORDS} records")
    return records


def lin_records(raw: list[Any]) -> list[LinRecord]:
    """Linearizable records, each checked as a PUT checks its key and value (400 naming
    `records` with the index of the first bad one, or 413 for a key or value too large)."""
    out = []
    for i, item in enumerate(raw):
        try:
            record = LinRecord.from_wire(item)
            check_key(record.key)
            check_value(record.value)
        except ValueError as exc:
            raise InvalidRequest("records", f"record {i}: {exc}") from None
        except KvError as exc:
            if exc.code == "too_large":
                raise
            raise InvalidRequest("records", f"record {i}: {exc.message}") from None
        out.append(record)
    return out


# ---------------------------------------------------------------------- internode
@dataclass(frozen=True)
class ExportRequest:
    """`lin_export`: a partition's records, asked of a member of its group."""

    keyspace: str
    uid: int
    partition: int
    timeout_s: float

    def to_wire(self) -> dict[str, Any]:
        wire = {"keyspace": self.keyspace, "uid": self.uid, "partition": self.partition}
        return {**wire, "timeout_s": self.timeout_s}

    @staticmethod
    def from_wire(raw: Any) -> ExportRequest:
        d = obj(raw)
        return ExportRequest(
            text(d.get("keyspace"), "keyspace"),
            integer(d.get("uid"), "uid", 1, 1 << 63),
            integer(d.get("partition"), "partition", 0, 1 << 16),
            _timeout(d.get("timeout_s")),
        )


@dataclass(frozen=True)
class ExportPage:
    applied_index: int  # the group's applied index the records were read at
    records: tuple[LinRecord, ...]

    def to_wire(self) -> dict[str, Any]:
        records = [r.to_wire() for r in self.records]
        return {"applied_index": self.applied_index, "records": records}

    @staticmethod
    def from_wire(raw: Any) -> ExportPage:
        d = obj(raw)
        records = array(d.get("records"), "records")
        applied = integer(d.get("applied_index"), "applied_index", 0, 1 << 63)
        return ExportPage(applied, tuple(LinRecord.from_wire(r) for r in records))


@dataclass(frozen=True)
class ImportRequest:
    """`lin_import`: records of one partition, created in its group by a member."""

    keyspace: str
    uid: int
    partition: int
    records: tuple[LinRecord, ...]
    timeout_s: float

    def to_wire(self) -> dict[str, Any]:
        return {
            **ExportRequest(self.keyspace, self.uid, self.partition, self.timeout_s).to_wire(),
            "records": [r.to_wire() for r in self.records],
        }

    @staticmethod
    def from_wire(raw: Any) -> ImportRequest:
        where = ExportRequest.from_wire(raw)
        records = obj(raw).get("records")
        if not isinstance(records, list) or len(records) > MAX_IMPORT_RECORDS:
            raise ValueError(f"records must be a list of at most {MAX_IMPORT_RECORDS}")
        found = tuple(LinRecord.from_wire(r) for r in records)
        return ImportRequest(where.keyspace, where.uid, where.partition, found, where.timeout_s)


@dataclass(frozen=True)
class Imported:
    created: int  # records created (the others' keys existed, or they had expired)

    def to_wire(self) -> dict[str, Any]:
        return {"created": self.created}

    @staticmethod
    def from_wire(raw: Any) -> Imported:
        return Imported(integer(obj(raw).get("created"), "created", 0, 1 << 32))


def _timeout(raw: Any) -> float:
    return min(max(number(raw, "timeout_s"), 0.001), MAX_TIMEOUT_S)


LIN_EXPORT = Operation("lin_export", ExportRequest.from_wire, ExportPage.from_wire)
LIN_IMPORT = Operation("lin_import", ImportRequest.from_wire, Imported.from_wire)


def migrate_items(records: Iterable[LinRecord], now_ms: int) -> list[tuple[Any, ...]]:
    """The create-only migrate items a linearizable import proposes: (key, value) or
    (key, value, expires_at); a record already expired at `now_ms` (the importing member's
    clock) is left out, as a switch's migrator leaves it out (docs/ttl.md)."""
    live = (r for r in records if r.expires_at is None or r.expires_at > now_ms)
    return [(r.key, r.value) if r.expires_at is None else (r.key, r.value, r.expires_at)
            for r in live]  # fmt: skip
