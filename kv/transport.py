"""Internode transport: a narrow Protocol and its aiohttp shell.

`call(node, op, request, timeout)` sends a typed request of an `Operation`
(kv/internode.py) and returns its typed reply, or raises a `KvError` — every failure is
converted here, at the boundary:
- `PeerUnreachable` (503): the request certainly did not reach the peer's handler
  (connection refused, unknown member) — the operation was not performed there;
- `PeerTimeout` (504): sent but no reply in time, or the reply was unreadable — it may
  have been performed;
- a `KvError` the peer answered with (rebuilt by `kv.errors.from_wire`).

Calls to this node itself skip HTTP and go to the local `OpTable` with the typed request.
The in-project twin for the simulation tier is `tests/sim/sim_transport.py`; both pass
tests/sim/test_transport_contract.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Protocol

import aiohttp

from kv.errors import PeerTimeout, PeerUnreachable, from_wire
from kv.internode import Operation, OpTable, Req, Resp

SECRET_HEADER = "X-Kv-Cluster-Secret"


class Transport(Protocol):
    async def call(
        self, node: str, op: Operation[Req, Resp], request: Req, timeout: float
    ) -> Resp: ...


class HttpTransport:
    """Pooled keep-alive aiohttp sessions to `/v1/internal/rpc/{op}` on peers."""

    def __init__(
        self,
        self_id: str,
        resolve: Callable[[str], str | None],
        secret: str,
        local: OpTable,
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

    async def call(self, node: str, op: Operation[Req, Resp], request: Req, timeout: float) -> Resp:
        if node == self._self_id:
            return await self._local.call_local(op, request)
        address = self._resolve(node)
        if address is None:
            raise PeerUnreachable(f"node {node!r} is not a member", retry_after=0.5)
        return await self.call_at(address, op, request, timeout, peer=node)

    async def call_at(
        self,
        address: str,
        op: Operation[Req, Resp],
        request: Req,
        timeout: float,
        peer: str | None = None,
    ) -> Resp:
        """Call a node by its HTTP address rather than its member id: a joining node knows
        only the addresses of its seeds (kv/meta_reader.py). Same failures as `call`."""
        who = f"{peer} at {address}" if peer else address
        url = f"http://{address}/v1/internal/rpc/{op.name}"
        try:
            async with self._client().post(
                url, json=request.to_wire(), timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise from_wire(resp.status, body)
                return op.reply(body)
        except aiohttp.ClientConnectorError as exc:
            raise PeerUnreachable(f"{who}: {exc}", retry_after=0.5) from None
        except TimeoutError:
            raise PeerTimeout(f"{who} did not answer {op.name} within {timeout:.2f}s") from None
        except (aiohttp.ClientError, ValueError, TypeError, KeyError) as exc:
            raise PeerTimeout(f"{who} {op.name}: {exc.__class__.__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
