"""Client authentication and authorization (issue 11 item 1; etcd's RBAC, Riak's security).

A client presents `Authorization: Bearer <token>`. A token is `kv1.<id>.<secret>`: the id
names its record in cluster metadata, the secret (32 random bytes) is never stored — the
record keeps its SHA-256 (`Token.digest`), compared in constant time. A record has a role
and a scope:

    role    may
    read    GET keys, keyspaces, the cluster view
    write   what read may, and PUT / DELETE keys
    admin   everything: keyspaces, membership, tokens, /v1/admin/*

`keyspaces` (None: all) limits a token's key and keyspace operations to the keyspaces it
names (a scoped admin may create and delete those keyspaces); operations on the whole
cluster (membership, tokens, /v1/admin/*) need an admin token of every keyspace. Tokens
live in cluster metadata (kv/meta_machine.py `put_token` / `revoke_token`), so a
revocation reaches a voter when it commits and a non-voter at its next poll (0.5 s).

Outcomes: no token, a malformed one, an unknown id or a wrong secret → 401
`unauthorized`; a valid token whose role or scope does not cover the request → 403
`forbidden`. `/v1/health`, `/v1/openapi.json` and the internode upgrade (its own
handshake) need no token.
Pure: the randomness of `mint` is a parameter.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kv.errors import Forbidden, InvalidRequest, Unauthorized

ROLES = ("read", "write", "admin")
PREFIX = "kv1"
MAX_TOKENS = 1000
_NAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_TOKEN_RE = re.compile(r"kv1\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class Token:
    """A token as cluster metadata keeps it: never the secret."""

    id: str
    name: str
    role: str
    keyspaces: tuple[str, ...] | None  # None: every keyspace
    digest: str  # SHA-256 of the secret, hex

    def to_dict(self) -> dict[str, Any]:
        return {**self.public(), "digest": self.digest}

    def public(self) -> dict[str, Any]:
        keyspaces = list(self.keyspaces) if self.keyspaces is not None else None
        return {"id": self.id, "name": self.name, "role": self.role, "keyspaces": keyspaces}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Token:
        keyspaces = d.get("keyspaces")
        scope = tuple(str(k) for k in keyspaces) if keyspaces is not None else None
        return Token(str(d["id"]), str(d["name"]), str(d["role"]), scope, str(d["digest"]))


@dataclass(frozen=True)
class Need:
    """What a request needs: a role, on a keyspace when it names one."""

    role: str
    keyspace: str | None = None


def parse_request(body: Any) -> tuple[str, str, tuple[str, ...] | None]:
    """(name, role, keyspaces) of a token request `{"name", "role", "keyspaces"?}`."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be an object {name, role, keyspaces?}")
    unknown = sorted(set(body) - {"name", "role", "keyspaces"})
    if unknown:
        raise InvalidRequest(unknown[0], "unknown field (known: name, role, keyspaces)")
    name, role, keyspaces = body.get("name"), body.get("role"), body.get("keyspaces")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidRequest("name", f"must match {_NAME_RE.pattern}, got {name!r}")
    if role not in ROLES:
        raise InvalidRequest("role", f"must be one of {', '.join(ROLES)}, got {role!r}")
    if keyspaces is None:
        return name, role, None
    if not isinstance(keyspaces, list) or not keyspaces:
        raise InvalidRequest("keyspaces", "must be a non-empty list of names, or absent (all)")
    if not all(isinstance(k, str) and k for k in keyspaces):
        raise InvalidRequest("keyspaces", "must hold keyspace names (strings)")
    return name, role, tuple(sorted(set(keyspaces)))


def mint(
    name: str,
    role: str,
    keyspaces: tuple[str, ...] | None,
    random: Callable[[int], bytes] = secrets.token_bytes,
) -> tuple[str, Token]:
    """A new token (shown to its requester once) and the record metadata keeps."""
    token_id = random(8).hex()
    secret = base64.urlsafe_b64encode(random(32)).rstrip(b"=").decode("ascii")
    return f"{PREFIX}.{token_id}.{secret}", Token(token_id, name, role, keyspaces, _digest(secret))


def record(token: str, name: str, role: str, keyspaces: tuple[str, ...] | None) -> Token:
    """The metadata record of an existing token (a bootstrap admin token read from a
    file); ValueError if `token` is not one this module mints."""
    found = _TOKEN_RE.fullmatch(token.strip())
    if found is None:
        raise ValueError("a token is kv1.<16 hex digits>.<43 base64url characters>")
    token_id, secret = found.groups()
    return Token(token_id, name, role, keyspaces, _digest(secret))


def authenticate(header: str | None, tokens: Sequence[Token]) -> Token:
    """The record of the bearer token in `header`; Unauthorized if there is none."""
    if header is None:
        raise Unauthorized("this request needs a token: send Authorization: Bearer <token>")
    scheme, _, value = header.partition(" ")
    found = _TOKEN_RE.fullmatch(value.strip()) if scheme.lower() == "bearer" else None
    if found is None:
        raise Unauthorized("the Authorization header is not Bearer kv1.<id>.<secret>")
    token_id, secret = found.groups()
    record = next((t for t in tokens if t.id == token_id), None)
    # compare even for an unknown id, so timing says nothing about which ids exist
    expected = record.digest if record is not None else "0" * 64
    if not hmac.compare_digest(_digest(secret), expected) or record is None:
        raise Unauthorized("the token is unknown, revoked or wrong")
    return record


def authorize(token: Token, need: Need) -> None:
    """Forbidden unless `token`'s role and scope cover `need`."""
    if ROLES.index(token.role) < ROLES.index(need.role):
        raise Forbidden(
            f"token {token.name!r} has role {token.role}; this request needs {need.role}"
        )
    if token.keyspaces is None:
        return
    if need.keyspace is None and need.role == "admin":
        raise Forbidden(f"token {token.name!r} is scoped to keyspaces; this needs every one")
    if need.keyspace is not None and need.keyspace not in token.keyspaces:
        raise Forbidden(f"token {token.name!r} does not cover keyspace {need.keyspace!r}")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()
