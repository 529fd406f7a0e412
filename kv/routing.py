"""One routing step: a key request is parsed and validated once into a typed request that
carries its route (DESIGN.md §1 `kv/routing`). Pure.

    HTTP (kv/http) ──parse query──▶ Options ─┐
    body (JSON) ─────────────────────────────┼─▶ get_request / put_request / delete_request
    metadata (kv/meta) ──────────────────────┘        │ keyspace, key, body fields, quorums,
                                                       ▼ timeout, Route(mode, partition, replicas)
                                  the keyspace's mode frontend (dynamo_mode / raft_groups)

Everything a mode frontend needs arrives in the request: it never calls back up. Each
mode's own encodings stay opaque here (an eventual `context` is a string the eventual
frontend decodes). `replicas` is the one placement function: every caller that asks which
nodes hold a partition — routes, Raft group hosting, anti-entropy, tombstone purge — asks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from kv import json_codec
from kv import switch as switches
from kv.errors import InvalidRequest, KeyspaceNotFound, TooLarge
from kv.keyspace import Consistency, KeyspaceConfig, validate_name
from kv.meta import Metadata

MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 1 << 20  # encoded JSON
MAX_VALUE_DEPTH = json_codec.MAX_VALUE_DEPTH  # nested lists and objects
MAX_TIMEOUT_S = 60.0
MAX_REQUEST_ID = 128
# A write's time to live (docs/ttl.md): at most ten years, so an expiry in ms since the epoch
# stays far inside the 8 bytes the Raft expiry index keys it by.
MAX_TTL_S = 10 * 365 * 86400


@dataclass(frozen=True)
class Options:
    """Per-request options from the query string, syntax-checked by kv/http."""

    timeout_s: float
    r: int | None = None
    w: int | None = None
    stale: bool = False
    pr: int | None = None  # eventual only: replies demanded from primaries (Dynamo §4.6)
    pw: int | None = None  # eventual only: acks demanded from primaries, hints excluded


@dataclass(frozen=True)
class Route:
    """Where a key lives: its partition and preference list (Dynamo §4.3); for eventual
    keyspaces also the rest of the ring walk, the sloppy quorum's fallbacks (§4.6)."""

    mode: Consistency
    partition: int
    replicas: tuple[str, ...]
    fallbacks: tuple[str, ...] = ()
    incoming: tuple[str, ...] = ()  # owners-to-be while a plan moves it: they get writes too


@dataclass(frozen=True)
class KeyRequest:
    keyspace: KeyspaceConfig
    key: str
    route: Route
    timeout_s: float
    # the keyspace is switching to linearizable: `keyspace` is its target configuration,
    # and the Raft groups refuse the request until its partition is migrated (the guard,
    # docs/mode_switch.md)
    guard: bool = False
    # the keyspace is switching to eventual: `keyspace` is its target configuration and
    # `source` the frozen linearizable one, which holds the keys not copied yet
    source: KeyspaceConfig | None = None


@dataclass(frozen=True)
class GetRequest(KeyRequest):
    stale: bool = False  # linearizable: read the local replica without a barrier
    r: int = 0  # eventual: replies needed (resolved from the keyspace default)
    pr: int = 0  # eventual: primary replies needed (0 = no demand)


@dataclass(frozen=True)
class PutRequest(KeyRequest):
    value: Any = None
    context: str | None = None  # eventual: opaque causal context from a GET
    if_version: int | None = None  # linearizable: compare-and-set (0 = create only)
    request_id: str | None = None  # linearizable: deduplicates retries of one write
    w: int = 0
    pw: int = 0
    ttl_ms: int | None = None  # time to live, ms (docs/ttl.md): the key expires this long after


@dataclass(frozen=True)
class DeleteRequest(KeyRequest):
    context: str | None = None
    if_version: int | None = None
    request_id: str | None = None
    r: int = 0  # eventual: a delete without a context first reads what it deletes
    pr: int = 0
    w: int = 0
    pw: int = 0


# ---------------------------------------------------------------------- placement
def replicas(md: Metadata, mode: str, partition: int, n: int) -> tuple[str, ...]:
    """The preference list of `partition` for keyspaces of `mode` and replication `n`, as
    it stands now (the one placement function; a plan in flight flips it move by move)."""
    return md.owners(mode, n, partition)[0]


def placement(md: Metadata) -> list[dict[str, Any]]:
    """`GET /v1/cluster` "placement": for each (mode, replication) a keyspace uses (switch
    targets included), every partition's preference list as it stands now (`replicas`) and
    the owners a plan in flight is moving it to (`incoming`)."""
    configs = (*md.keyspaces, *(s.target for s in md.switches))
    in_use = sorted({(ks.consistency, ks.replication) for ks in configs})
    return [
        {
            "mode": mode,
            "replication": n,
            "partitions": [_placed(md, mode, n, p) for p in range(md.partitions)],
        }
        for mode, n in in_use
    ]


def _placed(md: Metadata, mode: str, n: int, partition: int) -> dict[str, Any]:
    replicas, incoming = md.owners(mode, n, partition)
    return {"partition": partition, "replicas": list(replicas), "incoming": list(incoming)}


def place(md: Metadata, ks: KeyspaceConfig, key: str) -> Route:
    return place_partition(md, ks, md.ring().key_partition(ks.name, key))


def place_partition(md: Metadata, ks: KeyspaceConfig, partition: int) -> Route:
    ring = md.ring()
    owners, incoming = md.owners(ks.consistency, ks.replication, partition)
    fallbacks: tuple[str, ...] = ()
    if ks.consistency == "eventual":
        taken = {*owners, *incoming}
        fallbacks = tuple(n for n in ring.walk(partition) if n not in taken)
    return Route(ks.consistency, partition, owners, fallbacks, incoming)


# ---------------------------------------------------------------------- requests
def keyspace(md: Metadata, name: str) -> KeyspaceConfig:
    validate_name(name)
    ks = md.keyspace(name)
    if ks is None:
        raise KeyspaceNotFound(name)
    return ks


def serving(
    md: Metadata, name: str, partition: int | None = None
) -> tuple[KeyspaceConfig, bool, KeyspaceConfig | None]:
    """The configuration requests of keyspace `name` (of `partition`, where one is meant)
    are routed by while it switches — its target's (docs/mode_switch.md) — whether they
    are guarded (to linearizable), and the frozen source to fall back on (to eventual). A
    cancelling switch serves a partition from the target until it is back."""
    ks = keyspace(md, name)
    switch = md.switch(name)
    if switch is None or switch.uid != ks.uid:
        return ks, False, None
    if switches.unwinds(switch) and (
        partition is None or not switches.serves_target(switch, partition)
    ):
        return ks, False, None
    if switch.target.consistency == "linearizable":
        return switch.target, True, None
    return switch.target, False, ks


def locate(md: Metadata, name: str, key: str, timeout_s: float) -> KeyRequest:
    """Keyspace, key and route: what every key request starts from."""
    partition = md.ring().key_partition(name, key)
    ks, guard, source = serving(md, name, partition)
    check_key(key)
    route = place_partition(md, ks, partition)
    return KeyRequest(ks, key, route, timeout_s, guard, source)


def from_source(req: KeyRequest, md: Metadata) -> GetRequest:
    """A linearizable read of `req`'s key in the frozen source of a switch to eventual."""
    assert req.source is not None
    route = place(md, req.source, req.key)
    return GetRequest(req.source, req.key, route, req.timeout_s)


def get_request(md: Metadata, name: str, key: str, opts: Options) -> GetRequest:
    base = locate(md, name, key, opts.timeout_s)
    r, pr = _read_quorums(base.keyspace, opts)
    return GetRequest(**_fields(base), stale=opts.stale, r=r, pr=pr)


def put_request(md: Metadata, name: str, key: str, body: Any, opts: Options) -> PutRequest:
    base = locate(md, name, key, opts.timeout_s)
    fields = _write_fields(base, body, {"value", "ttl_s"})
    if "value" not in fields:
        raise InvalidRequest("value", "is required")
    check_value(fields["value"])
    w, pw = _write_quorums(base.keyspace, opts)
    ttl_ms = ttl_of(fields.get("ttl_s"))
    return PutRequest(
        **_fields(base), **_conditions(fields), value=fields["value"], w=w, pw=pw, ttl_ms=ttl_ms
    )


def delete_request(md: Metadata, name: str, key: str, body: Any, opts: Options) -> DeleteRequest:
    base = locate(md, name, key, opts.timeout_s)
    fields = _write_fields(base, body, set())
    r, pr = _read_quorums(base.keyspace, opts)
    w, pw = _write_quorums(base.keyspace, opts)
    return DeleteRequest(**_fields(base), **_conditions(fields), r=r, pr=pr, w=w, pw=pw)


def _fields(base: KeyRequest) -> dict[str, Any]:
    return {
        "keyspace": base.keyspace,
        "key": base.key,
        "route": base.route,
        "timeout_s": base.timeout_s,
        "guard": base.guard,
        "source": base.source,
    }


# ---------------------------------------------------------------------- validation
def check_key(key: str) -> None:
    size = len(key.encode())
    if size == 0:
        raise InvalidRequest("key", "must not be empty")
    if size > MAX_KEY_BYTES:
        raise TooLarge("key", size, MAX_KEY_BYTES)


def check_value(value: Any) -> None:
    """A value is stored as kv.json_codec writes it: what that cannot write — a lone UTF-16
    surrogate, an integer outside -2**63 .. 2**64-1 (which it would read back as a float)
    — is refused here, naming why; the size limit counts those bytes. The one check of
    both consistency modes, so a value nested deeper than `MAX_VALUE_DEPTH` is the same
    400 in both."""
    try:
        size = len(json_codec.dumps_value(value, MAX_VALUE_DEPTH))
    except TypeError as exc:
        raise InvalidRequest(
            "value", f"cannot be stored as JSON: {json_codec.refusal(exc)}"
        ) from None
    if size > MAX_VALUE_BYTES:
        raise TooLarge("value", size, MAX_VALUE_BYTES)


def check_body(body: Any, allowed: set[str]) -> dict[str, Any]:
    """A key-route body: a JSON object with only `allowed` fields (None → {})."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidRequest(unknown[0], f"unknown field (allowed: {', '.join(sorted(allowed))})")
    return body


# Fields each mode accepts on writes; the other mode's field gets a message saying which
# mode it belongs to rather than "unknown field".
_WRITE_FIELDS: dict[str, set[str]] = {
    "eventual": {"context", "if_version"},
    "linearizable": {"if_version", "request_id", "context"},
}
_FOREIGN = {
    "eventual": ("if_version", "applies only to linearizable keyspaces; use context"),
    "linearizable": ("context", "applies only to eventual keyspaces; use if_version"),
}


def _write_fields(base: KeyRequest, body: Any, extra: set[str]) -> dict[str, Any]:
    """The body's fields; the other mode's field is a 400 — except a `context` sent to a
    keyspace switching to linearizable, which clients of the eventual keyspace still
    send: it is ignored there (docs/mode_switch.md)."""
    consistency = base.keyspace.consistency
    fields = check_body(body, _WRITE_FIELDS[consistency] | extra)
    foreign, message = _FOREIGN[consistency]
    if foreign in fields and not (base.guard and foreign == "context"):
        raise InvalidRequest(foreign, message)
    return fields


def _conditions(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "context": _context(fields.get("context")),
        "if_version": _if_version(fields.get("if_version")),
        "request_id": _request_id(fields.get("request_id")),
    }


def _context(raw: Any) -> str | None:
    if raw is not None and not isinstance(raw, str):
        raise InvalidRequest("context", "must be the opaque string a GET returned")
    return raw


def _if_version(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest("if_version", f"must be an integer ≥ 0, got {value!r}")
    return value


def ttl_of(ttl_s: Any) -> int | None:
    """`ttl_s` (a number of seconds > 0, at most MAX_TTL_S) in whole milliseconds, rounded
    up so a positive TTL never becomes 0; None when absent."""
    if ttl_s is None:
        return None
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not 0 < ttl_s <= MAX_TTL_S:
        raise InvalidRequest(
            "ttl_s", f"must be a number of seconds > 0 and ≤ {MAX_TTL_S}, got {ttl_s!r}"
        )
    return math.ceil(ttl_s * 1000)


def _request_id(rid: Any) -> str | None:
    if rid is None:
        return None
    if not isinstance(rid, str) or not 0 < len(rid) <= MAX_REQUEST_ID:
        raise InvalidRequest("request_id", f"must be a string of 1..{MAX_REQUEST_ID} characters")
    return rid


def _read_quorums(ks: KeyspaceConfig, opts: Options) -> tuple[int, int]:
    if ks.consistency != "eventual":
        return 0, 0
    n = ks.replication
    return _quorum("r", opts.r, ks.read_quorum, n), _primaries("pr", opts.pr, n)


def _write_quorums(ks: KeyspaceConfig, opts: Options) -> tuple[int, int]:
    if ks.consistency != "eventual":
        return 0, 0
    n = ks.replication
    return _quorum("w", opts.w, ks.write_quorum, n), _primaries("pw", opts.pw, n)


def _quorum(name: str, asked: int | None, default: int, n: int) -> int:
    value = default if asked is None else asked
    if not 1 <= value <= n:
        raise InvalidRequest(
            name, f"must be between 1 and the keyspace's replication ({n}), got {value}"
        )
    return value


def _primaries(name: str, asked: int | None, n: int) -> int:
    """`pr`/`pw`: 0 (no demand) when absent, else validated like r/w."""
    return 0 if asked is None else _quorum(name, asked, asked, n)
