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

Sibling bytes policy (issue 11 item 6: every stored key stays replicable): a write whose
reconciled result, as the minting replica stores it (``encode_versions``: values, clocks,
tombstones), would exceed ``MAX_SIBLING_BYTES`` is refused with ``SiblingBytesExceeded``
(``admit_bytes``); again nothing is truncated. Unlike the count cap it is strict: a write
that resolves some siblings but leaves the set over the limit is refused too; a write with
the context of a full read leaves one version, which always fits.

Invariant (the internode frame cap, kv/wire.py ``MAX_PAYLOAD``, relies on it): only a mint
is ever refused. A merge — ``store`` from a write's replication, read repair,
anti-entropy, hinted handoff, a partition transfer — never is, so no replica refuses a
version another replica accepted and the limit never stops convergence. A merged set can
be larger than one replica's mint allowed (concurrent mints on different replicas), but
it is bounded: every version still unresolved that actor A minted was in A's set right
after A's latest mint (a version leaves a set only when superseded, and supersession is
permanent), so each actor's unresolved versions total at most ``MAX_SIBLING_BYTES``, and a
key's set is at most (actors with unresolved versions) × ``MAX_SIBLING_BYTES``. Only
primaries mint (dynamo_mode/coordinator.py ``_mint``), so on a ring that stands still that
is N ≤ 7 actors (kv/keyspace.py MAX_REPLICATION); a membership plan that moves the key's
replicas, or a primary whose store was wiped (a new actor, ``replica.local_actor``), can
add actors until their versions are resolved.
tests/property/test_sibling_bytes_properties.py checks the bound on random histories.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dynamo_mode import canonical, vclock
from dynamo_mode.vclock import Dot, VClock

_WIRE_KEYS = frozenset({"dot", "context", "value", "deleted"})
_OPTIONAL_WIRE_KEYS = frozenset({"dots", "ts", "expires_at"})


class SiblingLimitExceeded(Exception):
    """The write would leave more than ``limit`` siblings; read, resolve, write with the context."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(
            f"write would leave {count} siblings, limit is {limit}: "
            "read, resolve and write back with the context"
        )
        self.count = count
        self.limit = limit


# 4 MiB: four values at the 1 MiB value limit (kv/routing.py MAX_VALUE_BYTES); the 64 MiB
# internode frame (kv/wire.py MAX_PAYLOAD) holds 16 actors' worth with room for the
# envelope, over twice the 7 of a stable ring (the module invariant). A constant, not a
# keyspace setting: the frame cap it protects is the same for every keyspace.
MAX_SIBLING_BYTES = 4 << 20


class SiblingBytesExceeded(Exception):
    """The write would leave a sibling set of ``size`` encoded bytes, over ``limit``."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"write would leave siblings of {size} bytes, limit is {limit}: "
            "read, resolve and write back with the context"
        )
        self.size = size
        self.limit = limit


@dataclass(frozen=True)
class Version:
    dot: Dot
    context: tuple[tuple[str, int], ...]
    value: Any
    deleted: bool = False
    # extra dots of the causal past not covered by `context` (vclock module docstring)
    context_dots: tuple[Dot, ...] = ()
    # the minting replica's wall clock, ms since the epoch (0: not recorded). Informational:
    # causality never looks at it; only the `lww` policy of a switch does (switch_policy)
    ts: int = 0
    # when a live version expires, ms since the epoch (None: never): a read no longer shows
    # it from then on, and each replica turns it into a tombstone (dynamo_mode/expiry.py)
    expires_at: int | None = None

    def __post_init__(self) -> None:
        _check_dot(self.dot)
        for d in self.context_dots:
            _check_dot(d)
        if vclock.compact(dict(self.context), self.context_dots)[1] != self.context_dots:
            raise ValueError(f"context dots must be compact and sorted: {self.context_dots!r}")
        if self.dot in self.context_dots:
            raise ValueError(f"context dots contain the version's dot {self.dot!r}")
        if type(self.ts) is not int or self.ts < 0:
            raise ValueError(f"version ts must be a non-negative integer, got {self.ts!r}")
        _check_expiry(self.expires_at, self.deleted)
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

    def covers(self, dot: Dot) -> bool:
        """This version's writer had seen `dot`."""
        return vclock.covers(dict(self.context), self.context_dots, dot)

    def to_wire(self) -> dict[str, Any]:
        out = {
            "dot": [self.dot[0], self.dot[1]],
            "context": self.context_clock(),
            "value": self.value,
            "deleted": self.deleted,
        }
        if self.context_dots:
            out["dots"] = [[n, c] for n, c in self.context_dots]
        if self.ts:
            out["ts"] = self.ts
        if self.expires_at is not None:
            out["expires_at"] = self.expires_at
        return out

    @classmethod
    def from_wire(cls, d: object) -> Version:
        if not isinstance(d, Mapping):
            raise ValueError(f"version must be an object, got {type(d).__name__}")
        if set(d) - _OPTIONAL_WIRE_KEYS != _WIRE_KEYS:
            raise ValueError(
                f"version keys must be {sorted(_WIRE_KEYS)}, got {sorted(map(str, d))}"
            )
        dot = d["dot"]
        if not isinstance(dot, list | tuple) or len(dot) != 2:
            raise ValueError(f"version dot must be [node, counter], got {dot!r}")
        dot = (dot[0], dot[1])
        _check_dot(dot)
        deleted = d["deleted"]
        if not isinstance(deleted, bool):
            raise ValueError(f"version deleted must be a bool, got {deleted!r}")
        clock, extra = vclock.compact(
            vclock.validated(d["context"]), vclock.validated_dots(d.get("dots", []))
        )
        if len(clock) > vclock.MAX_CONTEXT_ENTRIES:
            raise ValueError(f"context has {len(clock)} entries with its dots folded in")
        if dot in extra or vclock.contains(clock, dot):
            raise ValueError(
                f"context {clock!r} {list(extra)!r} contains the version's dot {dot!r}"
            )
        ts = d.get("ts", 0)
        if type(ts) is not int or ts < 0:
            raise ValueError(f"version ts must be a non-negative integer, got {ts!r}")
        expires = d.get("expires_at")
        _check_expiry(expires, deleted)
        # every check of __post_init__ is made above (the clock and dots are compact and
        # sorted by construction), so the version is built without repeating them
        context = tuple(sorted(clock.items()))
        return cls._built(dot, context, d["value"], deleted, extra, ts, expires)

    @classmethod
    def from_storage(cls, d: Mapping[str, Any]) -> Version:
        """A version this node's store holds: `from_wire` checked it before it was written
        (and LevelDB checksums its blocks), so it is rebuilt without `__post_init__`'s
        checks — decoding and checking every stored version again on each local read was a
        measured share of an eventual GET's CPU (docs/benchmarks.md)."""
        dot, dots = d["dot"], d.get("dots")
        return cls._built(
            (dot[0], dot[1]),
            tuple(sorted(d["context"].items())),
            d["value"],
            d["deleted"],
            tuple((n, c) for n, c in dots or ()),
            d.get("ts", 0),
            d.get("expires_at"),
        )

    @classmethod
    def _built(
        cls,
        dot: Dot,
        context: tuple[tuple[str, int], ...],
        value: Any,
        deleted: bool,
        context_dots: tuple[Dot, ...],
        ts: int,
        expires_at: int | None,
    ) -> Version:
        """A version whose fields are known to pass `__post_init__`, built without it."""
        version = object.__new__(cls)
        object.__setattr__(version, "dot", dot)
        object.__setattr__(version, "context", context)
        object.__setattr__(version, "value", value)
        object.__setattr__(version, "deleted", deleted)
        object.__setattr__(version, "context_dots", context_dots)
        object.__setattr__(version, "ts", ts)
        object.__setattr__(version, "expires_at", expires_at)
        return version


def make_version(
    dot: Dot,
    context: VClock,
    value: Any,
    deleted: bool = False,
    context_dots: Iterable[Dot] = (),
    ts: int = 0,
    expires_at: int | None = None,
) -> Version:
    clock, extra = vclock.compact(context, context_dots)
    return Version(dot, tuple(sorted(clock.items())), value, deleted, extra, ts, expires_at)


def obsoletes(a: Version, b: Version) -> bool:
    """a supersedes b: a's writer had seen b's write (DVV paper: dot in causal past)."""
    return a.dot != b.dot and a.covers(b.dot)


def reconcile(versions: Iterable[Version]) -> tuple[Version, ...]:
    """The antichain of versions not obsoleted by another, sorted by dot.

    Independent of input order and duplication. Since no context contains its
    own version's dot, v is obsoleted by another version iff v.dot is in the
    merge of all contexts.
    """
    unique = _dedupe(versions)
    past: dict[str, int] = {}
    past_dots: set[Dot] = set()
    for v in unique:
        past = vclock.merge(past, v.context_clock())
        past_dots.update(v.context_dots)
    return tuple(v for v in unique if not vclock.covers(past, past_dots, v.dot))


def join_context(versions: Iterable[Version]) -> dict[str, int]:
    """The causal context handed to clients as a plain clock (every version's context and
    dot, Dynamo §4.4). Prefer `join_full`, which never claims a gap below a dot."""
    out: dict[str, int] = {}
    for v in versions:
        out = vclock.add_dot(vclock.merge(out, v.context_clock()), v.dot)
        for d in v.context_dots:
            out = vclock.add_dot(out, d)
    return out


def join_full(versions: Iterable[Version]) -> tuple[dict[str, int], tuple[Dot, ...]]:
    """Exactly the dots the versions' writers had seen plus the versions' own dots, as a
    compact causal context (clock + extra dots)."""
    clock: dict[str, int] = {}
    dots: set[Dot] = set()
    for v in versions:
        clock = vclock.merge(clock, v.context_clock())
        dots.update(v.context_dots)
        dots.add(v.dot)
    return vclock.compact(clock, dots)


def next_dot(
    local: Iterable[Version], node: str, context: VClock, context_dots: Iterable[Dot] = ()
) -> Dot:
    """A fresh dot for a write coordinated by ``node``.

    Invariant: a dot is never reused by a node as long as its local versions or
    the client context remember its last one, because the counter exceeds every
    counter of ``node`` either of them knows (DVV paper, the server-side update).
    """
    highest = max([context.get(node, 0), *(n for nd, n in context_dots if nd == node)])
    for v in local:
        highest = max(highest, v.context_clock().get(node, 0))
        for d in (v.dot, *v.context_dots):
            if d[0] == node:
                highest = max(highest, d[1])
    return (node, highest + 1)


def coordinate(
    local: Sequence[Version],
    node: str,
    context: VClock,
    value: Any,
    deleted: bool,
    max_siblings: int,
    context_dots: Iterable[Dot] = (),
    ts: int = 0,
    ttl_ms: int | None = None,
) -> tuple[Version, tuple[Version, ...]]:
    """A write at coordinator ``node`` at wall-clock time ``ts`` (ms): the new version and the
    reconciled set to store and replicate (whole, see the module invariants). With
    ``ttl_ms`` the version expires at ``ts + ttl_ms`` (docs/ttl.md). Raises
    SiblingLimitExceeded when the write would leave more than ``max_siblings`` versions AND
    more than there were (a write that resolves some siblings is never refused)."""
    if max_siblings < 1:
        raise ValueError(f"max_siblings must be >= 1, got {max_siblings}")
    dots = tuple(context_dots)
    dot = next_dot(local, node, context, dots)
    expires = None if ttl_ms is None else ts + ttl_ms
    new = make_version(dot, context, value, deleted, dots, ts, expires)
    merged = reconcile([*local, new])
    if len(merged) > max_siblings and len(merged) > len(reconcile(local)):
        raise SiblingLimitExceeded(len(merged), max_siblings)
    return new, merged


def admit_bytes(size: int, limit: int = MAX_SIBLING_BYTES) -> None:
    """Refuse (``SiblingBytesExceeded``) a mint whose stored set would be ``size`` encoded
    bytes, over ``limit``. Strict, whatever the set held before: the module invariant's
    bound on merged sets depends on it. Only mints are checked, never merges."""
    if size > limit:
        raise SiblingBytesExceeded(size, limit)


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
    return min(copies, key=canonical.canonical_form)


def _check_expiry(expires_at: object, deleted: bool) -> None:
    if expires_at is None:
        return
    if type(expires_at) is not int or expires_at < 1:
        raise ValueError(f"version expires_at must be a positive integer, got {expires_at!r}")
    if deleted:
        raise ValueError("a tombstone has no expires_at")


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
