"""The status page as served (kv/http/ui.py, kv/http/ui.html): one file, nothing loaded from
elsewhere, a Content-Security-Policy naming exactly its inline script and style, and every
route its script polls is a route of the API (docs/status_page.md)."""

from __future__ import annotations

import base64
import hashlib
import re

from kv.http import access
from kv.http.app import ROUTES
from kv.http.ui import page


def directives() -> dict[str, str]:
    _, policy = page()
    return dict(d.split(" ", 1) for d in policy.split("; "))


def test_nothing_is_loaded_from_elsewhere() -> None:
    html = page()[0].decode()
    assert re.findall(r'\b(?:src|href)="([^"]*)"', html) == ["data:,"]  # the empty icon
    assert "@import" not in html and "url(" not in html
    csp = directives()
    assert csp["default-src"] == "'none'" and csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"


def test_the_policy_allows_exactly_the_inline_script_and_style() -> None:
    html = page()[0].decode()
    csp = directives()
    for tag in ("script", "style"):
        (body,) = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert csp[f"{tag}-src"] == f"'sha256-{digest}'"
    assert "style=" not in html  # an inline style attribute would need 'unsafe-inline'


def test_the_script_polls_only_routes_of_the_api() -> None:
    script = page()[0].decode()
    polled = set(re.findall(r'"(/v1/[a-z/]+)"', script))
    get_routes = {path: name for method, path, _, name in ROUTES if method == "GET"}
    assert polled == {
        "/v1/health",
        "/v1/cluster",
        "/v1/keyspaces",
        "/v1/cluster/metrics",
        "/v1/membership",
    }
    assert polled <= set(get_routes)
    assert get_routes["/ui"] in access.OPEN
    assert {access.NEEDS[get_routes[p]][0] for p in polled - {"/v1/health"}} == {"read", "admin"}
