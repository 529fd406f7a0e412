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

from kv.errors import (
    InvalidRequest,
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
    pr: int | None = None  # eventual only: replies demanded from primaries (Dynamo §4.6)
    pw: int | None = None  # eventual only: acks demanded from primaries, hints excluded


def check_key(key: str) -> None:
    size = len(key.encode())
    if size == 0:
        raise InvalidRequest("key", "must not be empty")
    if size > MAX_KEY_BYTES:
        raise TooLarge("key", size, MAX_KEY_BYTES)


def check_value(value: Any) -> None:
    try:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    except UnicodeEncodeError:
        raise InvalidRequest(
            "value", "contains a lone UTF-16 surrogate (not valid Unicode)"
        ) from None
    if size > MAX_VALUE_BYTES:
        raise TooLarge("value", size, MAX_VALUE_BYTES)


class KeyOps(Protocol):
    """One consistency mode's key operations (dynamo_mode.frontend, raft_groups.frontend).

    They receive the resolved keyspace and an already size-checked key; bodies are the
    parsed JSON (or None) and are validated by the mode, which owns their fields.
    """

    async def get(
        self, md: Metadata, ks: KeyspaceConfig, key: str, opts: Options
    ) -> dict[str, Any]: ...

    async def put(
        self, md: Metadata, ks: KeyspaceConfig, key: str, body: Any, opts: Options
    ) -> dict[str, Any]: ...

    async def delete(
        self, md: Metadata, ks: KeyspaceConfig, key: str, body: Any, opts: Options
    ) -> dict[str, Any]: ...

    def replica_state(self, md: Metadata, ks: KeyspaceConfig, key: str) -> dict[str, Any]: ...

    async def prepare(self, md: Metadata, ks: KeyspaceConfig, timeout: float) -> None:
        """Wait (bounded) until a just-created keyspace can serve through this node."""


class Service:
    def __init__(
        self,
        meta: MetaStore,
        modes: dict[str, KeyOps],
        cluster_info: Callable[[], dict[str, Any]],
    ) -> None:
        self._meta = meta
        self._modes = modes
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
        if config.consistency not in self._modes:
            raise NotImplementedYet(
                f"{config.consistency} keyspaces are not available in this build"
            )
        change = {"type": "put_keyspace", "keyspace": config.to_dict()}
        outcome = await self._meta.change(change, timeout)
        _raise_refused(outcome)
        ks = self.keyspace(name)
        await self._modes[ks.consistency].prepare(self.metadata(), ks, timeout)
        return outcome["status"], ks.to_wire()

    async def delete_keyspace(self, name: str, timeout: float) -> None:
        self.keyspace(name)
        outcome = await self._meta.change({"type": "delete_keyspace", "name": name}, timeout)
        _raise_refused(outcome)

    # ------------------------------------------------------------------ keys
    def _resolve(self, name: str, key: str) -> tuple[Metadata, KeyspaceConfig, KeyOps]:
        md = self.metadata()
        validate_name(name)
        ks = md.keyspace(name)
        if ks is None:
            raise KeyspaceNotFound(name)
        check_key(key)
        mode = self._modes.get(ks.consistency)
        if mode is None:
            raise NotImplementedYet(f"{ks.consistency} keyspaces are not available in this build")
        return md, ks, mode

    async def get_key(self, name: str, key: str, opts: Options) -> dict[str, Any]:
        md, ks, mode = self._resolve(name, key)
        return await mode.get(md, ks, key, opts)

    async def put_key(self, name: str, key: str, body: Any, opts: Options) -> dict[str, Any]:
        md, ks, mode = self._resolve(name, key)
        return await mode.put(md, ks, key, body, opts)

    async def delete_key(self, name: str, key: str, body: Any, opts: Options) -> dict[str, Any]:
        md, ks, mode = self._resolve(name, key)
        return await mode.delete(md, ks, key, body, opts)

    def replica_state(self, name: str, key: str) -> dict[str, Any]:
        md, ks, mode = self._resolve(name, key)
        return mode.replica_state(md, ks, key)


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


def _raise_refused(outcome: dict[str, Any]) -> None:
    if outcome.get("status") != "refused":
        return
    code, message = outcome.get("code"), str(outcome.get("message"))
    if code == "keyspace_conflict":
        raise KeyspaceConflict(message)
    if code == "keyspace_not_found":
        raise KeyspaceNotFound(message.split("'")[1] if "'" in message else message)
    raise InvalidRequest("change", message)
