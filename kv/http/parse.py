"""Parsing a request (query parameters, the JSON body) and rendering a JSON reply: the
helpers every handler module of kv/http shares (kv/http/app.py, kv/http/backup.py)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from aiohttp import web

from kv import json_codec
from kv.errors import InvalidRequest, MalformedJson, TooLarge
from kv.http import limits
from kv.routing import MAX_TIMEOUT_S, Options

# Bodies up to this size are parsed so the client gets our 413 naming the field; beyond it
# aiohttp stops reading.
MAX_BODY_BYTES = 8 << 20

_INT_RE = re.compile(r"-?[0-9]{1,18}")

DEFAULT_TIMEOUT: web.AppKey[float] = web.AppKey("default_timeout", float)


def json_reply(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_reply_bytes(body), content_type="application/json")


def _reply_bytes(body: Any) -> bytes:
    """A reply's JSON. What json_codec cannot encode (a lone surrogate or a huge integer:
    API input refuses both, so only an echo of bad input could hold one) goes through the
    stdlib, which escapes it, rather than failing the reply."""
    try:
        return json_codec.dumps(body)
    except TypeError:
        return json.dumps(body).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


async def read_json(request: web.Request) -> Any:
    try:
        raw = await limits.read_body(request)
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge(
            "body", request.content_length or MAX_BODY_BYTES + 1, MAX_BODY_BYTES
        ) from None
    if not raw.strip():
        return None
    try:
        return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedJson(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("body", "JSON nested too deeply") from None


def int_param(request: web.Request, name: str, low: int, high: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not _INT_RE.fullmatch(raw):
        raise InvalidRequest(name, f"must be an integer, got {raw!r}")
    value = int(raw)
    if not low <= value <= high:
        raise InvalidRequest(name, f"must be between {low} and {high}, got {value}")
    return value


def options(request: web.Request) -> Options:
    timeout_ms = int_param(request, "timeout_ms", 1, int(MAX_TIMEOUT_S * 1000))
    consistency = request.query.get("consistency")
    if consistency not in (None, "stale", "linearizable"):
        raise InvalidRequest(
            "consistency", f"must be 'stale' or 'linearizable', got {consistency!r}"
        )
    return Options(
        timeout_s=timeout_ms / 1000 if timeout_ms else request.app[DEFAULT_TIMEOUT],
        r=int_param(request, "r", 1, 64),
        w=int_param(request, "w", 1, 64),
        pr=int_param(request, "pr", 1, 64),
        pw=int_param(request, "pw", 1, 64),
        stale=consistency == "stale",
    )
