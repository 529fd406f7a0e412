"""Where a linearizable partition's Raft group keeps its state, and the record format (pure).

The layout itself is documented in raft_groups/state_machine.py and
docs/raft_state_machine.md; this module holds the key builders and the record codec that
the state machine and its expiry (raft_groups/expiry.py) share.

A record is JSON `{"value": ..., "version": n}`, plus `"expires_at": ms` when the key has a
time to live (docs/ttl.md); records written before TTLs existed have none and never expire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kv import json_codec
from kv.storage import StorageError, prefix_end

MAX_PARTITION = 2**24 - 1  # group numbers: replication (8 bits) | partition (16 bits)
BOOKKEEPING = b"\0\0\0\0"  # uid 0: never a keyspace (commands.Command refuses it)


@dataclass(frozen=True)
class Record:
    value: Any
    version: int
    expires_at: int | None = None  # ms since the epoch; None: never expires


def group_prefix(partition: int) -> bytes:
    check_partition(partition)
    return b"l" + partition.to_bytes(3, "big")


def group_range(partition: int) -> tuple[bytes, bytes]:
    """[start, stop) of every key the group owns: data and bookkeeping (a snapshot's range)."""
    start = group_prefix(partition)
    stop = prefix_end(start)
    assert stop is not None  # b"l" is not 0xff, so the range is always bounded
    return start, stop


def data_key(partition: int, uid: int, key: str) -> bytes:
    return group_prefix(partition) + uid.to_bytes(4, "big") + key.encode()


def bookkeeping_key(partition: int, name: bytes) -> bytes:
    """A key of the group's own state. Invariant (snapshot install reads the applied
    index from the first record of a snapshot): every `name` sorts after b"applied"."""
    return group_prefix(partition) + BOOKKEEPING + name


def dump_record(record: Record) -> bytes:
    # a record's value passed kv.routing.check_value, which json_codec can always encode
    fields: dict[str, Any] = {"value": record.value, "version": record.version}
    if record.expires_at is not None:
        fields["expires_at"] = record.expires_at
    return json_codec.dumps(fields)


def load_record(raw: bytes, key: bytes) -> Record:
    fields = load_json(raw, f"record {key!r}")
    return Record(fields["value"], fields["version"], fields.get("expires_at"))


def load_json(raw: bytes, what: str) -> Any:
    # Stored bytes were written by this package; unreadable ones mean a corrupt store.
    try:
        return json_codec.loads(raw)
    except ValueError as exc:
        raise StorageError(f"corrupt {what}: {exc}") from None


def check_partition(partition: int) -> None:
    if type(partition) is not int or not 0 <= partition <= MAX_PARTITION:
        raise ValueError(f"partition must be in 0..{MAX_PARTITION}, got {partition!r}")
