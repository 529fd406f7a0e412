"""The OpenAPI description (kv/http/openapi.json) against the code, so neither drifts:
every public route of kv/http/app.py is described under its route name, and nothing else
is; who may call it matches kv/http/access.py; every error code of kv/errors.py is
described under the status kv/http/errors.py gives it, with the headers it sends."""

from __future__ import annotations

import re
from typing import Any

import schemathesis

from kv import errors as e
from kv.http import access
from kv.http.app import make_app
from kv.http.errors import STATUS, status_for
from kv.http.openapi import document

INTERNAL = {"/v1/internal/stream"}  # node-to-node: its own handshake, not the public API
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def described() -> dict[tuple[str, str], dict[str, Any]]:
    """(METHOD, path) → the operation, for every operation of the description."""
    return {
        (method.upper(), path): op
        for path, item in document()["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def registered() -> dict[tuple[str, str], str]:
    """(METHOD, path) → route name, for every route of the app but HEAD (aiohttp adds it to
    each GET) and internal ones; `{key:.+}` written as OpenAPI writes it, `{key}`."""
    app = make_app(None, None, 1.0)  # type: ignore[arg-type]
    out = {}
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD" or path in INTERNAL:
            continue
        assert route.name is not None, (route.method, path)
        out[(route.method, re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path))] = route.name
    return out


def test_every_public_route_is_described_and_nothing_else() -> None:
    assert set(described()) == set(registered())


def test_operation_ids_are_the_route_names() -> None:
    ops, routes = described(), registered()
    assert {k: op["operationId"] for k, op in ops.items()} == routes


def test_who_may_call_each_route_matches_the_access_table() -> None:
    for (method, path), op in described().items():
        name = op["operationId"]
        responses = set(op["responses"])
        if name in access.OPEN:
            assert op.get("security") == [], (method, path)
            assert not responses & {"401", "403"}, (method, path)
        else:
            assert name in access.NEEDS, name
            assert "security" not in op, (method, path)  # the document's default: bearer
            assert {"401", "403"} <= responses, (method, path)


def _codes_of(response: dict[str, Any]) -> set[str]:
    schema = response["content"]["application/json"]["schema"]
    return set(schema["properties"]["error"]["allOf"][1]["properties"]["code"]["enum"])


# the description's shared error responses, by the status kv/http/errors.py gives
RESPONSES = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
    408: "RequestTimeout", 409: "Conflict", 412: "ConditionFailed", 413: "TooLarge",
    501: "NotImplemented", 503: "Unavailable", 504: "UnknownOutcome",
}  # fmt: skip


def _error_classes(cls: type[e.KvError] = e.KvError) -> list[type[e.KvError]]:
    return [sub for c in cls.__subclasses__() for sub in (c, *_error_classes(c))]


def _instance(cls: type[e.KvError]) -> e.KvError:
    exc = e.KvError.__new__(cls)  # whatever its constructor's arguments
    e.KvError.__init__(exc, "x")
    return exc


def test_every_error_code_is_described_under_its_status() -> None:
    components = document()["components"]
    assert set(RESPONSES) == set(STATUS.values())
    codes = {status: _codes_of(components["responses"][name]) for status, name in RESPONSES.items()}
    for cls in _error_classes():
        assert cls.code in codes[status_for(_instance(cls))], cls
    assert set().union(*codes.values()) <= set(components["schemas"]["ErrorCode"]["enum"])
    responses = components["responses"]
    assert responses["Unavailable"]["headers"]["Retry-After"]["required"] is True  # Retryable
    assert responses["Unauthorized"]["headers"]["WWW-Authenticate"]["required"] is True


def test_each_operation_references_only_described_statuses() -> None:
    for (method, path), op in described().items():
        for status in op["responses"]:
            assert re.fullmatch(r"[1-5][0-9][0-9]", status), (method, path, status)
            assert status != "500", (method, path)  # a 500 is always a bug


def test_schemathesis_loads_every_operation() -> None:
    schema = schemathesis.openapi.from_dict(document())
    loaded = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in loaded} == set(described())
