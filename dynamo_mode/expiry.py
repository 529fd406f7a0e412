"""Key expiry (TTL) in eventual keyspaces (docs/ttl.md). Pure: `now` is a parameter.

A write with a time to live is minted with `expires_at = ts + ttl_ms` (the minting
replica's clock, `siblings.coordinate`), and the expiry travels with the version: every
copy — replication, read repair, hints, anti-entropy, transfers — carries it, and the
Merkle hash covers it (`Version.to_wire`).

Reads: a live version whose `expires_at` ≤ now (the coordinator's clock) is not shown
(`visible`); it still counts for causality — its dot is in the context a read returns, so
a write with that context supersedes it, like any version the reader was shown. A key
whose every live version has expired reads as absent (404 with a context, as a key whose
versions are all tombstones).

Purge: each replica turns the expired versions it stores into tombstones on its own clock
(`tombstones`), and the tombstone reaper purges those under its usual rules (every replica
holds the same tombstone-only set, after the grace: dynamo_mode/tombstones.py), so an
expired value never resurrects what it overwrote. The tombstone of version v is a function
of v alone — dot (`ttl:` + v's actor, v's counter), context v's context plus v's dot, ts
v's expiry — so replicas that expire v independently make the same version, and their
sets converge without any exchange. `ttl:` cannot begin a node id (kv/config.py ID_RE),
so such a dot never collides with one a replica mints.

Markers (the purge's index, kept by dynamo_mode/replica.py in the batch of each write):

    b"t" | earliest expires_at of the key's live versions (8 bytes BE) | storage key -> b""

Invariant: a stored key has exactly one marker iff one of its live versions has an
expiry, at the earliest such expiry; so a sweep reads only the markers already due.
"""

from __future__ import annotations

from collections.abc import Iterable

from dynamo_mode import siblings
from dynamo_mode.siblings import Version
from kv.storage import ReadView, WriteBatch

MARKER_PREFIX = b"t"
ACTOR_PREFIX = "ttl:"
_MS_BYTES = 8


def expired(version: Version, now_ms: int) -> bool:
    return not version.deleted and version.expires_at is not None and version.expires_at <= now_ms


def visible(versions: Iterable[Version], now_ms: int) -> tuple[Version, ...]:
    """The versions a read shows: live and not expired at `now_ms`."""
    return tuple(v for v in siblings.live(versions) if not expired(v, now_ms))


def tombstone_of(version: Version) -> Version:
    """The tombstone an expired `version` becomes: the same on every replica."""
    assert version.expires_at is not None and not version.deleted
    actor, counter = version.dot
    dots = (*version.context_dots, version.dot)
    return siblings.make_version(
        (ACTOR_PREFIX + actor, counter),
        version.context_clock(),
        None,
        True,
        dots,
        version.expires_at,
    )


def tombstones(versions: Iterable[Version], now_ms: int) -> tuple[Version, ...]:
    """The tombstones of every version of `versions` expired at `now_ms` (merge them in)."""
    return tuple(tombstone_of(v) for v in versions if expired(v, now_ms))


def next_expiry(versions: Iterable[Version]) -> int | None:
    """The earliest expiry of a live version; None if none expires."""
    stamps = [v.expires_at for v in siblings.live(versions) if v.expires_at is not None]
    return min(stamps, default=None)


def marker(storage_key: bytes, expires_at: int) -> bytes:
    return MARKER_PREFIX + expires_at.to_bytes(_MS_BYTES, "big") + storage_key


def remark(
    batch: WriteBatch, storage_key: bytes, before: Iterable[Version], after: Iterable[Version]
) -> None:
    """Keep the key's marker in step with a write that replaces `before` by `after`."""
    old, new = next_expiry(before), next_expiry(after)
    if old == new:
        return
    if old is not None:
        batch.delete(marker(storage_key, old))
    if new is not None:
        batch.put(marker(storage_key, new), b"")


def unmarked(found: bytes) -> WriteBatch:
    """The batch that drops marker `found` (one that names no expired version)."""
    batch = WriteBatch()
    batch.delete(found)
    return batch


def due(view: ReadView, now_ms: int, limit: int) -> list[tuple[bytes, bytes]]:
    """Up to `limit` (marker, storage key) pairs due at `now_ms`, earliest first."""
    stop = MARKER_PREFIX + (now_ms + 1).to_bytes(_MS_BYTES, "big")
    out = []
    for found, _ in view.iterate(MARKER_PREFIX, stop):
        out.append((found, found[len(MARKER_PREFIX) + _MS_BYTES :]))
        if len(out) >= limit:
            break
    return out
