"""Linearizable keyspaces' key operations (DESIGN.md §3, §5).

Any node accepts any request. A member of the key's Raft group proposes locally (pysyncobj
forwards a follower's command to the leader and answers after the entry is applied here);
a node outside the group forwards the routed request to a member with the internode
operation `lin_forward` (raft_groups/forwarding.py), where it is served, never forwarded
again.

Outcomes: `ok` → 200 with the key's version; a failed `if_version` → 412
`condition_failed` with `current_version`; a `request_id` already used for another
command → 409 `request_id_conflict`; no leader / discarded / no member reachable →
503 (not applied); a local commit that does not arrive in time → 504 with the
`request_id`, and so does a forwarded write whose member does not answer in time (it may
have been applied: retry with the same `request_id`, which the state machine
deduplicates). A forwarded read that times out is a 503: a read applies nothing.

A put with a time to live (docs/ttl.md) is stamped with the clock of the group's leader:
a member that is not the leader forwards it there (`to_leader`), unless it knows no
leader or cannot reach it (then it stamps it itself; the write then reaches a leader
through pysyncobj or fails as any write does). The stamp is `now` in the command; the
state machine derives `expires_at = now + ttl_ms` from it and reads no clock.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from kv import routing
from kv.errors import (
    ConditionFailed,
    InvalidRequest,
    KeyNotFound,
    KeyspaceNotFound,
    NoLeader,
    NotReady,
    PeerTimeout,
    PeerUnreachable,
    RequestIdConflict,
    Retryable,
    UnknownOutcome,
)
from kv.internode import Operation, OpTable, Wire
from kv.keyspace import KeyspaceConfig
from kv.listing import ListRequest, Slice
from kv.meta import Metadata
from kv.routing import DeleteRequest, GetRequest, KeyRequest, PutRequest
from kv.transport import Transport
from raft_groups import state_machine
from raft_groups.commands import Command
from raft_groups.forwarding import LIN_FORWARD, LIN_LIST, Forwarded, ForwardedList, ForwardReply
from raft_groups.manager import MIGRATING, RaftGroups
from raft_groups.placement import GroupSpec

Req = TypeVar("Req", bound=Wire)
Resp = TypeVar("Resp", bound=Wire)


def _command(**fields: Any) -> Command:
    try:
        return Command(**fields)
    except ValueError as exc:  # e.g. nesting too deep, lone surrogates in the key
        raise InvalidRequest("body", str(exc)) from None


def render_write(result: dict[str, Any] | None) -> dict[str, Any]:
    if result is None:
        raise NotReady("the command was replayed without a result; retry", retry_after=0.1)
    if result.get("ok"):
        out = {"version": result["version"]}
        if "existed" in result:
            out["deleted"] = result["existed"]
        return out
    if result.get("code") == "condition_failed":
        raise ConditionFailed(int(result["current_version"]))
    if result.get("code") == "request_id_conflict":
        raise RequestIdConflict(str(result["message"]))
    if result.get("code") == "not_migrated":
        raise NotReady(MIGRATING, retry_after=0.2)
    if result.get("code") == "frozen":
        raise NotReady("the keyspace is switching to eventual: retry", retry_after=0.2)
    raise InvalidRequest("command", str(result.get("message", result)))


class LinearizableKeys:
    def __init__(
        self,
        groups: RaftGroups,
        self_id: str,
        transport: Transport,
        metadata: Callable[[], Metadata],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._groups = groups
        self._self_id = self_id
        self._transport = transport
        self._metadata = metadata
        self._clock = clock  # stamps TTL writes when this node leads their group

    def register(self, table: OpTable) -> None:
        table.register(LIN_FORWARD, self.serve_forwarded)
        table.register(LIN_LIST, self.serve_list)

    # ------------------------------------------------------------------ KeyOps
    async def get(self, req: GetRequest) -> dict[str, Any]:
        spec = GroupSpec.of(req)
        if self._self_id not in spec.members:
            return await self._forward(spec, Forwarded.of_get(req))
        found = await self._groups.read(
            spec, req.keyspace.uid, req.key, req.timeout_s, req.stale, req.guard
        )
        if found is None:
            raise KeyNotFound(f"key {req.key!r} not found", key=req.key, version=0)
        reply: dict[str, Any] = {"key": req.key, "value": found.value, "version": found.version}
        if found.expires_at is not None:
            reply["expires_at"] = found.expires_at
        if req.stale:
            reply["stale"] = True  # served from this replica without a read barrier
        return reply

    async def put(self, req: PutRequest, stamp_here: bool = False) -> dict[str, Any]:
        """`stamp_here`: a TTL write forwarded to this node as the leader (module doc)."""
        rid = req.request_id or uuid.uuid4().hex
        spec = GroupSpec.of(req)
        if self._self_id not in spec.members:
            return await self._forward(spec, Forwarded.of_put(req, rid))
        if req.ttl_ms is not None and not stamp_here:
            leader = self._leader(spec)
            if leader is not None and leader != self._self_id:
                reply = await self._to_leader(leader, Forwarded.of_put(req, rid, to_leader=True))
                if reply is not None:
                    return reply
        command = _command(
            op="put",
            uid=req.keyspace.uid,
            key=req.key,
            value=req.value,
            if_version=req.if_version,
            request_id=rid,
            guard=req.guard,
            ttl_ms=req.ttl_ms,
            now=0 if req.ttl_ms is None else int(self._clock() * 1000),
        )
        return await self._propose(spec, command, req.timeout_s)

    def _leader(self, spec: GroupSpec) -> str | None:
        """The member this node knows as the group's leader, if any."""
        status = self._groups.hosted(spec).group.status()
        if status.is_leader:
            return self._self_id
        members = self._metadata().members
        return next((m.id for m in members if status.leader and m.raft == status.leader), None)

    async def _to_leader(self, leader: str, fwd: Forwarded) -> dict[str, Any] | None:
        """`fwd` served by `leader`; None if it was certainly not reached (stamp here)."""
        try:
            reply = await self._transport.call(leader, LIN_FORWARD, fwd, fwd.timeout_s)
        except PeerUnreachable:
            return None
        except PeerTimeout as exc:
            raise _forward_timeout(fwd, exc) from None
        return reply.body

    async def delete(self, req: DeleteRequest) -> dict[str, Any]:
        rid = req.request_id or uuid.uuid4().hex
        spec = GroupSpec.of(req)
        if self._self_id not in spec.members:
            return await self._forward(spec, Forwarded.of_delete(req, rid))
        command = _command(
            op="delete",
            uid=req.keyspace.uid,
            key=req.key,
            if_version=req.if_version,
            request_id=rid,
            guard=req.guard,
        )
        return await self._propose(spec, command, req.timeout_s)

    async def list_keys(self, req: ListRequest) -> list[Slice]:
        """Each partition's slice from its group after a read barrier: here if this node is
        a member, else from a member (`lin_list`)."""
        slices = (
            self._list_partition(req, route.partition, route.replicas) for route in req.routes
        )
        return list(await asyncio.gather(*slices))

    async def _list_partition(
        self, req: ListRequest, partition: int, members: tuple[str, ...]
    ) -> Slice:
        spec = GroupSpec(partition, req.keyspace.replication, members)
        if self._self_id not in spec.members:
            fwd = ForwardedList.of(req, partition)
            return await call_a_member(
                self._transport, spec, LIN_LIST, fwd, fwd.timeout_s, _list_timeout
            )
        scan = (req.prefix, req.after, req.limit)
        keys = await self._groups.keys(spec, req.keyspace.uid, scan, req.timeout_s, req.guard)
        return Slice(tuple(keys), keys[-1] if len(keys) == req.limit else None)

    async def serve_list(self, fwd: ForwardedList) -> Slice:
        """The `lin_list` op: the partition's group re-derived under this node's metadata."""
        md = self._metadata()
        self._check_uid(md, fwd.keyspace, fwd.uid)
        ks, guard, _source = routing.serving(md, fwd.keyspace, fwd.partition)
        route = routing.place_partition(md, ks, fwd.partition)
        if route.mode != "linearizable" or self._self_id not in route.replicas:
            raise NotReady("this node does not serve the partition now", retry_after=0.2)
        req = ListRequest(ks, (route,), fwd.prefix, fwd.after, fwd.limit, fwd.timeout_s, guard)
        return await self._list_partition(req, fwd.partition, route.replicas)

    async def prepare(self, md: Metadata, ks: KeyspaceConfig, timeout: float) -> None:
        """Wait until this node runs the keyspace's groups and each has a leader (bounded)."""
        await self._groups.wait_for_leaders(md, ks.replication, timeout)

    def replica_state(self, req: KeyRequest) -> dict[str, Any]:
        spec = GroupSpec.of(req)
        uid = req.keyspace.uid
        found = state_machine.read_record(self._groups.engine, spec.number, uid, req.key)
        state = {
            "key": req.key,
            "group": spec.gid,
            "replicas": list(spec.members),
            "value": found.value if found else None,
            "version": found.version if found else 0,
        }
        if found and found.expires_at is not None:
            state["expires_at"] = found.expires_at
        return state

    async def _propose(self, spec: GroupSpec, command: Command, timeout: float) -> dict[str, Any]:
        """Every unknown outcome of a write (our timeout, Raft's LEADER_CHANGED) names the
        command's `request_id`, so the client can retry it and be deduplicated."""
        try:
            result = await self._groups.propose(spec, command, timeout)
        except UnknownOutcome as exc:
            if "request_id" in exc.details:
                raise
            details = {**exc.details, "request_id": command.request_id}
            raise UnknownOutcome(exc.message, **details) from None
        return render_write(result)

    # ------------------------------------------------------------------ forwarding
    async def _forward(self, spec: GroupSpec, fwd: Forwarded) -> dict[str, Any]:
        def timeout(exc: PeerTimeout) -> Exception:
            return _forward_timeout(fwd, exc)

        reply = await call_a_member(self._transport, spec, LIN_FORWARD, fwd, fwd.timeout_s, timeout)
        return reply.body

    @staticmethod
    def _check_uid(md: Metadata, name: str, uid: int) -> None:
        """A forwarded request's keyspace incarnation is this node's too."""
        if uid > md.epoch:  # uids are epochs: the sender's metadata is newer than ours
            raise NotReady(
                f"this node's metadata (epoch {md.epoch}) does not have keyspace {name!r} yet",
                retry_after=0.2,
            )
        ks = md.keyspace(name)
        if ks is None or ks.uid != uid:
            raise KeyspaceNotFound(name)

    async def serve_forwarded(self, fwd: Forwarded) -> ForwardReply:
        """The `lin_forward` op: re-route under this node's metadata and serve here."""
        md = self._metadata()
        self._check_uid(md, fwd.keyspace, fwd.uid)
        base = routing.locate(md, fwd.keyspace, fwd.key, fwd.timeout_s)
        if base.route.mode != "linearizable":  # its switch was cancelled here, or is older
            raise NotReady("this node routes the keyspace elsewhere now", retry_after=0.2)
        if self._self_id not in base.route.replicas:
            raise NotReady(
                "forwarded to a node outside the group (metadata changing)", retry_after=0.2
            )
        if fwd.op == "get":
            return ForwardReply(await self.get(fwd.get_request(base)))
        if fwd.op == "put":
            return ForwardReply(await self.put(fwd.put_request(base), stamp_here=fwd.to_leader))
        return ForwardReply(await self.delete(fwd.delete_request(base)))


def _list_timeout(exc: PeerTimeout) -> Exception:
    return Retryable(f"forwarded key listing not answered in time: {exc}", retry_after=0.5)


def _forward_timeout(fwd: Forwarded, exc: PeerTimeout) -> Exception:
    if fwd.op == "get":
        return Retryable(f"forwarded read not answered in time: {exc}", retry_after=0.5)
    return UnknownOutcome(
        f"forwarded {fwd.op} not answered within {fwd.timeout_s:.2f}s; it may have been "
        f"applied (retry with the same request_id to deduplicate): {exc}",
        request_id=fwd.request_id,
    )


async def call_a_member(
    transport: Transport,
    spec: GroupSpec,
    op: Operation[Req, Resp],
    request: Req,
    timeout: float,
    on_timeout: Callable[[PeerTimeout], Exception] | None = None,
) -> Resp:
    """Send to the group's members in turn until one answers. A member never reached lets
    us try the next; a timeout (the request may have been performed) ends the call as
    `on_timeout(exc)` — or, for an idempotent request (`on_timeout` None), tries the next
    member as well."""
    errors = []
    for member in spec.members:
        try:
            return await transport.call(member, op, request, timeout)
        except PeerUnreachable as exc:
            errors.append(str(exc))
        except PeerTimeout as exc:
            if on_timeout is not None:
                raise on_timeout(exc) from None
            errors.append(str(exc))
    raise NoLeader(f"no member of group {spec.gid} answered: {'; '.join(errors)}", retry_after=0.5)
