"""Eventual keyspaces' key operations: request bodies and options → coordinator calls.

The quorum mechanics live in dynamo_mode.coordinator; this module owns the eventual-mode
request fields (`value`, `context`; query `r`, `w`, `pr`, `pw`) and the response shapes of
DESIGN.md §5. `pr`/`pw` (Dynamo §4.6, Riak's names) demand that many replies from primaries
themselves: a hint on a fallback counts toward `w`, never toward `pw`; reads ask primaries
only, so `pr` raises the replies needed to max(r, pr). Absent, they demand nothing.
"""

from __future__ import annotations

from typing import Any

from dynamo_mode import vclock
from dynamo_mode.coordinator import Context, DynamoCoordinator, Placement, ReadResult
from dynamo_mode.replica import DynamoReplica, KeyRef
from kv.errors import InvalidRequest, KeyNotFound
from kv.keyspace import KeyspaceConfig
from kv.meta import Metadata
from kv.service import Options, check_body, check_value

_FIELDS = {"value", "context", "if_version"}


def place(md: Metadata, ks: KeyspaceConfig, key: str) -> Placement:
    ring = md.ring()
    partition = ring.key_partition(ks.name, key)
    return Placement(
        KeyRef(partition, ks.uid, key),
        ring.preference_list(partition, ks.replication),
        ring.fallbacks(partition, ks.replication),
    )


def decode_context(raw: Any) -> Context:
    if raw is None:
        return {}, ()
    if not isinstance(raw, str):
        raise InvalidRequest("context", "must be the opaque string a GET returned")
    try:
        return vclock.decode_context_full(raw)
    except ValueError as exc:
        raise InvalidRequest("context", str(exc)) from None


def render_read(key: str, result: ReadResult) -> dict[str, Any]:
    context = vclock.encode_context_full(*result.context)
    live = result.live
    if not live:
        raise KeyNotFound(f"key {key!r} not found", key=key, context=context)
    if len(live) == 1:
        return {"key": key, "value": live[0].value, "context": context}
    return {"key": key, "siblings": [v.value for v in live], "context": context}


def _write_body(body: Any, *, need_value: bool) -> tuple[Any, Context]:
    fields = check_body(body, _FIELDS)
    if "if_version" in fields:
        raise InvalidRequest("if_version", "applies only to linearizable keyspaces; use context")
    if need_value and "value" not in fields:
        raise InvalidRequest("value", "is required")
    return fields.get("value"), decode_context(fields.get("context"))


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


class EventualKeys:
    def __init__(self, coordinator: DynamoCoordinator, replica: DynamoReplica) -> None:
        self._dynamo = coordinator
        self._replica = replica

    async def get(
        self, md: Metadata, ks: KeyspaceConfig, key: str, opts: Options
    ) -> dict[str, Any]:
        r = _quorum("r", opts.r, ks.read_quorum, ks.replication)
        pr = _primaries("pr", getattr(opts, "pr", None), ks.replication)
        result = await self._dynamo.get(place(md, ks, key), r, opts.timeout_s, pr=pr)
        return render_read(key, result)

    async def put(
        self, md: Metadata, ks: KeyspaceConfig, key: str, body: Any, opts: Options
    ) -> dict[str, Any]:
        value, context = _write_body(body, need_value=True)
        check_value(value)
        w = _quorum("w", opts.w, ks.write_quorum, ks.replication)
        pw = _primaries("pw", getattr(opts, "pw", None), ks.replication)
        where = place(md, ks, key)
        ctx = await self._dynamo.put(
            where, context, value, False, w, ks.max_siblings, opts.timeout_s, pw=pw
        )
        return {"context": vclock.encode_context_full(*ctx)}

    async def delete(
        self, md: Metadata, ks: KeyspaceConfig, key: str, body: Any, opts: Options
    ) -> dict[str, Any]:
        _, context = _write_body(body, need_value=False)
        w = _quorum("w", opts.w, ks.write_quorum, ks.replication)
        pw = _primaries("pw", getattr(opts, "pw", None), ks.replication)
        where = place(md, ks, key)
        if not context[0] and not context[1]:
            # Delete what a quorum read sees now (a blind tombstone would only be a sibling).
            r = _quorum("r", opts.r, ks.read_quorum, ks.replication)
            pr = _primaries("pr", getattr(opts, "pr", None), ks.replication)
            seen = await self._dynamo.get(where, r, opts.timeout_s, pr=pr)
            if not seen.live:
                return {"deleted": False, "context": vclock.encode_context_full(*seen.context)}
            context = seen.context
        ctx = await self._dynamo.put(
            where, context, None, True, w, ks.max_siblings, opts.timeout_s, pw=pw
        )
        return {"deleted": True, "context": vclock.encode_context_full(*ctx)}

    async def prepare(self, md: Metadata, ks: KeyspaceConfig, timeout: float) -> None:
        return None  # leaderless: usable as soon as the metadata is

    def replica_state(self, md: Metadata, ks: KeyspaceConfig, key: str) -> dict[str, Any]:
        where = place(md, ks, key)
        return {
            "key": key,
            "partition": where.ref.partition,
            "replicas": list(where.replicas),
            "versions": [v.to_wire() for v in self._replica.fetch(where.ref)],
        }
