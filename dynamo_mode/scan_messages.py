"""The eventual mode's internode operations that read a partition in key order: typed
requests and replies (pure), served by dynamo_mode/replica_server.py. Every `from_wire`
validates what a peer sent and raises ValueError naming the field.

    op            request            reply         what
    part_scan     ScanRequest        ScanBatch     a partition transfer's batch of keys
    part_digest   ScanRequest        DigestBatch   the same keys' version hashes (verification)
    key_list      ListScanRequest    ScanBatch     a key listing's batch: keys with a prefix,
                                                   their versions without values (kv/listing.py)
    switch_scan   SwitchScanRequest  ScanBatch     a switching keyspace's versions and hints
                                                   (docs/mode_switch.md)
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from dynamo_mode.messages import b64, versions_wire
from dynamo_mode.replica import decode_versions
from dynamo_mode.siblings import Version
from kv.internode import Operation, integer, obj, text


@dataclass(frozen=True)
class ScanRequest:
    """One batch of a keyspace's keys in a partition, in key order, after `after`."""

    partition: int
    uid: int
    after: str | None
    limit: int

    def to_wire(self) -> dict[str, Any]:
        wire = {"partition": self.partition, "uid": self.uid, "after": self.after}
        return {**wire, "limit": self.limit}

    @staticmethod
    def from_wire(raw: Any) -> ScanRequest:
        d = obj(raw)
        after = d.get("after")
        return ScanRequest(
            integer(d.get("partition"), "partition", 0, 1 << 16),
            integer(d.get("uid"), "uid", 0, 1 << 32),
            None if after is None else text(after, "after"),
            integer(d.get("limit"), "limit", 1, 10_001),
        )


@dataclass(frozen=True)
class SwitchScanRequest:
    """A batch of one member's versions of a switching keyspace in a partition — its
    replica data and, in the first batch, the hints it holds — once its metadata has the
    switch committed at epoch `since` (docs/mode_switch.md: the fence)."""

    scan: ScanRequest
    since: int

    def to_wire(self) -> dict[str, Any]:
        return {**self.scan.to_wire(), "since": self.since}

    @staticmethod
    def from_wire(raw: Any) -> SwitchScanRequest:
        since = integer(obj(raw).get("since"), "since", 1, 1 << 62)
        return SwitchScanRequest(ScanRequest.from_wire(raw), since)


@dataclass(frozen=True)
class ListScanRequest:
    scan: ScanRequest  # the keys after `scan.after`, up to `scan.limit` ...
    prefix: str  # ... that start with `prefix`

    def to_wire(self) -> dict[str, Any]:
        return {**self.scan.to_wire(), "prefix": self.prefix}

    @staticmethod
    def from_wire(raw: Any) -> ListScanRequest:
        prefix = text(obj(raw).get("prefix"), "prefix")
        return ListScanRequest(ScanRequest.from_wire(raw), prefix)


@dataclass(frozen=True)
class ScanBatch:
    items: tuple[tuple[str, tuple[Version, ...]], ...]  # (key, versions)
    done: bool  # the range is exhausted

    def to_wire(self) -> dict[str, Any]:
        items = [[key, versions_wire(versions)] for key, versions in self.items]
        return {"items": items, "done": self.done}

    @staticmethod
    def from_wire(raw: Any) -> ScanBatch:
        d = obj(raw)
        items = tuple((text(k, "key"), decode_versions(v)) for k, v in _pairs(d.get("items")))
        return ScanBatch(items, d.get("done") is True)


@dataclass(frozen=True)
class DigestBatch:
    items: tuple[tuple[str, bytes], ...]  # (key, merkle.version_hash of its versions)
    done: bool

    def to_wire(self) -> dict[str, Any]:
        return {"items": [[k, b64(h)] for k, h in self.items], "done": self.done}

    @staticmethod
    def from_wire(raw: Any) -> DigestBatch:
        d = obj(raw)
        items = tuple(
            (text(k, "key"), base64.b64decode(text(h, "hash"))) for k, h in _pairs(d.get("items"))
        )
        return DigestBatch(items, d.get("done") is True)


def _pairs(raw: Any) -> list[tuple[Any, Any]]:
    if not isinstance(raw, list) or not all(isinstance(i, list) and len(i) == 2 for i in raw):
        raise ValueError("items must be a list of [key, value] pairs")
    return [(k, v) for k, v in raw]


PART_SCAN = Operation("part_scan", ScanRequest.from_wire, ScanBatch.from_wire)
PART_DIGEST = Operation("part_digest", ScanRequest.from_wire, DigestBatch.from_wire)
KEY_LIST = Operation("key_list", ListScanRequest.from_wire, ScanBatch.from_wire)
SWITCH_SCAN = Operation("switch_scan", SwitchScanRequest.from_wire, ScanBatch.from_wire)
