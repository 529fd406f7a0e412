"""Eventual keyspaces' key operations: routed requests → coordinator calls.

kv/routing has validated the body fields and resolved the quorums (`r`, `w`, and `pr`/`pw`,
Dynamo §4.6, Riak's names: that many replies from primaries themselves — a hint on a
fallback counts toward `w`, never toward `pw`; reads ask primaries only, so `pr` raises the
replies needed to max(r, pr); 0 demands nothing). This module decodes the opaque causal
context (sealed to its keyspace and key, dynamo_mode/context_seal.py), calls the
coordinator (dynamo_mode/coordinator.py) and renders the response shapes of DESIGN.md §5.
"""

from __future__ import annotations

from typing import Any

from dynamo_mode import context_seal, vclock
from dynamo_mode.coordinator import Context, DynamoCoordinator, Placement, ReadResult
from dynamo_mode.listing import KeyLister
from dynamo_mode.replica import DynamoReplica, KeyRef
from kv.errors import InvalidRequest, KeyNotFound
from kv.keyspace import KeyspaceConfig
from kv.listing import ListRequest, Slice
from kv.meta import Metadata
from kv.routing import DeleteRequest, GetRequest, KeyRequest, PutRequest


def placement(req: KeyRequest) -> Placement:
    route = req.route
    ref = KeyRef(route.partition, req.keyspace.uid, req.key)
    return Placement(ref, route.replicas, route.fallbacks, route.incoming)


def decode_context(raw: str | None, seal_key: bytes, req: KeyRequest) -> Context:
    """The client's context, which must be sealed for this keyspace and key; 400 if not."""
    if raw is None:
        return {}, ()
    try:
        body = context_seal.unseal(seal_key, req.keyspace.uid, req.key, raw)
        return vclock.decode_context_full(body)
    except ValueError as exc:
        raise InvalidRequest("context", str(exc)) from None


def encode_context(ctx: Context, seal_key: bytes, req: KeyRequest) -> str:
    body = vclock.encode_context_full(*ctx)
    return context_seal.seal(seal_key, req.keyspace.uid, req.key, body)


def render_read(key: str, result: ReadResult, context: str) -> dict[str, Any]:
    """One value (with its `expires_at`, if it has one), or siblings; expired versions and
    tombstones are not shown (docs/ttl.md)."""
    live = result.live
    if not live:
        raise KeyNotFound(f"key {key!r} not found", key=key, context=context)
    if len(live) == 1:
        reply = {"key": key, "value": live[0].value, "context": context}
        if live[0].expires_at is not None:
            reply["expires_at"] = live[0].expires_at
        return reply
    return {"key": key, "siblings": [v.value for v in live], "context": context}


class EventualKeys:
    def __init__(
        self,
        coordinator: DynamoCoordinator,
        replica: DynamoReplica,
        seal_key: bytes,
        lister: KeyLister,
    ) -> None:
        self._dynamo = coordinator
        self._replica = replica
        self._seal_key = seal_key  # kv/keys.py `context_key`
        self._lister = lister

    async def list_keys(self, req: ListRequest) -> list[Slice]:
        return await self._lister.list_keys(req)

    async def get(self, req: GetRequest) -> dict[str, Any]:
        result = await self._dynamo.get(placement(req), req.r, req.timeout_s, pr=req.pr)
        context = encode_context(result.context, self._seal_key, req)
        if req.source is not None and not result.live:  # a switch to eventual: the caller
            # falls back on the frozen source unless a tombstone says the key was deleted
            why = f"key {req.key!r} not found"
            raise KeyNotFound(why, key=req.key, context=context, tombstone=bool(result.versions))
        return render_read(req.key, result, context)

    async def put(self, req: PutRequest) -> dict[str, Any]:
        context = decode_context(req.context, self._seal_key, req)
        ks = req.keyspace
        ctx = await self._dynamo.put(
            placement(req),
            context,
            req.value,
            False,
            req.w,
            ks.max_siblings,
            req.timeout_s,
            pw=req.pw,
            durability=ks.durability,
            ttl_ms=req.ttl_ms,
        )
        return {"context": encode_context(ctx, self._seal_key, req)}

    async def delete(self, req: DeleteRequest) -> dict[str, Any]:
        context = decode_context(req.context, self._seal_key, req)
        where = placement(req)
        if not context[0] and not context[1]:
            # Delete what a quorum read sees now (a blind tombstone would only be a sibling).
            seen = await self._dynamo.get(where, req.r, req.timeout_s, pr=req.pr)
            if not seen.live and (req.source is None or seen.versions):
                context_seen = encode_context(seen.context, self._seal_key, req)
                return {"deleted": False, "context": context_seen}
            # live, or (a switch to eventual) nothing here yet: the key may live in the
            # frozen source, and a tombstone keeps its copy from bringing it back
            context = seen.context
        ctx = await self._dynamo.put(
            where,
            context,
            None,
            True,
            req.w,
            req.keyspace.max_siblings,
            req.timeout_s,
            pw=req.pw,
            durability=req.keyspace.durability,
        )
        return {"deleted": True, "context": encode_context(ctx, self._seal_key, req)}

    def context_of(self, req: KeyRequest, clock: dict[str, int]) -> str:
        """A sealed context of `clock` for `req`'s key (a switch's copies, kv/node_switch.py)."""
        return encode_context((clock, ()), self._seal_key, req)

    async def prepare(self, md: Metadata, ks: KeyspaceConfig, timeout: float) -> None:
        return None  # leaderless: usable as soon as the metadata is

    def replica_state(self, req: KeyRequest) -> dict[str, Any]:
        where = placement(req)
        return {
            "key": req.key,
            "partition": where.ref.partition,
            "replicas": list(where.replicas),
            "versions": [v.to_wire() for v in self._replica.fetch(where.ref)],
        }
