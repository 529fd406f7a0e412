"""The aiohttp server: parse → call kv.service → render (DESIGN.md §5).

Handlers hold no decisions and no error mapping: they parse the request into plain values
(kv/http/parse.py), call the service (the backup routes, kv/http/backup.py, call
kv/backups.py) and render its dict; every `KvError` is rendered by the middleware through
the one table in kv/http/errors.py. Node-to-node calls do not use HTTP routes: the one
internode route, `GET /v1/internal/stream`, upgrades the connection to the framed internode
protocol (kv/http/internode.py, docs/internode.md), authenticated by a challenge-response
handshake — the cluster secret never travels.
"""

from __future__ import annotations

import logging
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from kv.errors import InvalidRequest, KvError, StorageFailed
from kv.http import access, backup, limits, metrics, openapi, ui
from kv.http.errors import ERROR_CODE, response_for
from kv.http.internode import add_routes
from kv.http.parse import DEFAULT_TIMEOUT, MAX_BODY_BYTES, int_param, options, read_json
from kv.http.parse import json_reply as _json
from kv.listing import MAX_LIMIT
from kv.metrics import NodeMetrics
from kv.server_limits import ServerLimits
from kv.service import Service
from kv.storage import StorageError
from kv.wire_server import InternodeServer

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVICE: web.AppKey[Service] = web.AppKey("service", Service)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except KvError as exc:
        return response_for(exc)
    except StorageError as exc:  # a failing disk: loud here, 504 to the client (kv/errors.py)
        log.error("storage failed in %s %s: %s", request.method, request.path, exc)
        return response_for(StorageFailed(f"this node's storage failed: {exc}"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "no_route", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status, "http_error"
        )
        return _error(code, exc.reason, exc.status)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error("internal", "internal error (logged)", 500)


def _error(code: str, message: str, status: int) -> web.Response:
    response = _json({"error": {"code": code, "message": message}}, status)
    response[ERROR_CODE] = code
    return response


def key_of(request: web.Request) -> str:
    """The key path segment, decoded strictly as UTF-8 from the raw path (yarl keeps an
    invalid escape such as %FF as literal text, which would alias the key "%FF"). Both key
    routes put it after the fifth '/' (/v1/keyspaces/{ks}/keys/{key},
    /v1/admin/replica/{ks}/{key}): found by position, not by searching for the keyspace
    name (which the raw path may percent-encode) or for "/keys/" (which a keyspace or key
    may be named)."""
    parts = request.raw_path.split("?", 1)[0].split("/", 5)
    if len(parts) < 6:  # a path the router matched only after removing dot segments
        raise InvalidRequest("key", "must be the path segment after the keyspace")
    segment = parts[5]
    try:
        return urllib.parse.unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("key", "must be valid UTF-8 once percent-decoded") from None


# ---------------------------------------------------------------------- public routes
async def list_keyspaces(request: web.Request) -> web.Response:
    return _json({"keyspaces": request.app[SERVICE].list_keyspaces()})


async def get_keyspace(request: web.Request) -> web.Response:
    service, name = request.app[SERVICE], request.match_info["ks"]
    return _json(await service.describe_keyspace(name, options(request).timeout_s))


async def put_keyspace(request: web.Request) -> web.Response:
    body = await read_json(request)
    status, config = await request.app[SERVICE].put_keyspace(
        request.match_info["ks"], body, options(request).timeout_s
    )
    return _json(config, {"created": 201, "switching": 202}.get(status, 200))


async def delete_keyspace(request: web.Request) -> web.Response:
    await request.app[SERVICE].delete_keyspace(request.match_info["ks"], options(request).timeout_s)
    return web.Response(status=204)


async def cancel_switch(request: web.Request) -> web.Response:
    service, name = request.app[SERVICE], request.match_info["ks"]
    policy = request.query.get("siblings")
    return _json(await service.cancel_switch(name, policy, options(request).timeout_s), 202)


async def list_keys(request: web.Request) -> web.Response:
    """A page of keys in order, and the cursor to continue from (kv/listing.py)."""
    service, q = request.app[SERVICE], request.query
    limit = int_param(request, "limit", 1, MAX_LIMIT)
    page = await service.list_keys(
        request.match_info["ks"], q.get("prefix", ""), q.get("after"), limit, options(request)
    )
    return _json(page)


async def get_key(request: web.Request) -> web.Response:
    service, m = request.app[SERVICE], request.match_info
    return _json(await service.get_key(m["ks"], key_of(request), options(request)))


async def put_key(request: web.Request) -> web.Response:
    service, m = request.app[SERVICE], request.match_info
    body = await read_json(request)
    return _json(await service.put_key(m["ks"], key_of(request), body, options(request)))


async def delete_key(request: web.Request) -> web.Response:
    service, m = request.app[SERVICE], request.match_info
    body = await read_json(request)
    if body is None:  # DESIGN.md §5: the condition may come in the query instead
        body = _delete_query(request)
    return _json(await service.delete_key(m["ks"], key_of(request), body, options(request)))


def _delete_query(request: web.Request) -> dict[str, Any] | None:
    body: dict[str, Any] = {}
    if "context" in request.query:
        body["context"] = request.query["context"]
    version = int_param(request, "if_version", 0, 1 << 62)
    if version is not None:
        body["if_version"] = version
    return body or None


async def replica_state(request: web.Request) -> web.Response:
    service, m = request.app[SERVICE], request.match_info
    return _json(await service.replica_state(m["ks"], key_of(request), options(request).timeout_s))


# The node's own state for /v1/health, set by the composition root (kv/node.py): whether the
# metadata lists it — {"status": "ok" | "joining" | "degraded", "node": id, "member": bool,
# "fenced_raft_groups": {gid: reason} when degraded}.
NODE_STATE: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("node_state", object)  # type: ignore[arg-type]


async def health(request: web.Request) -> web.Response:
    """200 once the node holds bootstrapped metadata (503 before): `ok` on a member,
    `joining` on a node the metadata does not list yet (docs/membership.md)."""
    md = request.app[SERVICE].metadata()  # NotReady (503) until bootstrapped
    state = request.app.get(NODE_STATE)
    return _json({"status": "ok", "epoch": md.epoch, **(state() if state is not None else {})})


async def cluster(request: web.Request) -> web.Response:
    return _json(request.app[SERVICE].cluster_info())


# ---------------------------------------------------------------------- membership
async def membership_status(request: web.Request) -> web.Response:
    return _json(request.app[SERVICE].membership_status())


async def membership_plan(request: web.Request) -> web.Response:
    return _json(await request.app[SERVICE].membership_plan(await read_json(request)))


async def membership_commit(request: web.Request) -> web.Response:
    service, body = request.app[SERVICE], await read_json(request)
    return _json(await service.membership_commit(body, options(request).timeout_s), 202)


async def membership_abort(request: web.Request) -> web.Response:
    service, body = request.app[SERVICE], await read_json(request)
    return _json(await service.membership_abort(body, options(request).timeout_s), 202)


# ---------------------------------------------------------------------- tokens (kv/auth.py)
async def create_token(request: web.Request) -> web.Response:
    service, body = request.app[SERVICE], await read_json(request)
    return _json(await service.create_token(body, options(request).timeout_s), 201)


async def list_tokens(request: web.Request) -> web.Response:
    return _json({"tokens": request.app[SERVICE].list_tokens()})


async def revoke_token(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    await service.revoke_token(request.match_info["id"], options(request).timeout_s)
    return web.Response(status=204)


KEY = "/v1/keyspaces/{ks}/keys/{key:.+}"
# (method, path, handler, name): every route is named, and kv/http/access.py says by name
# who may call it
ROUTES: tuple[tuple[str, str, Handler, str], ...] = (
    ("GET", "/v1/health", health, "health"),
    ("GET", openapi.PATH, openapi.serve, "openapi"),
    ("GET", "/v1/cluster", cluster, "cluster"),
    ("GET", ui.METRICS_PATH, ui.cluster_metrics, "cluster.metrics"),  # the status page's
    ("GET", "/v1/keyspaces", list_keyspaces, "keyspaces.list"),
    ("GET", "/v1/keyspaces/{ks}", get_keyspace, "keyspace.get"),
    ("PUT", "/v1/keyspaces/{ks}", put_keyspace, "keyspace.put"),
    ("DELETE", "/v1/keyspaces/{ks}", delete_keyspace, "keyspace.delete"),
    ("DELETE", "/v1/keyspaces/{ks}/switch", cancel_switch, "keyspace.switch.cancel"),
    ("GET", "/v1/keyspaces/{ks}/keys", list_keys, "keys.list"),
    ("GET", "/v1/keyspaces/{ks}/export", backup.export, "keyspace.export"),
    ("POST", "/v1/keyspaces/{ks}/import", backup.import_, "keyspace.restore"),
    ("GET", KEY, get_key, "key.get"),
    ("PUT", KEY, put_key, "key.put"),
    ("DELETE", KEY, delete_key, "key.delete"),
    ("GET", "/v1/admin/replica/{ks}/{key:.+}", replica_state, "admin.replica"),
    ("GET", "/v1/membership", membership_status, "membership.status"),
    ("POST", "/v1/membership/plan", membership_plan, "membership.plan"),
    ("POST", "/v1/membership/commit", membership_commit, "membership.commit"),
    ("POST", "/v1/membership/abort", membership_abort, "membership.abort"),
    ("POST", "/v1/tokens", create_token, "tokens.create"),
    ("GET", "/v1/tokens", list_tokens, "tokens.list"),
    ("DELETE", "/v1/tokens/{id}", revoke_token, "tokens.revoke"),
    ("GET", "/metrics", metrics.scrape, "metrics"),  # Prometheus (docs/metrics.md)
    ("GET", ui.PATH, ui.serve, "ui"),  # the status page (docs/status_page.md)
)


def make_app(
    service: Service,
    internode: InternodeServer,
    default_timeout_s: float,
    auth: bool = False,
    server_limits: ServerLimits | None = None,
) -> web.Application:
    """`auth`: check every request's token (kv/http/access.py; errors rendered outside).
    `server_limits`: the body deadline (kv/http/limits.py); `Server.listen` applies the rest."""
    # metrics outside the error middleware: it times and counts the rendered responses
    measure = metrics.middleware(lambda name: service.mode_of(name))
    middlewares: list[Middleware] = [limits.middleware, measure, errors_middleware]
    if auth:
        middlewares.append(access.middleware(service.authenticate))
    app = web.Application(
        middlewares=middlewares,
        client_max_size=MAX_BODY_BYTES,
        # a 1024-byte key percent-encodes to 3 KiB; leave room so over-long keys reach our
        # 413 instead of the parser's plain-text 400
        handler_args={"max_line_size": 32768, "max_field_size": 32768},
    )
    app[SERVICE] = service
    app[DEFAULT_TIMEOUT] = default_timeout_s
    app[metrics.METRICS] = NodeMetrics()  # requests only; kv/node.py sets a node's
    if server_limits is not None:
        app[limits.LIMITS] = server_limits
    for method, path, handler, name in ROUTES:
        if method == "GET":  # and HEAD, as aiohttp's add_get does
            app.router.add_get(path, handler, name=name)
        else:
            app.router.add_route(method, path, handler, name=name)
    add_routes(app, internode)
    return app


class Server:
    """The API listener of a node (the only place aiohttp's server runner is used)."""

    def __init__(self, runner: limits.LimitedRunner) -> None:
        self._runner = runner

    @staticmethod
    async def listen(
        app: web.Application,
        address: str,
        server_limits: ServerLimits,
        tls: ssl.SSLContext | None = None,
    ) -> Server:
        # a node stop waits at most 5 s for client requests in flight (aiohttp: 60 s)
        runner = limits.LimitedRunner(
            app, server_limits, access_log=None, handle_signals=False, shutdown_timeout=5.0
        )
        await runner.setup()
        host, _, port = address.rpartition(":")
        await web.TCPSite(runner, host, int(port), reuse_address=True, ssl_context=tls).start()
        return Server(runner)

    def connections(self) -> dict[str, int]:
        """Open, refused and timed-out connections of the listener (kv/server_limits.py)."""
        gate = self._runner.gate()
        return gate.stats() if gate is not None else {}

    async def close(self) -> None:
        await self._runner.cleanup()
