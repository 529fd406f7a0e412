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
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from dynamo_mode import siblings
from dynamo_mode.siblings import Version
from dynamo_mode.vclock import Dot


class Conflict(ValueError):
    """The key's siblings cannot become one value under the policy."""


ABSENT: tuple[bool, Any] = (False, None)


def resolve(versions: Iterable[Version], policy: str) -> tuple[bool, Any]:
    """(present, value) of a key's merged versions under `policy`; Conflict if none."""
    merged = siblings.reconcile(versions)
    if not merged:
        return ABSENT
    if len(merged) == 1:
        only = merged[0]
        return ABSENT if only.deleted else (True, only.value)
    if policy == "merge-json-list":
        return _merge_lists([v.value for v in merged if not v.deleted], len(merged))
    if policy == "lww":
        latest = max(merged, key=lambda v: (v.ts, v.dot))
        return ABSENT if latest.deleted else (True, latest.value)
    raise Conflict(f"{len(merged)} siblings and policy {policy!r}")


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


def written_back(seen: Sequence[Version], present: bool, value: Any, dot: Dot) -> Version | None:
    """The version a cancelled switch writes back for a key (docs/mode_switch.md "Cancel"):
    the Raft group's final state — `value` if `present`, else a tombstone — with dot `dot`
    and a context holding every version the members had (`seen`), so it supersedes them;
    None when the copies already say exactly that (one live version of `value`, or nothing
    live when the key is absent).

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
    if present and len(merged) == 1 and live and _canonical(live[0].value) == _canonical(value):
        return None
    clock, dots = siblings.join_full(seen)
    return siblings.make_version(dot, clock, value if present else None, not present, dots)
