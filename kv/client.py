"""kv's client: async (`KvClient`) with a blocking wrapper (`SyncClient`).

Retry policy — the outcome is never guessed:
- typed retryable errors (503: `quorum_unavailable`, `no_leader`, `not_ready`) and
  connection failures before the request was sent are retried with exponential backoff,
  on the next node of the list;
- a 504 or a connection lost after sending is an *unknown outcome*: reads (idempotent) are
  retried; writes raise `UnknownOutcome` and are never retried silently (the caller reads
  the key, or — linearizable — sends the write again with the same `request_id`, which
  the Raft group applies at most once);
- every other error is raised as its typed `kv.errors` class.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aiohttp

from kv.errors import KvError, Retryable, UnknownOutcome, from_wire

T = TypeVar("T")


class KvClient:
    def __init__(
        self,
        nodes: Sequence[str],
        *,
        timeout: float = 5.0,
        retries: int = 6,
        backoff: float = 0.05,
        token: str | None = None,
        ca: str | None = None,
    ) -> None:
        """`token`: a client token (kv/auth.py), sent as `Authorization: Bearer`. `ca`: the
        cluster CA's certificate (PEM file; `ops/cluster up --secure` writes DIR/ca.pem):
        nodes given as host:port are then dialled over TLS, checked against it."""
        if not nodes:
            raise ValueError("nodes: at least one host:port is required")
        self._scheme = "https" if ca else "http"
        self._tls = ssl.create_default_context(cafile=ca) if ca else None
        self.nodes = [self._url(n) for n in nodes]
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._session: aiohttp.ClientSession | None = None
        self._next = 0

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=128, ssl=self._tls or True),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
        return self._session

    def _url(self, node: str) -> str:
        return node if node.startswith("http") else f"{self._scheme}://{node}"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> KvClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ transport
    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, Any] | None = None,
        idempotent: bool,
        node: str | None = None,
    ) -> tuple[int, Any]:
        """One API call with the retry policy above; returns (status, JSON body)."""
        q = {k: str(v) for k, v in (query or {}).items() if v is not None}
        suffix = path + ("?" + urllib.parse.urlencode(q) if q else "")
        delay = self._backoff
        for attempt in range(self._retries + 1):
            base = self._url(node) if node else self._pick()
            try:
                return await self._once(method, base + suffix, body)
            except (Retryable, _NotSent) as exc:
                if attempt == self._retries:
                    raise exc.error if isinstance(exc, _NotSent) else exc from None
                pause = exc.retry_after if isinstance(exc, Retryable) else delay
                await asyncio.sleep(min(pause, delay * 4))
            except UnknownOutcome:
                if not idempotent or attempt == self._retries:
                    raise
            delay *= 2
        raise AssertionError("unreachable")

    def _pick(self) -> str:
        self._next = (self._next + 1) % len(self.nodes)
        return self.nodes[self._next]

    async def _once(self, method: str, url: str, body: Any) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", **self._auth}
        try:
            async with self._client().request(method, url, data=data, headers=headers) as resp:
                raw = await resp.read()
                parsed = json.loads(raw) if raw else None
                if resp.status >= 400:
                    raise from_wire(resp.status, parsed)
                return resp.status, parsed
        except aiohttp.ClientConnectorError as exc:
            raise _NotSent(Retryable(f"cannot connect to {url}: {exc}")) from None
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise UnknownOutcome(f"{method} {url}: {exc.__class__.__name__}: {exc}") from None

    # ------------------------------------------------------------------ keyspaces
    async def create_keyspace(self, name: str, **config: Any) -> dict[str, Any]:
        return _obj(await self.request("PUT", f"/v1/keyspaces/{_q(name)}", config, idempotent=True))

    async def get_keyspace(self, name: str) -> dict[str, Any]:
        return _obj(await self.request("GET", f"/v1/keyspaces/{_q(name)}", idempotent=True))

    async def list_keyspaces(self) -> list[dict[str, Any]]:
        keyspaces: list[dict[str, Any]] = _obj(
            await self.request("GET", "/v1/keyspaces", idempotent=True)
        )["keyspaces"]
        return keyspaces

    async def delete_keyspace(self, name: str) -> None:
        await self.request("DELETE", f"/v1/keyspaces/{_q(name)}", idempotent=False)

    async def cancel_switch(self, name: str, siblings: str | None = None) -> dict[str, Any]:
        """Turn keyspace `name`'s switch around (docs/mode_switch.md "Cancel"); `siblings`:
        the policy of the switch back, when cancelling a switch to eventual."""
        path = f"/v1/keyspaces/{_q(name)}/switch"
        if siblings is not None:
            path += "?" + urllib.parse.urlencode({"siblings": siblings})
        return _obj(await self.request("DELETE", path, idempotent=False))

    # ------------------------------------------------------------------ keys
    async def get(
        self, ks: str, key: str, *, node: str | None = None, **query: Any
    ) -> dict[str, Any]:
        """Query: r, consistency ("stale"), timeout_ms. Raises KeyNotFound when absent."""
        path = _key_path(ks, key)
        return _obj(await self.request("GET", path, query=query, idempotent=True, node=node))

    async def put(
        self,
        ks: str,
        key: str,
        value: Any,
        *,
        context: str | None = None,
        if_version: int | None = None,
        request_id: str | None = None,
        ttl_s: float | None = None,
        node: str | None = None,
        **query: Any,
    ) -> dict[str, Any]:
        """`context`: eventual; `if_version`, `request_id`: linearizable (the other mode's
        field is an InvalidRequest); `ttl_s`: either mode, the key expires that many seconds
        after the write (docs/ttl.md). Query: w, pw, timeout_ms. A write that raises
        UnknownOutcome may have been applied: send it again with the same `request_id` and
        it is applied at most once (RequestIdConflict if the id was used for another
        command)."""
        body = {"value": value, **_conditions(context, if_version, request_id)}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        path = _key_path(ks, key)
        return _obj(await self.request("PUT", path, body, query=query, idempotent=False, node=node))

    async def delete(
        self,
        ks: str,
        key: str,
        *,
        context: str | None = None,
        if_version: int | None = None,
        request_id: str | None = None,
        node: str | None = None,
        **query: Any,
    ) -> dict[str, Any]:
        """As `put`; the reply's `deleted` says whether the key existed."""
        body = _conditions(context, if_version, request_id)
        path = _key_path(ks, key)
        reply = await self.request(
            "DELETE", path, body or None, query=query, idempotent=False, node=node
        )
        return _obj(reply)

    async def list_keys(
        self,
        ks: str,
        *,
        prefix: str = "",
        after: str | None = None,
        limit: int | None = None,
        **query: Any,
    ) -> dict[str, Any]:
        """One page, `{"keys": [...], "next": key | None}` (docs/listing.md): continue with
        `after=next` until `next` is None. A page may hold fewer than `limit` keys and still
        have a `next`. Query: timeout_ms."""
        path = f"/v1/keyspaces/{_q(ks)}/keys"
        query = {"prefix": prefix or None, "after": after, "limit": limit, **query}
        return _obj(await self.request("GET", path, query=query, idempotent=True))

    # ------------------------------------------------------------------ backup
    async def export_partition(self, ks: str, partition: int, **query: Any) -> dict[str, Any]:
        """One partition's records, read for a backup (docs/backup.md). Query: timeout_ms."""
        path, query = f"/v1/keyspaces/{_q(ks)}/export", {"partition": partition, **query}
        return _obj(await self.request("GET", path, query=query, idempotent=True))

    async def import_records(self, ks: str, records: list[Any], **query: Any) -> dict[str, Any]:
        """Create-only, so sending it again after an unknown outcome is safe (idempotent)."""
        path, body = f"/v1/keyspaces/{_q(ks)}/import", {"records": records}
        return _obj(await self.request("POST", path, body, query=query, idempotent=True))

    # ------------------------------------------------------------------ cluster
    async def cluster(self, node: str | None = None) -> dict[str, Any]:
        return _obj(await self.request("GET", "/v1/cluster", idempotent=True, node=node))

    async def clusters(self, nodes: Sequence[str]) -> dict[str, dict[str, Any] | KvError]:
        """Each node's own `/v1/cluster`, all asked at once and each once (no retries, no
        other node): a node that does not answer maps to its typed error."""
        return await self._each(nodes, "/v1/cluster")

    async def healths(self, nodes: Sequence[str]) -> dict[str, dict[str, Any] | KvError]:
        """Each node's own `/v1/health` (`{"status": "ok" | "joining" | "degraded", ...}`),
        asked as `clusters` asks: at once, each once, a failure as its typed error."""
        return await self._each(nodes, "/v1/health")

    async def _each(self, nodes: Sequence[str], path: str) -> dict[str, dict[str, Any] | KvError]:
        async def one(node: str) -> dict[str, Any] | KvError:
            try:
                return _obj(await self._once("GET", self._url(node) + path, None))
            except _NotSent as exc:
                return exc.error
            except KvError as exc:
                return exc

        return dict(zip(nodes, await asyncio.gather(*(one(n) for n in nodes)), strict=True))

    # ------------------------------------------------------------------ membership
    async def membership_status(self) -> dict[str, Any]:
        """`GET /v1/membership`: idle, or the plan in flight and its pending moves."""
        return _obj(await self.request("GET", "/v1/membership", idempotent=True))

    async def membership_plan(self, changes: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """What the changes would move (changes nothing, so safe to retry)."""
        body = {"changes": list(changes)}
        return _obj(await self.request("POST", "/v1/membership/plan", body, idempotent=True))

    async def membership_commit(
        self, plan_id: str, changes: Sequence[dict[str, Any]], **query: Any
    ) -> dict[str, Any]:
        """Start the plan `plan_id` (a compare-and-set: PlanConflict if the metadata moved
        on since the plan was made, or another plan is in flight). Query: timeout_ms."""
        body = {"plan_id": plan_id, "changes": list(changes)}
        path = "/v1/membership/commit"
        return _obj(await self.request("POST", path, body, query=query, idempotent=False))

    async def membership_abort(self, plan_id: str, **query: Any) -> dict[str, Any]:
        """Stop the plan in flight: unflipped moves are dropped, flipped ones move back."""
        body = {"plan_id": plan_id}
        path = "/v1/membership/abort"
        return _obj(await self.request("POST", path, body, query=query, idempotent=False))

    # ------------------------------------------------------------------ tokens (kv/auth.py)
    async def create_token(
        self, name: str, role: str, keyspaces: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """A new token: its secret (`token`) is in this reply only."""
        body: dict[str, Any] = {"name": name, "role": role}
        if keyspaces is not None:
            body["keyspaces"] = list(keyspaces)
        return _obj(await self.request("POST", "/v1/tokens", body, idempotent=False))

    async def list_tokens(self) -> list[dict[str, Any]]:
        found = _obj(await self.request("GET", "/v1/tokens", idempotent=True))
        return list(found["tokens"])

    async def revoke_token(self, token_id: str) -> None:
        await self.request("DELETE", f"/v1/tokens/{_q(token_id)}", idempotent=False)

    async def health(self, node: str) -> bool:
        try:
            await self.request("GET", "/v1/health", idempotent=True, node=self._url(node))
        except KvError:
            return False
        return True

    async def replica(self, ks: str, key: str, node: str) -> dict[str, Any]:
        """This node's locally stored versions of a key (`/v1/admin/replica`), no retries."""
        url = f"/v1/admin/replica/{_q(ks)}/{_q(key)}"
        return _obj(await self._once("GET", self._url(node) + url, None))


class _NotSent(Exception):
    def __init__(self, error: Retryable) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = error.retry_after


def _obj(reply: tuple[int, Any]) -> dict[str, Any]:
    body = reply[1]
    return body if isinstance(body, dict) else {}


def _conditions(
    context: str | None, if_version: int | None, request_id: str | None
) -> dict[str, Any]:
    """A write's optional body fields; absent ones are not sent (None is not a value)."""
    given = {"context": context, "if_version": if_version, "request_id": request_id}
    return {k: v for k, v in given.items() if v is not None}


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _key_path(ks: str, key: str) -> str:
    return f"/v1/keyspaces/{_q(ks)}/keys/{_q(key)}"


class SyncClient:
    """Blocking wrapper for scripts and tests: the same methods, run on a private loop."""

    def __init__(self, nodes: Sequence[str], **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = KvClient(nodes, **options)

    def _run(self, make: Callable[[], Awaitable[T]]) -> T:
        return self._loop.run_until_complete(make())

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)
        return lambda *a, **kw: self._run(lambda: method(*a, **kw))

    def close(self) -> None:
        self._run(self._client.close)
        self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
