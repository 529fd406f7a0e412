"""What an eventual key becomes when its keyspace switches to linearizable (issue 12,
docs/mode_switch.md): one value, or absent; and the version a cancelled switch writes back
(`written_back`). Pure.

The versions of every member are merged first (`siblings.reconcile`, the same CRDT merge
as replication), so a version some member has seen superseded is gone. Then:

- one version left: its value — or absent, if it is a tombstone;
- several (siblings: concurrent writes, a tombstone among them too) — the policy decides:
  `refuse`: the key is a conflict (the switch stops, listing such keys);
  `merge-json-list`: the union of the live values when every one is a JSON list (in the
  order of first appearance, each distinct element once; tombstones add nothing), else a
  conflict; `lww`: the sibling with the latest write time (`Version.ts`, the minting
  replica's wall clock), ties and versions written before write times were recorded (ts 0)
  broken by the larger dot — the same choice on every node. A tombstone chosen: absent.
  Write times come from different nodes' clocks: under clock skew `lww` may keep a write
  that was in fact earlier (as in Cassandra and Riak's LWW); it never keeps a version some
  member has seen superseded (the merge comes first).

Expiry (docs/ttl.md, `resolve_expiring`): versions expired at the migrator's clock are
left out first, as a read leaves them out; the value kept keeps its expiry — the chosen
version's, or for a merged list the latest expiry of the versions merged (none if one of
them never expires) — and the Raft group expires it from then on. A TTL is neither lost
nor extended by a switch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from dynamo_mode import expiry, siblings
from dynamo_mode.siblings import Version
from dynamo_mode.vclock import Dot


class Conflict(ValueError):
    """The key's siblings cannot become one value under the policy."""


ABSENT: tuple[bool, Any] = (False, None)


def resolve(versions: Iterable[Version], policy: str) -> tuple[bool, Any]:
    """(present, value) of a key's merged versions under `policy`; Conflict if none."""
    present, value, _ = resolve_expiring(versions, policy, None)
    return present, value


def resolve_expiring(
    versions: Iterable[Version], policy: str, now_ms: int | None
) -> tuple[bool, Any, int | None]:
    """(present, value, expires_at) of a key's merged versions under `policy`, those expired
    at `now_ms` left out (None: none are); Conflict if none."""
    merged = siblings.reconcile(versions)
    if now_ms is not None:
        merged = tuple(v for v in merged if not expiry.expired(v, now_ms))
    if not merged:
        return (*ABSENT, None)
    if len(merged) == 1:
        return _kept(merged[0])
    if policy == "merge-json-list":
        live = [v for v in merged if not v.deleted]
        present, value = _merge_lists([v.value for v in live], len(merged))
        stamps = [v.expires_at for v in live]
        last = None if None in stamps or not stamps else max(s for s in stamps if s is not None)
        return present, value, last
    if policy == "lww":
        return _kept(max(merged, key=lambda v: (v.ts, v.dot)))
    raise Conflict(f"{len(merged)} siblings and policy {policy!r}")


def _kept(version: Version) -> tuple[bool, Any, int | None]:
    return (*ABSENT, None) if version.deleted else (True, version.value, version.expires_at)


def _merge_lists(values: list[Any], count: int) -> tuple[bool, Any]:
    if not values:
        return ABSENT  # concurrent deletes only
    if not all(isinstance(v, list) for v in values):
        raise Conflict(f"{count} siblings, not all JSON lists (merge-json-list)")
    seen: set[str] = set()
    union: list[Any] = []
    for value in sorted(values, key=_canonical):  # the same order on every node
        for item in value:
            text = _canonical(item)
            if text not in seen:
                seen.add(text)
                union.append(item)
    return True, union


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def written_back(
    seen: Sequence[Version], present: bool, value: Any, dot: Dot, expires_at: int | None = None
) -> Version | None:
    """The version a cancelled switch writes back for a key (docs/mode_switch.md "Cancel"):
    the Raft group's final state — `value` (expiring at `expires_at`, docs/ttl.md) if
    `present`, else a tombstone — with dot `dot` and a context holding every version the
    members had (`seen`), so it supersedes them; None when the copies already say exactly
    that (one live version of `value` with that expiry, or nothing live when the key is
    absent).

    Invariant: one dot, one version. If `seen` holds a version with `dot` already (an
    earlier attempt, or another member driving the same partition), that very version is
    returned: recomputed after it superseded some copies, its context could be smaller."""
    for version in seen:
        if version.dot == dot:
            return version
    merged = siblings.reconcile(seen)
    live = [v for v in merged if not v.deleted]
    if not present and not live:
        return None
    if present and len(merged) == 1 and live and _same(live[0], value, expires_at):
        return None
    clock, dots = siblings.join_full(seen)
    expires = expires_at if present else None
    return siblings.make_version(
        dot, clock, value if present else None, not present, dots, 0, expires
    )


def _same(version: Version, value: Any, expires_at: int | None) -> bool:
    return _canonical(version.value) == _canonical(value) and version.expires_at == expires_at
