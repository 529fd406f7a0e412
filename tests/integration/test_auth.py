"""Client authentication on a real node with `auth = true` (kv/auth.py, kv/http/access.py;
issue 11 item 1). Every route is tried without a token, with a read token, with a write
token scoped to another keyspace and with the bootstrap admin token, and must answer
exactly as documented: 401 without a valid token (except /v1/health, /v1/openapi.json and
the status page /ui),
403 when the role or scope does not cover it, the route's own answer otherwise. A revoked
token stops working at once on the node that committed the revocation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kv import auth
from tests.integration.conftest import Api, auth_node, error_of

KS, OTHER = "carts", "orders"
EVENTUAL_1 = {"consistency": "eventual", "replication": 1}


class Client:
    def __init__(self, api: Api, token: str | None) -> None:
        self.api, self.token = api, token

    def call(self, method: str, path: str, body: Any = None) -> int:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        kw: dict[str, Any] = {"headers": headers}
        if body is not None:
            kw["json_body"] = body
        return self.api.request(method, path, **kw).status


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, str]]:
    with auth_node(tmp_path_factory.mktemp("auth")) as node:
        yield node


def mint(api: Api, admin: str, body: dict[str, Any]) -> str:
    reply = api.request(
        "POST", "/v1/tokens", json_body=body, headers={"Authorization": f"Bearer {admin}"}
    )
    assert reply.status == 201, reply
    made = reply.json()
    assert set(made) == {"token", "id", "name", "role", "keyspaces"}
    return str(made["token"])


# (method, path, body, role needed, keyspace named or None, status when allowed)
ROUTES: list[tuple[str, str, Any, str, str | None, int]] = [
    ("GET", "/v1/cluster", None, "read", None, 200),
    ("GET", "/v1/cluster/metrics", None, "read", None, 200),
    ("GET", "/v1/keyspaces", None, "read", None, 200),
    ("GET", f"/v1/keyspaces/{KS}", None, "read", KS, 200),
    ("PUT", f"/v1/keyspaces/{KS}", EVENTUAL_1, "admin", KS, 200),
    ("DELETE", "/v1/keyspaces/gone", None, "admin", "gone", 404),
    ("GET", f"/v1/keyspaces/{KS}/keys/absent", None, "read", KS, 404),
    ("PUT", f"/v1/keyspaces/{KS}/keys/k", {"value": 1}, "write", KS, 200),
    ("DELETE", f"/v1/keyspaces/{KS}/keys/k", None, "write", KS, 200),
    ("GET", f"/v1/admin/replica/{KS}/k", None, "admin", None, 200),
    ("GET", "/v1/membership", None, "admin", None, 200),
    ("POST", "/v1/membership/plan", {"changes": []}, "admin", None, 400),
    ("POST", "/v1/membership/commit", {}, "admin", None, 400),
    ("POST", "/v1/membership/abort", {}, "admin", None, 400),
    ("GET", "/v1/tokens", None, "admin", None, 200),
    ("DELETE", "/v1/tokens/0000000000000000", None, "admin", None, 404),
]


def expected(role: str | None, scope: tuple[str, ...] | None, need: str, ks: str | None) -> str:
    if role is None:
        return "401"
    token = auth.Token("x", "x", role, scope, "")
    try:
        auth.authorize(token, auth.Need(need, ks))
    except Exception:  # noqa: BLE001 - Forbidden: the expectation is a 403
        return "403"
    return "allowed"


def test_every_route_answers_as_documented_for_every_kind_of_token(
    secured: tuple[Api, str],
) -> None:
    api, admin = secured
    as_admin = Client(api, admin)
    for name in (KS, OTHER):
        status = as_admin.call(
            "PUT", f"/v1/keyspaces/{name}", {"consistency": "eventual", "replication": 1}
        )
        assert status in (200, 201), name
    kinds: list[tuple[str | None, tuple[str, ...] | None, Client]] = [
        (None, None, Client(api, None)),
        ("read", None, Client(api, mint(api, admin, {"name": "reader", "role": "read"}))),
        (
            "write",
            (OTHER,),
            Client(api, mint(api, admin, {"name": "w", "role": "write", "keyspaces": [OTHER]})),
        ),
        ("admin", None, as_admin),
    ]
    wrong = []
    for role, scope, client in kinds:
        for method, path, body, need, ks, ok_status in ROUTES:
            want = expected(role, scope, need, ks)
            got = client.call(method, path, body)
            good = got == ok_status if want == "allowed" else str(got) == want
            if not good:
                wrong.append((role, scope, method, path, want, ok_status, got))
        assert client.call("GET", "/v1/health") == 200  # open for load balancers
        assert client.call("GET", "/v1/openapi.json") == 200  # holds no data
        assert client.call("GET", "/ui") == 200  # nor does the status page (its calls do)
    assert not wrong, wrong


def test_401_carries_the_error_format_and_a_bearer_challenge(secured: tuple[Api, str]) -> None:
    api, _ = secured
    reply = api.get("/v1/keyspaces")
    assert reply.status == 401 and error_of(reply)["code"] == "unauthorized"
    assert reply.headers.get("www-authenticate", "").startswith("Bearer")
    forged = api.get(
        "/v1/keyspaces", headers={"Authorization": f"Bearer {auth.mint('x', 'admin', None)[0]}"}
    )
    assert forged.status == 401


def test_a_revoked_token_stops_working(secured: tuple[Api, str]) -> None:
    api, admin = secured
    token = mint(api, admin, {"name": "short-lived", "role": "read"})
    reader = Client(api, token)
    assert reader.call("GET", "/v1/keyspaces") == 200
    listed = api.get("/v1/tokens", headers={"Authorization": f"Bearer {admin}"}).json()["tokens"]
    token_id = next(t["id"] for t in listed if t["name"] == "short-lived")
    assert all("digest" not in t and "token" not in t for t in listed)
    revoked = api.delete(f"/v1/tokens/{token_id}", headers={"Authorization": f"Bearer {admin}"})
    assert revoked.status == 204
    assert reader.call("GET", "/v1/keyspaces") == 401  # the node applied it before answering


def test_keyspace_data_through_a_scoped_write_token(secured: tuple[Api, str]) -> None:
    api, admin = secured
    writer = Client(api, mint(api, admin, {"name": "w2", "role": "write", "keyspaces": [KS]}))
    assert Client(api, admin).call(
        "PUT", f"/v1/keyspaces/{KS}", {"consistency": "eventual", "replication": 1}
    ) in (200, 201)
    assert writer.call("PUT", f"/v1/keyspaces/{KS}/keys/mine", {"value": "v"}) == 200
    assert writer.call("GET", f"/v1/keyspaces/{KS}/keys/mine") == 200
    assert writer.call("PUT", f"/v1/keyspaces/{OTHER}/keys/mine", {"value": "v"}) == 403
