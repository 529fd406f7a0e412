"""Internode transport for the Dynamo coordinator: a narrow Protocol and its aiohttp shell.

`call(node, op, payload, timeout)` returns the peer's JSON reply or raises:
- `PeerUnreachable`: the request certainly did not reach the peer's handler (connect
  refused, DNS failure) — the operation was not performed there;
- `PeerTimeout`: sent but no reply in time — it may have been performed;
- a `KvError` the peer answered with (rebuilt by `kv.errors.from_wire`).

Calls to this node itself skip HTTP and go straight to the local handler. The in-project
twin for the simulation tier is `tests/sim/sim_transport.py` (used by both replication modes).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp

from kv.errors import from_wire

LocalHandler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
SECRET_HEADER = "X-Kv-Cluster-Secret"


class PeerUnreachable(Exception):
    """The peer never received the request."""


class PeerTimeout(Exception):
    """The request may have been performed; no reply arrived in time."""


class Transport(Protocol):
    async def call(
        self, node: str, op: str, payload: dict[str, Any], timeout: float
    ) -> dict[str, Any]: ...


class HttpTransport:
    """Pooled keep-alive aiohttp sessions to `/v1/internal/rpc/{op}` on peers."""

    def __init__(
        self,
        self_id: str,
        resolve: Callable[[str], str | None],
        secret: str,
        local: LocalHandler,
    ) -> None:
        self._self_id = self_id
        self._resolve = resolve
        self._secret = secret
        self._local = local
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=256, limit_per_host=64, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={SECRET_HEADER: self._secret},
                json_serialize=lambda o: json.dumps(o, separators=(",", ":")),
            )
        return self._session

    async def call(
        self, node: str, op: str, payload: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        if node == self._self_id:
            return await self._local(op, payload)
        address = self._resolve(node)
        if address is None:
            raise PeerUnreachable(f"node {node!r} is not a member")
        url = f"http://{address}/v1/internal/rpc/{op}"
        try:
            async with self._client().post(
                url, json=payload, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise from_wire(resp.status, body)
                result: dict[str, Any] = body
                return result
        except aiohttp.ClientConnectorError as exc:
            raise PeerUnreachable(f"{node} at {address}: {exc}") from None
        except TimeoutError:
            raise PeerTimeout(f"{node} did not answer {op} within {timeout:.2f}s") from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise PeerTimeout(f"{node} {op}: {exc.__class__.__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
