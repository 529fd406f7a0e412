"""`GET /metrics` and the middleware that times and counts every API request
(docs/metrics.md); the registry and collectors are kv/metrics.py's.

The middleware sits outside the error middleware, so it sees every response as rendered:
`outcome` is "ok" or the error code the error table set (kv/http/errors.py `ERROR_CODE`).
`route` is the matched route's name (kv/http/app.py `ROUTES`), "unmatched" for a 404 or
405 of the router; `mode` is the consistency of the keyspace named in the path, "none"
when there is none. The internode upgrade route is not a request but a link and is not
measured; neither is a request whose handler raised past the error middleware (a
client gone mid-request).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from kv.http.errors import ERROR_CODE
from kv.metrics import CONTENT_TYPE, NodeMetrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

METRICS: web.AppKey[NodeMetrics] = web.AppKey("metrics", NodeMetrics)


def middleware(mode_of: Callable[[str], str]) -> Middleware:
    """`mode_of(keyspace name)`: its consistency, or "none"."""

    @web.middleware
    async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
        info = request.match_info
        route = info.route.name
        if route is None and info.http_exception is None:  # the internode link
            return await handler(request)
        start = time.perf_counter()
        response = await handler(request)
        keyspace = info.get("ks")
        request.app[METRICS].requests.observe(
            route or "unmatched",
            mode_of(keyspace) if keyspace is not None else "none",
            response.get(ERROR_CODE, "ok"),
            time.perf_counter() - start,
        )
        return response

    return measure


async def scrape(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
