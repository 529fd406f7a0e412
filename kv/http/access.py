"""Who may call which route: the one table of route → needed role (kv/auth.py).

Every named route of kv/http/app.py is in `NEEDS` or `OPEN` (tests/unit/test_access.py
checks it), so a new route cannot be added without deciding who may call it. `ks` names
the path segment holding the keyspace a request acts on, which a scoped token must cover.
With auth off (node setting `auth = false`, the default for a loopback cluster) nothing is
checked. The internode upgrade route has no name and its own handshake; a request that
matches no route is a 404 without a token check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from kv import auth

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Authenticate = Callable[[str | None], auth.Token]

# load balancers probe health without a token; the API description and the status page
# hold no data (the page's own calls send the token pasted into it: docs/status_page.md)
OPEN = frozenset({"health", "openapi", "ui"})
NEEDS: dict[str, tuple[str, str | None]] = {  # route name → (role, keyspace segment)
    "cluster": ("read", None),
    "metrics": ("read", None),  # Prometheus scrapes with a read token (docs/security.md)
    "cluster.metrics": ("read", None),  # every member's request totals, for the status page
    "keyspaces.list": ("read", None),
    "keyspace.get": ("read", "ks"),
    "keyspace.put": ("admin", "ks"),
    "keyspace.delete": ("admin", "ks"),
    "keyspace.switch.cancel": ("admin", "ks"),
    # a backup reads every key and version of the keyspace, a restore writes them past any
    # condition: admin (docs/backup.md)
    "keyspace.export": ("admin", "ks"),
    "keyspace.restore": ("admin", "ks"),
    "keys.list": ("read", "ks"),
    "key.get": ("read", "ks"),
    "key.put": ("write", "ks"),
    "key.delete": ("write", "ks"),
    "admin.replica": ("admin", None),
    "membership.status": ("admin", None),
    "membership.plan": ("admin", None),
    "membership.commit": ("admin", None),
    "membership.abort": ("admin", None),
    "tokens.create": ("admin", None),
    "tokens.list": ("admin", None),
    "tokens.revoke": ("admin", None),
}


def middleware(authenticate: Authenticate) -> Middleware:
    """Checks the bearer token of every request to a route in `NEEDS` (401, 403 raised as
    KvErrors: the error middleware around this one renders them)."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        name = request.match_info.route.name
        if name is not None and name not in OPEN:
            role, segment = NEEDS[name]
            token = authenticate(request.headers.get("Authorization"))
            keyspace = request.match_info.get(segment) if segment is not None else None
            auth.authorize(token, auth.Need(role, keyspace))
        return await handler(request)

    return check
