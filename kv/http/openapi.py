"""`GET /v1/openapi.json`: the OpenAPI 3 description of the public API (DESIGN.md §5).

The description is a hand-written, checked-in file (kv/http/openapi.json, package data),
not generated from the handlers: it is the contract, and tests hold the code to it —
tests/unit/test_openapi.py checks that it names every public route of kv/http/app.py and
no other, with the error codes of kv/http/errors.py; tests/integration/test_openapi_fuzz.py
runs schemathesis against a node and fails on any 5xx or any reply it does not describe.
It needs no token (kv/http/access.py OPEN): it holds no data.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from aiohttp import web

PATH = "/v1/openapi.json"


@functools.cache
def document_bytes() -> bytes:
    return resources.files("kv.http").joinpath("openapi.json").read_bytes()


def document() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(document_bytes())
    return doc


async def serve(request: web.Request) -> web.Response:
    return web.Response(body=document_bytes(), content_type="application/json")
