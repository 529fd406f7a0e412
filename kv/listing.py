"""Key listing, `GET /v1/keyspaces/{ks}/keys?prefix=&after=&limit=` (docs/listing.md). Pure.

Keys are hashed into partitions, so a page in key order is a k-way merge: each partition
contributes a `Slice` — its keys with `prefix` after `after`, in order, up to `limit` — and
`merge` keeps the keys every slice is complete for (up to the smallest `bound`), in order,
the first `limit` of them, with the cursor to continue from.

Order: Python's `str` order, which for the valid UTF-8 keys the API accepts (no lone
surrogates) is the byte order of their UTF-8 encoding — the storage order of both modes.

    ListRequest ──▶ mode frontend: one Slice per partition ──▶ merge ──▶ Page(keys, next)
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from kv.errors import InvalidRequest, NotReady
from kv.internode import array, obj, text
from kv.keyspace import KeyspaceConfig
from kv.meta import Metadata
from kv.routing import MAX_KEY_BYTES, Route, place_partition, serving

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


@dataclass(frozen=True)
class ListRequest:
    keyspace: KeyspaceConfig  # the configuration requests are routed by (routing.serving)
    routes: tuple[Route, ...]  # one per partition, in partition order
    prefix: str
    after: str | None
    limit: int
    timeout_s: float
    guard: bool = False  # switching to linearizable: partitions must be migrated first

    def following(self, after: str, limit: int) -> ListRequest:
        """The same listing continued after `after` (the service's next round)."""
        return ListRequest(
            self.keyspace, self.routes, self.prefix, after, limit, self.timeout_s, self.guard
        )


@dataclass(frozen=True)
class Slice:
    """One partition's part of a page: its listed keys in order, complete for every key up
    to `bound` (the last key its scan examined); `bound` None: the partition is exhausted."""

    keys: tuple[str, ...]
    bound: str | None

    def to_wire(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "bound": self.bound}

    @staticmethod
    def from_wire(raw: Any) -> Slice:
        d = obj(raw)
        keys = array(d.get("keys"), "keys")
        bound = d.get("bound")
        return Slice(
            tuple(text(k, "key") for k in keys), None if bound is None else text(bound, "bound")
        )


@dataclass(frozen=True)
class Page:
    keys: tuple[str, ...]
    next: str | None  # pass as `after` for the rest; None: there is no more

    def to_wire(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "next": self.next}


def list_request(
    md: Metadata, name: str, prefix: str, after: str | None, limit: int | None, timeout_s: float
) -> ListRequest:
    """Validate the query and route it: every partition of the keyspace's serving mode."""
    ks, guard, source = serving(md, name)
    record = md.switch(name)
    if source is not None or (record is not None and record.cancelling):
        # its keys are on both sides until the copy (or the way back) is done
        raise NotReady(
            f"keyspace {name!r} is switching to eventual: listing resumes when it is done",
            retry_after=1.0,
        )
    check_text("prefix", prefix)
    if after is not None:
        check_text("after", after)
    if limit is None:
        limit = DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest("limit", f"must be between 1 and {MAX_LIMIT}, got {limit}")
    routes = tuple(place_partition(md, ks, p) for p in range(md.partitions))
    return ListRequest(ks, routes, prefix, after or None, limit, timeout_s, guard)


def check_text(field: str, value: str) -> None:
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise InvalidRequest(field, "must be valid UTF-8 text") from None
    if size > MAX_KEY_BYTES:
        raise InvalidRequest(field, f"must be at most {MAX_KEY_BYTES} bytes, got {size}")


def scan_range(prefix: str, after: str | None) -> tuple[bytes, bytes | None] | None:
    """[start, stop) of the encoded keys a slice scans, relative to its keyspace's storage
    prefix (stop None: to the end of the keyspace); None when the range is empty."""
    low = prefix.encode()
    start = low if after is None else max(low, after.encode() + b"\0")
    stop = _successor(low)
    if stop is not None and start >= stop:
        return None
    return start, stop


def _successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with `prefix`."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def matches(key: str, prefix: str, after: str | None) -> bool:
    return key.startswith(prefix) and (after is None or key > after)


def merge(slices: list[Slice], limit: int) -> Page:
    """The first `limit` keys of all slices in order, among those every slice is complete
    for; `next` is the last key listed when the page is full, else the smallest bound (a
    page may then hold fewer than `limit` keys: the caller continues from it)."""
    bounds = [s.bound for s in slices if s.bound is not None]
    bound = min(bounds) if bounds else None
    merged = heapq.merge(*(s.keys for s in slices))
    keys: list[str] = []
    for key in merged:
        if bound is not None and key > bound:
            break
        if keys and keys[-1] == key:  # a key in two slices (a move's old and new owner)
            continue
        if len(keys) == limit:
            return Page(tuple(keys), keys[-1])
        keys.append(key)
    return Page(tuple(keys), bound)
