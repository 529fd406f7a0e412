"""The request layer between HTTP and the replication modes.

HTTP handlers (kv/http) parse and render; this layer resolves the keyspace from the current
metadata, enforces the limits, places the key on the ring and dispatches by consistency.
It raises only typed `KvError`s; the one HTTP table in kv/http/errors.py maps them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from dynamo_mode import vclock
from dynamo_mode.coordinator import DynamoCoordinator, Placement, ReadResult
from dynamo_mode.replica import DynamoReplica, KeyRef
from kv.errors import (
    InvalidRequest,
    KeyNotFound,
    KeyspaceConflict,
    KeyspaceNotFound,
    NotImplementedYet,
    NotReady,
    TooLarge,
)
from kv.keyspace import KeyspaceConfig, parse_keyspace, validate_name
from kv.meta import Metadata

MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 1 << 20  # encoded JSON
MAX_TIMEOUT_S = 60.0


class MetaStore(Protocol):
    @property
    def metadata(self) -> Metadata: ...

    async def change(self, change: dict[str, Any], timeout: float) -> dict[str, Any]: ...

    async def wait_for_epoch(self, epoch: int, timeout: float) -> bool: ...


@dataclass(frozen=True)
class Options:
    """Per-request options from the query string, already validated by kv/http."""

    timeout_s: float
    r: int | None = None
    w: int | None = None
    stale: bool = False


def check_key(key: str) -> None:
    size = len(key.encode())
    if size == 0:
        raise InvalidRequest("key", "must not be empty")
    if size > MAX_KEY_BYTES:
        raise TooLarge("key", size, MAX_KEY_BYTES)


def check_value(value: Any) -> None:
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > MAX_VALUE_BYTES:
        raise TooLarge("value", size, MAX_VALUE_BYTES)


def decode_context(raw: Any) -> dict[str, int]:
    if raw is None:
        return {}
    if not isinstance(raw, str):
        raise InvalidRequest("context", "must be the opaque string a GET returned")
    try:
        return vclock.decode_context(raw)
    except ValueError as exc:
        raise InvalidRequest("context", str(exc)) from None


class Service:
    def __init__(
        self,
        meta: MetaStore,
        coordinator: DynamoCoordinator,
        replica: DynamoReplica,
        cluster_info: Callable[[], dict[str, Any]],
    ) -> None:
        self._meta = meta
        self._dynamo = coordinator
        self._replica = replica
        self.cluster_info = cluster_info

    # ------------------------------------------------------------------ keyspaces
    def metadata(self) -> Metadata:
        md = self._meta.metadata
        if not md.bootstrapped:
            raise NotReady("cluster metadata is not bootstrapped yet", retry_after=1.0)
        return md

    def keyspace(self, name: str) -> KeyspaceConfig:
        validate_name(name)
        ks = self.metadata().keyspace(name)
        if ks is None:
            raise KeyspaceNotFound(name)
        return ks

    def list_keyspaces(self) -> list[dict[str, Any]]:
        return [k.to_wire() for k in self.metadata().keyspaces]

    async def put_keyspace(
        self, name: str, body: Any, timeout: float
    ) -> tuple[str, dict[str, Any]]:
        md = self.metadata()
        config = parse_keyspace(name, body, len(md.members))
        if config.consistency == "linearizable":
            raise NotImplementedYet("linearizable keyspaces are not available in this build yet")
        outcome = await self._meta.change(
            {"type": "put_keyspace", "keyspace": config.to_dict()}, timeout
        )
        _raise_refused(outcome)
        return outcome["status"], self.keyspace(name).to_wire()

    async def delete_keyspace(self, name: str, timeout: float) -> None:
        self.keyspace(name)
        outcome = await self._meta.change({"type": "delete_keyspace", "name": name}, timeout)
        _raise_refused(outcome)

    # ------------------------------------------------------------------ keys
    def _place(self, ks: KeyspaceConfig, key: str) -> Placement:
        ring = self.metadata().ring()
        partition = ring.key_partition(ks.name, key)
        return Placement(
            KeyRef(partition, ks.uid, key), ring.preference_list(partition, ks.replication)
        )

    def _eventual(self, name: str, key: str) -> tuple[KeyspaceConfig, Placement]:
        ks = self.keyspace(name)
        check_key(key)
        if ks.consistency != "eventual":
            raise NotImplementedYet("linearizable keyspaces are not available in this build yet")
        return ks, self._place(ks, key)

    async def get_key(self, name: str, key: str, opts: Options) -> dict[str, Any]:
        ks, where = self._eventual(name, key)
        r = _quorum("r", opts.r, ks.read_quorum, ks.replication)
        result = await self._dynamo.get(where, r, opts.timeout_s)
        return render_read(key, result)

    async def put_key(self, name: str, key: str, body: Any, opts: Options) -> dict[str, Any]:
        ks, where = self._eventual(name, key)
        value, context = _write_body(body, need_value=True)
        check_value(value)
        w = _quorum("w", opts.w, ks.write_quorum, ks.replication)
        ctx = await self._dynamo.put(
            where, context, value, False, w, ks.max_siblings, opts.timeout_s
        )
        return {"context": vclock.encode_context(ctx)}

    async def delete_key(self, name: str, key: str, body: Any, opts: Options) -> dict[str, Any]:
        ks, where = self._eventual(name, key)
        _, context = _write_body(body, need_value=False)
        if not context:
            # Delete what a quorum read sees now (a blind tombstone would only be a sibling).
            r = _quorum("r", opts.r, ks.read_quorum, ks.replication)
            seen = await self._dynamo.get(where, r, opts.timeout_s)
            if not seen.live:
                return {"deleted": False, "context": vclock.encode_context(seen.context)}
            context = seen.context
        w = _quorum("w", opts.w, ks.write_quorum, ks.replication)
        ctx = await self._dynamo.put(where, context, None, True, w, ks.max_siblings, opts.timeout_s)
        return {"deleted": True, "context": vclock.encode_context(ctx)}

    def replica_state(self, name: str, key: str) -> dict[str, Any]:
        ks, where = self._eventual(name, key)
        versions = self._replica.fetch(where.ref)
        return {
            "key": key,
            "partition": where.ref.partition,
            "replicas": list(where.replicas),
            "versions": [v.to_wire() for v in versions],
        }


def render_read(key: str, result: ReadResult) -> dict[str, Any]:
    context = vclock.encode_context(result.context)
    live = result.live
    if not live:
        raise KeyNotFound(f"key {key!r} not found", key=key, context=context)
    if len(live) == 1:
        return {"key": key, "value": live[0].value, "context": context}
    return {"key": key, "siblings": [v.value for v in live], "context": context}


def _write_body(body: Any, *, need_value: bool) -> tuple[Any, dict[str, int]]:
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object")
    allowed = {"value", "context", "if_version"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidRequest(unknown[0], f"unknown field (allowed: {', '.join(sorted(allowed))})")
    if "if_version" in body:
        raise InvalidRequest("if_version", "applies only to linearizable keyspaces; use context")
    if need_value and "value" not in body:
        raise InvalidRequest("value", "is required")
    return body.get("value"), decode_context(body.get("context"))


def _quorum(name: str, asked: int | None, default: int, n: int) -> int:
    value = default if asked is None else asked
    if not 1 <= value <= n:
        raise InvalidRequest(
            name, f"must be between 1 and the keyspace's replication ({n}), got {value}"
        )
    return value


def _raise_refused(outcome: dict[str, Any]) -> None:
    if outcome.get("status") != "refused":
        return
    code, message = outcome.get("code"), str(outcome.get("message"))
    if code == "keyspace_conflict":
        raise KeyspaceConflict(message)
    if code == "keyspace_not_found":
        raise KeyspaceNotFound(message.split("'")[1] if "'" in message else message)
    raise InvalidRequest("change", message)
