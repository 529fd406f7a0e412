"""The status page, `GET /ui` (docs/status_page.md), and `GET /v1/cluster/metrics`, the one
route only it needs.

The page is one HTML file with its CSS and JS inline (kv/http/ui.html, package data): no
build step, nothing loaded from anywhere else. Its JS polls this node's JSON routes —
`/v1/health`, `/v1/cluster`, `/v1/keyspaces`, `/v1/membership` and
`/v1/cluster/metrics` (every member's request totals, gathered by this node over the
internode link: kv/request_stats.py) — with the token the user pastes into the page when
auth is on. The page itself is open like /v1/openapi.json (kv/http/access.py OPEN): it
holds no data. Its Content-Security-Policy lets it run only its own inline script and
style (named by their SHA-256) and connect only to this node.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from importlib import resources

from aiohttp import web

from kv import json_codec
from kv.request_stats import ClusterRequestStats

PATH = "/ui"
METRICS_PATH = "/v1/cluster/metrics"
STATS: web.AppKey[ClusterRequestStats] = web.AppKey("request_stats", ClusterRequestStats)
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


@functools.cache
def page() -> tuple[bytes, str]:
    """The page and its Content-Security-Policy."""
    html = resources.files("kv.http").joinpath("ui.html").read_text(encoding="utf-8")
    allowed: dict[str, list[str]] = {"script": [], "style": []}
    for tag, body in _INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        allowed[tag].append(f"'sha256-{digest}'")
    policy = (
        "default-src 'none'",
        f"script-src {' '.join(allowed['script'])}",
        f"style-src {' '.join(allowed['style'])}",
        "connect-src 'self'",
        "img-src data:",  # the empty icon, so the browser asks for no /favicon.ico
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
    return html.encode(), "; ".join(policy)


async def serve(request: web.Request) -> web.Response:
    body, policy = page()
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    }
    return web.Response(body=body, content_type="text/html", charset="utf-8", headers=headers)


async def cluster_metrics(request: web.Request) -> web.Response:
    """Every member's request totals (kv/request_stats.py `gather`)."""
    found = await request.app[STATS].gather()
    return web.Response(body=json_codec.dumps(found), content_type="application/json")
