"""Client tokens (kv/auth.py, issue 11 item 1): minted with a secret only the client keeps,
checked in constant time against the hash metadata keeps; roles read < write < admin;
scopes limit a token to named keyspaces; every route has a declared need
(kv/http/access.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kv import auth, meta_machine
from kv.errors import Forbidden, InvalidRequest, Unauthorized
from kv.http import access
from kv.meta import Member, Metadata

COUNTER = iter(range(1, 10**6))


def fixed_random(n: int) -> bytes:
    return bytes([next(COUNTER) % 256]) * n


def test_a_minted_token_authenticates_and_metadata_keeps_only_its_hash() -> None:
    token, record = auth.mint("ci", "write", ("carts",))
    assert token.startswith("kv1.") and token.split(".")[2] not in str(record.to_dict())
    assert auth.authenticate(f"Bearer {token}", [record]) == record
    assert auth.Token.from_dict(record.to_dict()) == record
    assert auth.record(token, "ci", "write", ("carts",)) == record


@pytest.mark.parametrize(
    "header",
    [None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer kv1.zz.zz", "Bearer not-a-token"],
)
def test_no_or_malformed_credentials_are_401(header: str | None) -> None:
    _, record = auth.mint("ci", "read", None)
    with pytest.raises(Unauthorized):
        auth.authenticate(header, [record])


def test_a_wrong_secret_or_unknown_id_is_401() -> None:
    token, record = auth.mint("ci", "read", None, fixed_random)
    other, _ = auth.mint("other", "read", None, fixed_random)
    forged = ".".join([*token.split(".")[:2], other.split(".")[2]])
    for bad in (forged, other):
        with pytest.raises(Unauthorized, match="unknown, revoked or wrong"):
            auth.authenticate(f"Bearer {bad}", [record])


@pytest.mark.parametrize(
    ("role", "need", "allowed"),
    [
        ("read", auth.Need("read", "carts"), True),
        ("read", auth.Need("write", "carts"), False),
        ("write", auth.Need("write", "carts"), True),
        ("write", auth.Need("admin", None), False),
        ("admin", auth.Need("admin", None), True),
        ("admin", auth.Need("read", "carts"), True),
    ],
)
def test_roles_are_ordered(role: str, need: auth.Need, allowed: bool) -> None:
    _, record = auth.mint("t", role, None)
    if allowed:
        auth.authorize(record, need)
    else:
        with pytest.raises(Forbidden, match=f"needs {need.role}"):
            auth.authorize(record, need)


def test_a_scoped_token_covers_only_its_keyspaces() -> None:
    _, record = auth.mint("t", "admin", ("carts",))
    auth.authorize(record, auth.Need("write", "carts"))
    auth.authorize(record, auth.Need("read", None))  # the keyspace list, the cluster view
    with pytest.raises(Forbidden, match="does not cover keyspace 'orders'"):
        auth.authorize(record, auth.Need("read", "orders"))
    with pytest.raises(Forbidden, match="needs every one"):
        auth.authorize(record, auth.Need("admin", None))  # membership, tokens


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"role": "read"}, "name"),
        ({"name": "x y", "role": "read"}, "name"),
        ({"name": "x", "role": "root"}, "role"),
        ({"name": "x", "role": "read", "keyspaces": []}, "keyspaces"),
        ({"name": "x", "role": "read", "keyspaces": [1]}, "keyspaces"),
        ({"name": "x", "role": "read", "ttl": 5}, "ttl"),
    ],
)
def test_bad_token_requests_name_the_field(body: object, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        auth.parse_request(body)
    assert caught.value.details.get("field") == field


def test_tokens_are_created_and_revoked_through_metadata() -> None:
    md, _ = meta_machine.apply(
        Metadata(),
        {
            "type": "bootstrap",
            "members": [Member("n1", "h:1", "h:2").to_dict()],
            "partitions": 4,
            "vnodes": 4,
        },
    )
    _, record = auth.mint("ci", "read", None)
    md, outcome = meta_machine.apply(md, {"type": "put_token", "token": record.to_dict()})
    assert outcome["status"] == "created" and md.tokens == (record,)
    again = meta_machine.apply(md, {"type": "put_token", "token": record.to_dict()})[1]
    assert again["status"] == "refused"
    assert Metadata.from_dict(md.to_dict()).tokens == (record,)
    md, outcome = meta_machine.apply(md, {"type": "revoke_token", "id": record.id})
    assert outcome["status"] == "revoked" and md.tokens == ()
    gone = meta_machine.apply(md, {"type": "revoke_token", "id": record.id})[1]
    assert gone["code"] == "not_found"


def test_metadata_of_older_releases_has_no_tokens() -> None:
    md = Metadata(epoch=3, members=(Member("n1", "h:1", "h:2"),))
    raw = md.to_dict()
    del raw["tokens"]
    assert Metadata.from_dict(raw) == replace(md, tokens=())


def test_every_named_route_declares_who_may_call_it() -> None:
    from kv.http.app import make_app

    app = make_app(None, None, 1.0)  # type: ignore[arg-type]
    names = {r.name for r in app.router.routes() if r.name is not None}
    assert names == set(access.NEEDS) | access.OPEN
    routes = app.router.routes()
    unnamed = {r.resource.canonical for r in routes if r.name is None and r.resource}
    assert unnamed == {"/v1/internal/stream"}  # its own handshake (docs/internode.md)
