"""The backup archive format (kvctl/archive.py): a round trip, and every kind of damage
refused before a frame is acted on."""

from __future__ import annotations

import hashlib
import io
import struct

import pytest

from kvctl import archive
from kvctl.archive import ArchiveError, Frame, Header

HEADER = Header("carts", "linearizable", {"consistency": "linearizable", "replication": 3}, 8, 1)
FRAMES = [
    Frame(0, 17, [["a", {"x": [1, 2]}, 3, None], ["b", "é", 1, 1_800_000_000_000]]),
    Frame(1, 4, []),
    Frame(5, 9, [["z", None, 2, None]]),
]


def _archive(header: Header = HEADER, frames: list[Frame] = FRAMES) -> bytes:
    out = io.BytesIO()
    writer = archive.Writer(out, header)
    for frame in frames:
        writer.frame(frame)
    writer.close()
    return out.getvalue()


def _refused(data: bytes, match: str | None = None) -> None:
    with pytest.raises(ArchiveError, match=match):
        archive.verify(io.BytesIO(data))
    with pytest.raises(ArchiveError):
        list(archive.frames(io.BytesIO(data)))


def test_round_trip() -> None:
    data = _archive()
    summary = archive.verify(io.BytesIO(data))
    assert summary == archive.Summary(HEADER, 3, 3)
    assert list(archive.frames(io.BytesIO(data))) == FRAMES


def test_eventual_round_trip() -> None:
    versions = [{"dot": ["n1", 1], "context": {}, "value": 1, "deleted": False}]
    header = Header("c", "eventual", {"consistency": "eventual"}, 4, 5)
    data = _archive(header, [Frame(2, None, [["k", versions]])])
    assert archive.verify(io.BytesIO(data)).records == 1
    assert list(archive.frames(io.BytesIO(data)))[0].records == [["k", versions]]


def test_an_empty_keyspace_round_trips() -> None:
    assert archive.verify(io.BytesIO(_archive(frames=[]))).frames == 0


def test_every_flipped_byte_is_refused() -> None:
    data = _archive()
    for at in range(len(data)):
        damaged = bytearray(data)
        damaged[at] ^= 0x01
        _refused(bytes(damaged))


def test_every_truncation_is_refused() -> None:
    data = _archive()
    for size in range(len(data)):
        _refused(data[:size])


def test_bytes_appended_are_refused() -> None:
    _refused(_archive() + b"\0", "after the trailer")


def test_another_format_version_is_refused_clearly() -> None:
    data = bytearray(_archive())
    data[8:10] = (2).to_bytes(2, "big")
    _refused(bytes(data), "format version 2 is not supported")


def test_not_an_archive() -> None:
    _refused(b"PK\x03\x04 a zip file", "not a kv backup archive")


def _sections(data: bytes) -> list[bytes]:
    out, at = [], 10
    while at < len(data):
        _kind, length = struct.unpack(">cI", data[at : at + 5])
        out.append(data[at : at + 5 + length + 32])
        at += 5 + length + 32
    return out


def test_a_frame_dropped_repeated_or_moved_is_refused() -> None:
    data = _archive()
    head, *sections = _sections(data)
    start = data[:10]
    header, f0, f1, f2, trailer = head, *sections
    _refused(start + header + f0 + f2 + trailer, "digest")  # dropped
    _refused(start + header + f0 + f1 + f1 + f2 + trailer, "digest")  # repeated
    _refused(start + header + f1 + f0 + f2 + trailer, "digest")  # reordered
    _refused(start + f0 + header + f1 + f2 + trailer, "unexpected section")


def _section(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">cI", kind, len(payload)) + payload + hashlib.sha256(payload).digest()


def test_a_trailer_rebuilt_with_wrong_counts_is_refused() -> None:
    """A trailer with a valid checksum and digest whose counts do not match."""
    data = _archive()
    body = data[: len(data) - len(_sections(data)[-1])]
    digest = hashlib.sha256(body).hexdigest()
    payload = archive.encode({"frames": 2, "records": 3, "digest": digest})
    _refused(body + _section(b"T", payload), "trailer counts")


def test_a_missing_trailer_is_refused() -> None:
    data = _archive()
    _refused(data[: len(data) - len(_sections(data)[-1])], "truncated")


def test_a_record_of_the_wrong_shape_is_refused() -> None:
    _refused(_archive(frames=[Frame(0, 1, [["k", "v"]])]), "wrong shape")
