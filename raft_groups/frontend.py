"""Linearizable keyspaces' key operations (DESIGN.md §3, §5).

Any node accepts any request. A member of the key's Raft group proposes locally (pysyncobj
forwards a follower's command to the leader and answers after the entry is applied here);
a node outside the group forwards the request to a member over /v1/internal/rpc.

Outcomes: `ok` → 200 with the key's version; a failed `if_version` → 412
`condition_failed` with `current_version`; no leader / discarded → 503 (not applied);
leader change or timeout → 504 (may have been applied: retry with the same `request_id`,
which the state machine deduplicates).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from kv.errors import (
    ConditionFailed,
    InvalidRequest,
    KeyNotFound,
    KeyspaceNotFound,
    NoLeader,
    NotReady,
)
from kv.keyspace import KeyspaceConfig
from kv.meta import Metadata
from kv.service import Options, check_body, check_value
from kv.transport import PeerUnreachable
from raft_groups import state_machine
from raft_groups.commands import Command
from raft_groups.manager import RaftGroups
from raft_groups.placement import GroupSpec, group_of

Forward = Callable[[str, str, dict[str, Any], float], Awaitable[dict[str, Any]]]
MAX_REQUEST_ID = 128


def _if_version(fields: dict[str, Any]) -> int | None:
    value = fields.get("if_version")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest("if_version", f"must be an integer ≥ 0, got {value!r}")
    return value


def _request_id(fields: dict[str, Any]) -> str:
    rid = fields.get("request_id")
    if rid is None:
        return uuid.uuid4().hex
    if not isinstance(rid, str) or not 0 < len(rid) <= MAX_REQUEST_ID:
        raise InvalidRequest("request_id", f"must be a string of 1..{MAX_REQUEST_ID} characters")
    return rid


def _command(**fields: Any) -> Command:
    try:
        return Command(**fields)
    except ValueError as exc:  # e.g. nesting too deep, lone surrogates in the key
        raise InvalidRequest("body", str(exc)) from None


def _body(body: Any, allowed: set[str]) -> dict[str, Any]:
    fields = check_body(body, allowed | {"context"})
    if "context" in fields:
        raise InvalidRequest("context", "applies only to eventual keyspaces; use if_version")
    return fields


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
    raise InvalidRequest("command", str(result.get("message", result)))


class LinearizableKeys:
    def __init__(self, groups: RaftGroups, self_id: str, forward: Forward) -> None:
        self._groups = groups
        self._self_id = self_id
        self._forward = forward

    # ------------------------------------------------------------------ KeyOps
    async def get(
        self, md: Metadata, ks: KeyspaceConfig, key: str, opts: Options
    ) -> dict[str, Any]:
        spec = group_of(md, ks, key)
        if self._self_id not in spec.members:
            return await self._remote(spec, "lin_get", ks, key, None, opts)
        found = await self._groups.read(spec, ks.uid, key, opts.timeout_s, opts.stale)
        if found is None:
            raise KeyNotFound(f"key {key!r} not found", key=key, version=0)
        value, version = found
        reply: dict[str, Any] = {"key": key, "value": value, "version": version}
        if opts.stale:
            reply["stale"] = True  # served from this replica without a read barrier
        return reply

    async def put(
        self, md: Metadata, ks: KeyspaceConfig, key: str, body: Any, opts: Options
    ) -> dict[str, Any]:
        fields = _body(body, {"value", "if_version", "request_id"})
        if "value" not in fields:
            raise InvalidRequest("value", "is required")
        check_value(fields["value"])
        command = _command(
            op="put",
            uid=ks.uid,
            key=key,
            value=fields["value"],
            if_version=_if_version(fields),
            request_id=_request_id(fields),
        )
        return await self._write(md, ks, key, command, body, opts, "lin_put")

    async def delete(
        self, md: Metadata, ks: KeyspaceConfig, key: str, body: Any, opts: Options
    ) -> dict[str, Any]:
        fields = _body(body, {"if_version", "request_id"})
        command = _command(
            op="delete",
            uid=ks.uid,
            key=key,
            if_version=_if_version(fields),
            request_id=_request_id(fields),
        )
        return await self._write(md, ks, key, command, body, opts, "lin_delete")

    async def prepare(self, md: Metadata, ks: KeyspaceConfig, timeout: float) -> None:
        """Wait until this node runs the keyspace's groups and each has a leader (bounded)."""
        await self._groups.wait_for_leaders(md, ks.replication, timeout)

    def replica_state(self, md: Metadata, ks: KeyspaceConfig, key: str) -> dict[str, Any]:
        spec = group_of(md, ks, key)
        found = state_machine.read(self._groups.engine, spec.number, ks.uid, key)
        return {
            "key": key,
            "group": spec.gid,
            "replicas": list(spec.members),
            "value": found[0] if found else None,
            "version": found[1] if found else 0,
        }

    # ------------------------------------------------------------------ plumbing
    async def _write(
        self,
        md: Metadata,
        ks: KeyspaceConfig,
        key: str,
        command: Command,
        body: Any,
        opts: Options,
        op: str,
    ) -> dict[str, Any]:
        spec = group_of(md, ks, key)
        if self._self_id not in spec.members:
            forwarded = dict(body or {}, request_id=command.request_id)
            return await self._remote(spec, op, ks, key, forwarded, opts)
        return render_write(await self._groups.propose(spec, command, opts.timeout_s))

    async def _remote(
        self, spec: GroupSpec, op: str, ks: KeyspaceConfig, key: str, body: Any, opts: Options
    ) -> dict[str, Any]:
        payload = {
            "keyspace": ks.name,
            "uid": ks.uid,
            "key": key,
            "body": body,
            "timeout_s": opts.timeout_s,
            "stale": opts.stale,
        }
        errors = []
        for member in spec.members:
            try:
                return await self._forward(member, op, payload, opts.timeout_s)
            except PeerUnreachable as exc:
                errors.append(str(exc))
        raise NoLeader(
            f"no member of group {spec.gid} reachable: {'; '.join(errors)}", retry_after=0.5
        )

    async def handle_forwarded(
        self, md: Metadata, op: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """Serve a request another node forwarded here (never forwarded again)."""
        ks = md.keyspace(str(payload.get("keyspace")))
        if ks is None or ks.uid != payload.get("uid"):
            raise KeyspaceNotFound(str(payload.get("keyspace")))
        key = str(payload.get("key"))
        if self._self_id not in group_of(md, ks, key).members:
            raise NotReady(
                "forwarded to a node outside the group (metadata changing)", retry_after=0.2
            )
        opts = Options(
            timeout_s=float(payload.get("timeout_s", 2.0)), stale=bool(payload.get("stale"))
        )
        if op == "lin_get":
            return await self.get(md, ks, key, opts)
        if op == "lin_put":
            return await self.put(md, ks, key, payload.get("body"), opts)
        if op == "lin_delete":
            return await self.delete(md, ks, key, payload.get("body"), opts)
        raise InvalidRequest("op", f"unknown forwarded operation {op!r}")
