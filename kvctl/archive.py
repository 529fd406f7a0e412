"""The backup archive format (docs/backup.md): pure, no I/O beyond the file object given.

    archive  := MAGIC (8 bytes) | format version (2 bytes BE) | header | frame* | trailer
    section  := kind (1 byte: H, F or T) | length (4 bytes BE) | payload | SHA-256(payload)
    header   payload: JSON {"keyspace", "config", "consistency", "partitions", "created_at"}
    frame    payload: JSON {"partition", "applied_index" (linearizable) | null, "records"}
    trailer  payload: JSON {"frames", "records", "digest"}: the counts, and the SHA-256 (hex)
             of every byte before the trailer section

Every section carries its own checksum and the trailer one of the whole archive, so a
flipped bit, a truncation, a section dropped, repeated or reordered, and bytes appended
are all refused (`ArchiveError`). A reader verifies the whole file (`verify`) before
anyone acts on a frame (`frames` checks each section again as it yields it).

Records: linearizable `[key, value, version, expires_at | null]`; eventual
`[key, [version, ...]]`, each version as the replicas store it (dot, context, value,
deleted, and `dots`, `ts`, `expires_at` when set: dynamo_mode/siblings.py `Version`).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

MAGIC = b"KVBACKUP"
FORMAT_VERSION = 1
MAX_SECTION_BYTES = 256 << 20  # a longer length field is damage, not a partition page
_SECTION = struct.Struct(">cI")
_DIGEST_BYTES = 32
_MODES = ("linearizable", "eventual")


class ArchiveError(ValueError):
    """The archive is damaged, truncated, of another format version, or not an archive."""


@dataclass(frozen=True)
class Header:
    keyspace: str  # the keyspace backed up
    consistency: str
    config: dict[str, Any]  # its configuration, as `PUT /v1/keyspaces/{ks}` takes it
    partitions: int  # the source cluster's partition count
    created_at: int  # ms since the epoch, when the backup started

    def to_json(self) -> dict[str, Any]:
        return {
            "keyspace": self.keyspace,
            "consistency": self.consistency,
            "config": self.config,
            "partitions": self.partitions,
            "created_at": self.created_at,
        }

    @staticmethod
    def from_json(d: Any) -> Header:
        d = _object(d, "header")
        consistency = d.get("consistency")
        if consistency not in _MODES or not isinstance(d.get("config"), dict):
            raise ArchiveError(f"header: bad consistency or config: {consistency!r}")
        if not isinstance(d.get("keyspace"), str):
            raise ArchiveError("header: keyspace must be a string")
        return Header(
            d["keyspace"],
            consistency,
            d["config"],
            _count(d.get("partitions"), "header partitions"),
            _count(d.get("created_at"), "header created_at"),
        )


@dataclass(frozen=True)
class Frame:
    partition: int
    applied_index: int | None  # linearizable: the group's applied index the page was read at
    records: list[Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "applied_index": self.applied_index,
            "records": self.records,
        }

    @staticmethod
    def from_json(d: Any, consistency: str) -> Frame:
        d = _object(d, "frame")
        records, index = d.get("records"), d.get("applied_index")
        if not isinstance(records, list):
            raise ArchiveError("frame: records must be a list")
        for record in records:
            _check_record(record, consistency)
        applied = None if index is None else _count(index, "frame applied_index")
        return Frame(_count(d.get("partition"), "frame partition"), applied, records)


@dataclass(frozen=True)
class Summary:
    header: Header
    frames: int
    records: int


class Writer:
    """Writes an archive to `out`: the header now, a frame per `frame`, the trailer on
    `close`. An archive without its trailer is refused by readers."""

    def __init__(self, out: BinaryIO, header: Header) -> None:
        self._out = out
        self._digest = hashlib.sha256()
        self._frames = 0
        self._records = 0
        self.header = header
        self._write(MAGIC + FORMAT_VERSION.to_bytes(2, "big"))
        self._section(b"H", header.to_json())

    def frame(self, frame: Frame) -> None:
        self._section(b"F", frame.to_json())
        self._frames += 1
        self._records += len(frame.records)

    def close(self) -> Summary:
        trailer = {
            "frames": self._frames,
            "records": self._records,
            "digest": self._digest.hexdigest(),
        }
        self._section(b"T", trailer)
        return Summary(self.header, self._frames, self._records)

    def _section(self, kind: bytes, body: dict[str, Any]) -> None:
        payload = encode(body)
        if len(payload) > MAX_SECTION_BYTES:
            raise ArchiveError(f"a section of {len(payload)} bytes is over {MAX_SECTION_BYTES}")
        head = _SECTION.pack(kind, len(payload))
        self._write(head + payload + hashlib.sha256(payload).digest())

    def _write(self, data: bytes) -> None:
        self._digest.update(data)
        self._out.write(data)


def encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def verify(src: BinaryIO) -> Summary:
    """Read the whole archive from the start and check everything; the header and counts."""
    header: Header | None = None
    frames = records = 0
    for kind, body in _sections(src):
        if kind == b"H":
            header = Header.from_json(body)
        elif kind == b"F":
            assert header is not None
            frames += 1
            records += len(Frame.from_json(body, header.consistency).records)
    assert header is not None
    return Summary(header, frames, records)


def frames(src: BinaryIO) -> Iterator[Frame]:
    """The frames, from the start of `src`, each checked again as it is read (`verify`
    first: only the whole read proves the trailer is there)."""
    consistency = ""
    for kind, body in _sections(src):
        if kind == b"H":
            consistency = Header.from_json(body).consistency
        elif kind == b"F":
            yield Frame.from_json(body, consistency)


def _sections(src: BinaryIO) -> Iterator[tuple[bytes, Any]]:
    """(kind, decoded payload) of each section in order; the trailer last, checked against
    the digest of everything before it; nothing may follow it."""
    src.seek(0)
    digest = hashlib.sha256()
    start = _read(src, len(MAGIC) + 2, "the format version")
    if start[: len(MAGIC)] != MAGIC:
        raise ArchiveError("not a kv backup archive (bad magic)")
    version = int.from_bytes(start[len(MAGIC) :], "big")
    if version != FORMAT_VERSION:
        raise ArchiveError(
            f"archive format version {version} is not supported (this kvctl reads {FORMAT_VERSION})"
        )
    digest.update(start)
    expected = b"H"
    frames = records = 0
    while True:
        head = _read(src, _SECTION.size, "a section header")
        kind, length = _SECTION.unpack(head)
        if kind not in (b"H", b"F", b"T") or (kind == b"H") != (expected == b"H"):
            raise ArchiveError(f"unexpected section {kind!r} (damaged archive)")
        if length > MAX_SECTION_BYTES:
            raise ArchiveError(f"section length {length} is over the limit (damaged archive)")
        payload = _read(src, length, f"a {kind.decode(errors='replace')} section")
        if hashlib.sha256(payload).digest() != _read(src, _DIGEST_BYTES, "a checksum"):
            raise ArchiveError(f"checksum mismatch in a {kind.decode()} section (damaged)")
        body = _object(_decode(payload), kind.decode())
        if kind == b"T":
            if body.get("digest") != digest.hexdigest():
                raise ArchiveError("whole-archive digest mismatch (damaged archive)")
            if (body.get("frames"), body.get("records")) != (frames, records):
                raise ArchiveError(
                    f"trailer counts {body.get('frames')} frames, {body.get('records')} "
                    f"records; the archive holds {frames} frames, {records} records"
                )
            if src.read(1):
                raise ArchiveError("bytes after the trailer (damaged archive)")
            yield kind, body
            return
        digest.update(head + payload + hashlib.sha256(payload).digest())
        if kind == b"F":
            frames += 1
            found = body.get("records")
            records += len(found) if isinstance(found, list) else 0
        expected = b"F"
        yield kind, body


def _read(src: BinaryIO, size: int, what: str) -> bytes:
    data = src.read(size)
    if len(data) != size:
        raise ArchiveError(f"truncated archive: it ends inside {what}")
    return data


def _decode(payload: bytes) -> Any:
    try:
        return json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ArchiveError(f"a section is not UTF-8 JSON: {exc}") from None


def _object(d: Any, what: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ArchiveError(f"{what} must be a JSON object")
    return d


def _count(raw: Any, what: str) -> int:
    if type(raw) is not int or raw < 0:
        raise ArchiveError(f"{what} must be a non-negative integer, got {raw!r}")
    return raw


def _check_record(record: Any, consistency: str) -> None:
    if consistency == "linearizable":
        ok = (
            isinstance(record, list)
            and len(record) == 4
            and isinstance(record[0], str)
            and type(record[2]) is int
            and (record[3] is None or type(record[3]) is int)
        )
    else:
        ok = (
            isinstance(record, list)
            and len(record) == 2
            and isinstance(record[0], str)
            and isinstance(record[1], list)
            and all(isinstance(v, dict) for v in record[1])
        )
    if not ok:
        raise ArchiveError(f"a {consistency} record has the wrong shape: {str(record)[:80]}")
