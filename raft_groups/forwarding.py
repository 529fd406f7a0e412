"""`lin_forward`: a routed linearizable request sent to a member of the key's Raft group by a
node outside it (raft_groups/frontend.py). Pure messages.

The sender has validated the request; the receiver validates the wire form again (it
comes from the network) and re-routes it under its own metadata. A forwarded write always
carries a `request_id`, so a retry after an unknown outcome is applied at most once.

A put with a time to live is also forwarded by a member that is not the group's leader to
the leader (`to_leader`), which stamps it with its clock (docs/ttl.md); the leader serves
it whatever it finds, never forwarding it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from kv.internode import Operation, integer, number, obj, text
from kv.listing import MAX_LIMIT, ListRequest, Slice
from kv.routing import (
    MAX_REQUEST_ID,
    MAX_TIMEOUT_S,
    MAX_TTL_S,
    DeleteRequest,
    GetRequest,
    KeyRequest,
    PutRequest,
)

ForwardedOp = Literal["get", "put", "delete"]
_OPS: tuple[ForwardedOp, ...] = ("get", "put", "delete")


@dataclass(frozen=True)
class Forwarded:
    op: ForwardedOp
    keyspace: str
    uid: int  # the keyspace incarnation the sender routed for
    key: str
    timeout_s: float
    value: Any = None
    if_version: int | None = None
    request_id: str | None = None
    stale: bool = False
    ttl_ms: int | None = None  # put: the time to live
    to_leader: bool = False  # put: sent to the leader to be stamped there; never sent on

    @staticmethod
    def of_get(req: GetRequest) -> Forwarded:
        return Forwarded("get", *_where(req), stale=req.stale)

    @staticmethod
    def of_put(req: PutRequest, request_id: str, to_leader: bool = False) -> Forwarded:
        return Forwarded(
            "put",
            *_where(req),
            value=req.value,
            if_version=req.if_version,
            request_id=request_id,
            ttl_ms=req.ttl_ms,
            to_leader=to_leader,
        )

    @staticmethod
    def of_delete(req: DeleteRequest, request_id: str) -> Forwarded:
        return Forwarded("delete", *_where(req), if_version=req.if_version, request_id=request_id)

    def get_request(self, base: KeyRequest) -> GetRequest:
        return GetRequest(
            base.keyspace, base.key, base.route, base.timeout_s, base.guard, stale=self.stale
        )

    def put_request(self, base: KeyRequest) -> PutRequest:
        return PutRequest(
            base.keyspace,
            base.key,
            base.route,
            base.timeout_s,
            base.guard,
            value=self.value,
            if_version=self.if_version,
            request_id=self.request_id,
            ttl_ms=self.ttl_ms,
        )

    def delete_request(self, base: KeyRequest) -> DeleteRequest:
        return DeleteRequest(
            base.keyspace,
            base.key,
            base.route,
            base.timeout_s,
            base.guard,
            if_version=self.if_version,
            request_id=self.request_id,
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "keyspace": self.keyspace,
            "uid": self.uid,
            "key": self.key,
            "timeout_s": self.timeout_s,
            "value": self.value,
            "if_version": self.if_version,
            "request_id": self.request_id,
            "stale": self.stale,
            "ttl_ms": self.ttl_ms,
            "to_leader": self.to_leader,
        }

    @staticmethod
    def from_wire(raw: Any) -> Forwarded:
        d = obj(raw)
        op, ttl = d.get("op"), d.get("ttl_ms")
        if op not in _OPS:
            raise ValueError(f"op must be one of {', '.join(_OPS)}, got {op!r}")
        return Forwarded(
            op=op,
            keyspace=text(d.get("keyspace"), "keyspace"),
            uid=integer(d.get("uid"), "uid", 0, 1 << 63),
            key=text(d.get("key"), "key"),
            timeout_s=min(max(number(d.get("timeout_s"), "timeout_s"), 0.001), MAX_TIMEOUT_S),
            value=d.get("value"),
            if_version=_optional_int(d.get("if_version"), "if_version"),
            request_id=_request_id(d.get("request_id")),
            stale=d.get("stale") is True,
            ttl_ms=None if ttl is None else integer(ttl, "ttl_ms", 1, MAX_TTL_S * 1000 + 1),
            to_leader=d.get("to_leader") is True,
        )


def _where(req: KeyRequest) -> tuple[str, int, str, float]:
    return req.keyspace.name, req.keyspace.uid, req.key, req.timeout_s


def _optional_int(raw: Any, name: str) -> int | None:
    return None if raw is None else integer(raw, name, 0, 1 << 63)


def _request_id(raw: Any) -> str | None:
    if raw is None:
        return None
    rid = text(raw, "request_id")
    if not 0 < len(rid) <= MAX_REQUEST_ID:
        raise ValueError(f"request_id must be 1..{MAX_REQUEST_ID} characters")
    return rid


@dataclass(frozen=True)
class ForwardReply:
    body: dict[str, Any]  # the response body the serving member rendered (DESIGN.md §5)

    def to_wire(self) -> dict[str, Any]:
        return self.body

    @staticmethod
    def from_wire(raw: Any) -> ForwardReply:
        return ForwardReply(obj(raw, "reply"))


LIN_FORWARD = Operation("lin_forward", Forwarded.from_wire, ForwardReply.from_wire)


@dataclass(frozen=True)
class ForwardedList:
    """`lin_list`: a key listing's slice of one partition (kv/listing.py), asked of a member
    of its group by a node outside it."""

    keyspace: str
    uid: int
    partition: int
    prefix: str
    after: str | None
    limit: int
    timeout_s: float

    @staticmethod
    def of(req: ListRequest, partition: int) -> ForwardedList:
        ks = req.keyspace
        return ForwardedList(
            ks.name, ks.uid, partition, req.prefix, req.after, req.limit, req.timeout_s
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "keyspace": self.keyspace,
            "uid": self.uid,
            "partition": self.partition,
            "prefix": self.prefix,
            "after": self.after,
            "limit": self.limit,
            "timeout_s": self.timeout_s,
        }

    @staticmethod
    def from_wire(raw: Any) -> ForwardedList:
        d = obj(raw)
        after = d.get("after")
        return ForwardedList(
            keyspace=text(d.get("keyspace"), "keyspace"),
            uid=integer(d.get("uid"), "uid", 0, 1 << 63),
            partition=integer(d.get("partition"), "partition", 0, 1 << 16),
            prefix=text(d.get("prefix"), "prefix"),
            after=None if after is None else text(after, "after"),
            limit=integer(d.get("limit"), "limit", 1, MAX_LIMIT),
            timeout_s=min(max(number(d.get("timeout_s"), "timeout_s"), 0.001), MAX_TIMEOUT_S),
        )


LIN_LIST = Operation("lin_list", ForwardedList.from_wire, Slice.from_wire)
