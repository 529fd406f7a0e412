"""The one table mapping typed errors to HTTP (DESIGN.md §5; Riak `handle_common_error`).

Handlers never choose status codes for errors: they raise `KvError`s and the middleware in
kv/http/app.py renders them through `response_for`. A 5xx never means "maybe" unless it is
504, whose message says the request may have been applied.
"""

from __future__ import annotations

import json
import math

from aiohttp import web

from kv import errors as e

# the error code of an error response, for the metrics middleware (kv/http/metrics.py)
ERROR_CODE: web.ResponseKey[str] = web.ResponseKey("error_code", str)

STATUS: dict[type[e.KvError], int] = {
    e.InvalidRequest: 400,
    e.MalformedJson: 400,
    e.Unauthorized: 401,
    e.Forbidden: 403,
    e.KeyspaceNotFound: 404,
    e.KeyNotFound: 404,
    e.KeyspaceConflict: 409,
    e.PlanConflict: 409,
    e.SiblingLimit: 409,
    e.SiblingSetTooLarge: 409,
    e.RequestIdConflict: 409,
    e.RequestTimeout: 408,
    e.ConditionFailed: 412,
    e.TooLarge: 413,
    e.NotImplementedYet: 501,
    e.QuorumUnavailable: 503,
    e.NoLeader: 503,
    e.NotReady: 503,
    e.Retryable: 503,
    e.UnknownOutcome: 504,
}


def status_for(exc: e.KvError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def response_for(exc: e.KvError) -> web.Response:
    headers = {}
    if isinstance(exc, e.Retryable):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, e.Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="kv"'
    response = web.Response(
        status=status_for(exc),
        body=json.dumps(exc.to_wire()).encode(),
        content_type="application/json",
        headers=headers,
    )
    response[ERROR_CODE] = exc.code
    return response
