"""The eventual mode's internode operations: typed requests and replies (pure).

Each `Operation` (kv/internode.py) is served by dynamo_mode/replica_server.py (replica
operations, anti-entropy queries) or dynamo_mode/gossip.py (push-pull rounds). Every
`from_wire` validates what a peer sent and raises ValueError naming the field.

    op            request           reply         what
    fetch         KeyRequest        Versions      the replica's versions of a key
    store         StoreRequest      Stored        merge versions in (CRDT join), acknowledge
    hint          HintRequest       Stored        keep versions for `owner` (Dynamo §4.6)
    purge         PurgeRequest      Purged        drop a tombstone-only key with exactly `dots`
    coordinate    CoordinateRequest Coordinated   mint a dot here and store (DVV; Dynamo §4.4)
    ae_query      TreeQuery         TreeAnswer    one step of a Merkle walk (Dynamo §4.7)
    gossip        GossipDigest      GossipDigest  push-pull heartbeat versions

The scans of whole partitions (part_scan, part_digest, key_list, switch_scan) are in
dynamo_mode/scan_messages.py.

`store`, `hint` and `coordinate` carry the keyspace's `durability` ("process" or "fsync",
kv/keyspace.py; on the wire only when "fsync"): with "fsync" the replica answers once the
write is on disk (dynamo_mode/replica_server.py).

Wire form of tree queries: {"t": "h", "level": L, "indexes": [...]} → ["<b64 hash>", ...];
{"t": "b", "buckets": [...]} → [{"<b64 key>": "<b64 hash>"}, ...].
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from dynamo_mode import membership, merkle_diff, vclock
from dynamo_mode.replica import KeyRef, decode_versions
from dynamo_mode.siblings import Version
from dynamo_mode.vclock import Dot
from kv.internode import Operation, array, integer, obj, text
from kv.keyspace import DURABILITIES, PROCESS
from kv.routing import MAX_TTL_S


def _with_durability(out: dict[str, Any], durability: str) -> dict[str, Any]:
    if durability != PROCESS:
        out["durability"] = durability
    return out


def _durability(d: dict[str, Any]) -> str:
    value = d.get("durability", PROCESS)
    if value not in DURABILITIES:
        raise ValueError(f"durability: must be one of {DURABILITIES}, got {value!r}")
    return str(value)


def versions_wire(versions: tuple[Version, ...]) -> list[dict[str, Any]]:
    return [v.to_wire() for v in versions]


@dataclass(frozen=True)
class KeyRequest:
    ref: KeyRef

    def to_wire(self) -> dict[str, Any]:
        return {"ref": self.ref.to_wire()}

    @staticmethod
    def from_wire(raw: Any) -> KeyRequest:
        return KeyRequest(KeyRef.from_wire(obj(raw).get("ref")))


@dataclass(frozen=True)
class Versions:
    versions: tuple[Version, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"versions": versions_wire(self.versions)}

    @staticmethod
    def from_wire(raw: Any) -> Versions:
        return Versions(decode_versions(obj(raw).get("versions")))


@dataclass(frozen=True)
class Stored:
    """A replica's acknowledgement of STORE or HINT: the versions are merged into what it
    stores (and on disk if the request asked for fsync). It carries nothing: no caller reads
    the merged set back, and encoding it, sending it and validating it again on the way back
    cost a write a share of its CPU that grows with the key's siblings (docs/benchmarks.md)."""

    def to_wire(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def from_wire(raw: Any) -> Stored:
        obj(raw)
        return Stored()


@dataclass(frozen=True)
class StoreRequest:
    ref: KeyRef
    versions: tuple[Version, ...]
    durability: str = PROCESS
    # written by a cancelled switch's way back (kv/node_switch.py): passes the fence of a
    # partition that is not back yet — it is what the partition will serve once back
    switch_copy: bool = False

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ref": self.ref.to_wire(), "versions": versions_wire(self.versions)}
        if self.switch_copy:
            out["switch_copy"] = True
        return _with_durability(out, self.durability)

    @staticmethod
    def from_wire(raw: Any) -> StoreRequest:
        d = obj(raw)
        ref, versions = KeyRef.from_wire(d.get("ref")), decode_versions(d.get("versions"))
        copy = d.get("switch_copy", False)
        if type(copy) is not bool:
            raise ValueError(f"switch_copy: must be a boolean, got {copy!r}")
        return StoreRequest(ref, versions, _durability(d), copy)


@dataclass(frozen=True)
class HintRequest:
    owner: str  # the primary the versions are kept for
    ref: KeyRef
    versions: tuple[Version, ...]
    durability: str = PROCESS

    def to_wire(self) -> dict[str, Any]:
        out = {
            "owner": self.owner,
            "ref": self.ref.to_wire(),
            "versions": versions_wire(self.versions),
        }
        return _with_durability(out, self.durability)

    @staticmethod
    def from_wire(raw: Any) -> HintRequest:
        d = obj(raw)
        owner = text(d.get("owner"), "owner")
        ref, versions = KeyRef.from_wire(d.get("ref")), decode_versions(d.get("versions"))
        return HintRequest(owner, ref, versions, _durability(d))


@dataclass(frozen=True)
class PurgeRequest:
    ref: KeyRef
    dots: frozenset[Dot]

    def to_wire(self) -> dict[str, Any]:
        return {"ref": self.ref.to_wire(), "dots": [[n, c] for n, c in sorted(self.dots)]}

    @staticmethod
    def from_wire(raw: Any) -> PurgeRequest:
        d = obj(raw)
        dots = frozenset(vclock.validated_dots(d.get("dots", [])))
        return PurgeRequest(KeyRef.from_wire(d.get("ref")), dots)


@dataclass(frozen=True)
class Purged:
    purged: bool

    def to_wire(self) -> dict[str, Any]:
        return {"purged": self.purged}

    @staticmethod
    def from_wire(raw: Any) -> Purged:
        return Purged(bool(obj(raw).get("purged")))


@dataclass(frozen=True)
class CoordinateRequest:
    """Mint a new version at the receiving replica: `context` and `dots` are what the client
    has seen (vclock docstring), `value`/`deleted` the write, `ttl_ms` its TTL (docs/ttl.md)."""

    ref: KeyRef
    context: dict[str, int]
    dots: tuple[Dot, ...]
    value: Any
    deleted: bool
    max_siblings: int
    durability: str = PROCESS
    ttl_ms: int | None = None

    def to_wire(self) -> dict[str, Any]:
        out = {
            "ref": self.ref.to_wire(),
            "context": self.context,
            "dots": [[n, c] for n, c in self.dots],
            "value": self.value,
            "deleted": self.deleted,
            "max_siblings": self.max_siblings,
            "ttl_ms": self.ttl_ms,
        }
        return _with_durability(out, self.durability)

    @staticmethod
    def from_wire(raw: Any) -> CoordinateRequest:
        d = obj(raw)
        ttl = d.get("ttl_ms")
        if ttl is not None and d.get("deleted"):
            raise ValueError("ttl_ms: a delete has no time to live")
        return CoordinateRequest(
            ref=KeyRef.from_wire(d.get("ref")),
            context=vclock.validated(d.get("context", {})),
            dots=vclock.validated_dots(d.get("dots", [])),
            value=d.get("value"),
            deleted=bool(d.get("deleted", False)),
            max_siblings=integer(d.get("max_siblings", 32), "max_siblings", 1, 1 << 16),
            durability=_durability(d),
            ttl_ms=None if ttl is None else integer(ttl, "ttl_ms", 1, MAX_TTL_S * 1000 + 1),
        )


@dataclass(frozen=True)
class Coordinated:
    version: Version  # the one just minted
    versions: tuple[Version, ...]  # the replica's reconciled set after storing it

    def to_wire(self) -> dict[str, Any]:
        return {"version": self.version.to_wire(), "versions": versions_wire(self.versions)}

    @staticmethod
    def from_wire(raw: Any) -> Coordinated:
        d = obj(raw)
        return Coordinated(Version.from_wire(d.get("version")), decode_versions(d.get("versions")))


@dataclass(frozen=True)
class TreeQuery:
    partition: int
    query: merkle_diff.Query

    def to_wire(self) -> dict[str, Any]:
        q = self.query
        if isinstance(q, merkle_diff.HashesQuery):
            wire = {"t": "h", "level": q.level, "indexes": list(q.indexes)}
        else:
            wire = {"t": "b", "buckets": list(q.buckets)}
        return {"partition": self.partition, "query": wire}

    @staticmethod
    def from_wire(raw: Any) -> TreeQuery:
        d = obj(raw)
        return TreeQuery(integer(d.get("partition"), "partition", 0, 1 << 16), _query(d))


def _query(d: dict[str, Any]) -> merkle_diff.Query:
    q = obj(d.get("query"), "query")
    if q.get("t") == "h":
        indexes = tuple(integer(i, "index", 0, 1 << 32) for i in q.get("indexes", ()))
        return merkle_diff.HashesQuery(integer(q.get("level"), "level", 0, 64), indexes)
    if q.get("t") == "b":
        buckets = tuple(integer(b, "bucket", 0, 1 << 32) for b in q.get("buckets", ()))
        return merkle_diff.BucketsQuery(buckets)
    raise ValueError("query must be an object with t = 'h' or 'b'")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@dataclass(frozen=True)
class TreeAnswer:
    answer: merkle_diff.Answer

    def to_wire(self) -> dict[str, Any]:
        return {
            "answer": [
                {b64(k): b64(v) for k, v in item.items()} if isinstance(item, dict) else b64(item)
                for item in self.answer
            ]
        }

    @staticmethod
    def from_wire(raw: Any) -> TreeAnswer:
        items = array(obj(raw).get("answer"), "answer")
        if items and isinstance(items[0], dict):
            return TreeAnswer(
                tuple(
                    {base64.b64decode(k): base64.b64decode(v) for k, v in item.items()}
                    for item in items
                )
            )
        return TreeAnswer(tuple(base64.b64decode(text(item, "hash")) for item in items))


@dataclass(frozen=True)
class GossipDigest:
    """A node's heartbeat versions, {node: (generation, heartbeat)} (docs/gossip.md)."""

    digest: dict[str, membership.Version]

    def to_wire(self) -> dict[str, Any]:
        return {"digest": {node: list(v) for node, v in self.digest.items()}}

    @staticmethod
    def from_wire(raw: Any) -> GossipDigest:
        return GossipDigest(membership.parse_digest(obj(raw).get("digest")))


FETCH = Operation("fetch", KeyRequest.from_wire, Versions.from_wire)
STORE = Operation("store", StoreRequest.from_wire, Stored.from_wire)
HINT = Operation("hint", HintRequest.from_wire, Stored.from_wire)
PURGE = Operation("purge", PurgeRequest.from_wire, Purged.from_wire)
COORDINATE = Operation("coordinate", CoordinateRequest.from_wire, Coordinated.from_wire)
AE_QUERY = Operation("ae_query", TreeQuery.from_wire, TreeAnswer.from_wire)
GOSSIP = Operation("gossip", GossipDigest.from_wire, GossipDigest.from_wire)
