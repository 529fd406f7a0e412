"""Stored versions of one key and their reconciliation, with dotted version vectors.

Pure: no I/O, no clocks, no randomness.

Each stored version carries a dot (the write event that created it) and the
causal context its writer had seen, *excluding* its own dot (Preguiça et al.,
"Dotted Version Vectors", 2010). Version a supersedes b iff a's context
contains b's dot. Two blind writes through the same coordinator get distinct
dots (n, 1) and (n, 2) with empty contexts, so neither supersedes the other and
both survive as siblings; a per-version vector clock would have made the second
falsely descend the first (the problem the DVV paper exposes in
Dynamo §4.4-style server clocks).

Invariants:
- a dot identifies one version: ``next_dot`` never reuses a dot while the
  node's local versions or the client's context remember it;
- a version's context never contains its own dot (checked on construction);
- a reconciled set is an antichain: no member obsoletes another;
- contexts are causally closed (a context containing a dot descends that
  version's context) as long as replicas exchange whole reconciled sets, never
  single versions: the coordinator replicates the second result of
  ``coordinate``, and read repair sends ``ReadQuorum.result()``. Under this,
  ``reconcile`` is associative.

Sibling cap policy (Riak-like): a write whose reconciled result would exceed
``max_siblings`` versions is refused with ``SiblingLimitExceeded``; nothing is
dropped silently. The client reads, resolves, and writes with the context.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dynamo_mode import vclock
from dynamo_mode.vclock import Dot, VClock

_WIRE_KEYS = frozenset({"dot", "context", "value", "deleted"})


class SiblingLimitExceeded(Exception):
    """The write would leave more than ``limit`` siblings; read, resolve, write with the context."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(
            f"write would leave {count} siblings, limit is {limit}: "
            "read, resolve and write back with the context"
        )
        self.count = count
        self.limit = limit


@dataclass(frozen=True)
class Version:
    dot: Dot
    context: tuple[tuple[str, int], ...]
    value: Any
    deleted: bool = False

    def __post_init__(self) -> None:
        _check_dot(self.dot)
        if not isinstance(self.context, tuple) or not isinstance(self.deleted, bool):
            raise ValueError("context must be a tuple of (node, counter) and deleted a bool")
        nodes = [node for node, _ in self.context]
        if nodes != sorted(set(nodes)):
            raise ValueError(f"context must be sorted by node without repeats: {self.context!r}")
        vclock.validated(dict(self.context))
        if vclock.contains(dict(self.context), self.dot):
            raise ValueError(
                f"context {dict(self.context)!r} contains the version's dot {self.dot!r}"
            )

    def __hash__(self) -> int:
        # Values may be unhashable JSON (lists, objects); equal versions have equal dots.
        return hash(self.dot)

    def context_clock(self) -> dict[str, int]:
        return dict(self.context)

    def to_wire(self) -> dict[str, Any]:
        return {
            "dot": [self.dot[0], self.dot[1]],
            "context": self.context_clock(),
            "value": self.value,
            "deleted": self.deleted,
        }

    @classmethod
    def from_wire(cls, d: object) -> Version:
        if not isinstance(d, Mapping):
            raise ValueError(f"version must be an object, got {type(d).__name__}")
        if set(d) != _WIRE_KEYS:
            raise ValueError(
                f"version keys must be {sorted(_WIRE_KEYS)}, got {sorted(map(str, d))}"
            )
        dot = d["dot"]
        if not isinstance(dot, list | tuple) or len(dot) != 2:
            raise ValueError(f"version dot must be [node, counter], got {dot!r}")
        if not isinstance(d["deleted"], bool):
            raise ValueError(f"version deleted must be a bool, got {d['deleted']!r}")
        context = vclock.validated(d["context"])
        return make_version((dot[0], dot[1]), context, d["value"], d["deleted"])


def make_version(dot: Dot, context: VClock, value: Any, deleted: bool = False) -> Version:
    return Version(dot, tuple(sorted(context.items())), value, deleted)


def obsoletes(a: Version, b: Version) -> bool:
    """a supersedes b: a's writer had seen b's write (DVV paper: dot in causal past)."""
    return a.dot != b.dot and vclock.contains(a.context_clock(), b.dot)


def reconcile(versions: Iterable[Version]) -> tuple[Version, ...]:
    """The antichain of versions not obsoleted by another, sorted by dot.

    Independent of input order and duplication. Since no context contains its
    own version's dot, v is obsoleted by another version iff v.dot is in the
    merge of all contexts.
    """
    unique = _dedupe(versions)
    past: dict[str, int] = {}
    for v in unique:
        past = vclock.merge(past, v.context_clock())
    return tuple(v for v in unique if not vclock.contains(past, v.dot))


def join_context(versions: Iterable[Version]) -> dict[str, int]:
    """The causal context handed to clients: every version's context and dot (Dynamo §4.4)."""
    out: dict[str, int] = {}
    for v in versions:
        out = vclock.add_dot(vclock.merge(out, v.context_clock()), v.dot)
    return out


def next_dot(local: Iterable[Version], node: str, context: VClock) -> Dot:
    """A fresh dot for a write coordinated by ``node``.

    Invariant: a dot is never reused by a node as long as its local versions or
    the client context remember its last one, because the counter exceeds every
    counter of ``node`` either of them knows (DVV paper, the server-side update).
    """
    highest = context.get(node, 0)
    for v in local:
        highest = max(highest, v.context_clock().get(node, 0))
        if v.dot[0] == node:
            highest = max(highest, v.dot[1])
    return (node, highest + 1)


def coordinate(
    local: Sequence[Version],
    node: str,
    context: VClock,
    value: Any,
    deleted: bool,
    max_siblings: int,
) -> tuple[Version, tuple[Version, ...]]:
    """A write at coordinator ``node``: the new version and the reconciled set to store and
    replicate (whole, see the module invariants). Raises SiblingLimitExceeded."""
    if max_siblings < 1:
        raise ValueError(f"max_siblings must be >= 1, got {max_siblings}")
    new = make_version(next_dot(local, node, context), context, value, deleted)
    merged = reconcile([*local, new])
    if len(merged) > max_siblings:
        raise SiblingLimitExceeded(len(merged), max_siblings)
    return new, merged


def live(versions: Iterable[Version]) -> tuple[Version, ...]:
    return tuple(v for v in versions if not v.deleted)


def is_tombstone_only(versions: Iterable[Version]) -> bool:
    """True iff there is at least one version and every one is a tombstone."""
    vs = tuple(versions)
    return bool(vs) and all(v.deleted for v in vs)


def same(a_versions: Iterable[Version], b_versions: Iterable[Version]) -> bool:
    """Equal as sets of dots (a dot identifies one version): no read repair needed."""
    return {v.dot for v in a_versions} == {v.dot for v in b_versions}


def _dedupe(versions: Iterable[Version]) -> list[Version]:
    """One version per dot, sorted by dot; among conflicting copies of a dot (only a bug
    can make them) the least canonical wire form wins, so the choice is order-independent."""
    by_dot: dict[Dot, list[Version]] = {}
    for v in versions:
        by_dot.setdefault(v.dot, []).append(v)
    return [_canonical_choice(copies) for _, copies in sorted(by_dot.items())]


def _canonical_choice(copies: list[Version]) -> Version:
    if len(copies) == 1:
        return copies[0]
    return min(copies, key=_canonical_json)


def _canonical_json(v: Version) -> str:
    return json.dumps(v.to_wire(), sort_keys=True, separators=(",", ":"))


def _check_dot(dot: object) -> None:
    if (
        not isinstance(dot, tuple)
        or len(dot) != 2
        or not isinstance(dot[0], str)
        or isinstance(dot[1], bool)
        or not isinstance(dot[1], int)
        or dot[1] < 1
    ):
        raise ValueError(f"dot must be (node: str, counter: int >= 1), got {dot!r}")
