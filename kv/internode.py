"""The one table of internode operations (DESIGN.md §1 `kv/internode`).

An `Operation` is a name plus the decoders of its request and reply. Requests and replies
are frozen dataclasses with `to_wire()` (JSON-ready) and a `from_wire()` that validates,
because a payload comes from the network: a bad one raises ValueError naming the field.

Each subsystem registers its handlers on the node's one `OpTable` (the Dynamo replica in
dynamo_mode/replica_server.py, gossip, forwarded linearizable requests); the transport
(kv/transport.py) encodes a typed request, the peer's table decodes it, runs the handler
and encodes the reply. A call a node makes to itself skips the wire: the handler gets the
typed request as it is. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from kv.errors import InvalidRequest


class Wire(Protocol):
    def to_wire(self) -> Any: ...


Req = TypeVar("Req", bound=Wire)
Resp = TypeVar("Resp", bound=Wire)


@dataclass(frozen=True)
class Operation(Generic[Req, Resp]):
    name: str
    request: Callable[[Any], Req]  # decodes and validates a request payload
    reply: Callable[[Any], Resp]  # decodes and validates a reply payload


@dataclass(frozen=True)
class _Entry:
    op: Operation[Any, Any]
    handler: Callable[[Any], Awaitable[Any]]


class OpTable:
    """op name → (operation, handler); one per node."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def register(self, op: Operation[Req, Resp], handler: Callable[[Req], Awaitable[Resp]]) -> None:
        if op.name in self._entries:
            raise ValueError(f"internode operation {op.name!r} registered twice")
        self._entries[op.name] = _Entry(op, handler)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            raise InvalidRequest("op", f"unknown internode operation {name!r}")
        return entry

    async def call_local(self, op: Operation[Req, Resp], request: Req) -> Resp:
        """A call to this node itself: the typed request, no encoding."""
        reply: Resp = await self._entry(op.name).handler(request)
        return reply

    async def dispatch(self, name: str, payload: Any) -> Any:
        """Serve one request from the wire: decode, handle, encode. A payload that does not
        decode is the caller's error (400 naming the problem)."""
        entry = self._entry(name)
        try:
            request = entry.op.request(payload)
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidRequest("body", f"{name}: {exc}") from None
        reply = await entry.handler(request)
        return reply.to_wire()


# -- small validators shared by message decoders ---------------------------------------------
def obj(raw: Any, what: str = "payload") -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError(f"{what} must be a JSON object")
    return raw


def integer(raw: Any, name: str, low: int, high: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw < high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}), got {raw!r}")
    return raw


def array(raw: Any, name: str) -> list[Any]:
    if not isinstance(raw, list):
        raise ValueError(f"{name} must be a list")
    return raw


def text(raw: Any, name: str) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"{name} must be a string")
    return raw


def number(raw: Any, name: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw != raw:
        raise ValueError(f"{name} must be a number")
    return float(raw)
