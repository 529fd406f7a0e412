"""The one error table (DESIGN.md §5 status codes, §8.4: errors typed by the caller's next move
and mapped to HTTP in one table; Riak `handle_common_error`, tikv `errors.rs`).

A 5xx never means "maybe" unless it is 504; 503s carry Retry-After; an error sent over the
wire comes back as the same class (kv.client and internode calls rely on `from_wire`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import kv.client  # noqa: F401  (import every module that may define KvError subclasses)
import kv.node  # noqa: F401  (the composition root imports the rest)
from kv import errors as e
from kv.http.errors import STATUS, response_for, status_for


def all_subclasses(cls: type[e.KvError]) -> Iterator[type[e.KvError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from all_subclasses(sub)


SUBCLASSES = sorted(set(all_subclasses(e.KvError)), key=lambda c: c.__qualname__)

# One instance of each, with details, so the wire round trip has something to carry.
EXAMPLES: dict[type[e.KvError], Callable[[], e.KvError]] = {
    e.InvalidRequest: lambda: e.InvalidRequest("replication", "must be between 1 and 3"),
    e.MalformedJson: lambda: e.MalformedJson("body is not JSON", line=1, column=7),
    e.KeyspaceNotFound: lambda: e.KeyspaceNotFound("ks"),
    e.KeyNotFound: lambda: e.KeyNotFound("absent", context="YQ"),
    e.KeyspaceConflict: lambda: e.KeyspaceConflict("different replication"),
    e.PlanConflict: lambda: e.PlanConflict("the metadata changed", reason="plan_changed"),
    e.SiblingLimit: lambda: e.SiblingLimit("33 siblings", count=33, limit=32),
    e.SiblingSetTooLarge: lambda: e.SiblingSetTooLarge("5 MiB", size=5 << 20, limit=4 << 20),
    e.ConditionFailed: lambda: e.ConditionFailed(current_version=7),
    e.RequestTimeout: lambda: e.RequestTimeout("the request body did not arrive within 30s"),
    e.RequestIdConflict: lambda: e.RequestIdConflict("request_id 'r1' was used for another"),
    e.TooLarge: lambda: e.TooLarge("value", 2_000_000, 1_048_576),
    e.NotImplementedYet: lambda: e.NotImplementedYet("transactions"),
    e.Unauthorized: lambda: e.Unauthorized("this request needs a token"),
    e.Forbidden: lambda: e.Forbidden("token 'ci' has role read; this request needs write"),
    e.Retryable: lambda: e.Retryable("try again", retry_after=0.5),
    e.QuorumUnavailable: lambda: e.QuorumUnavailable("1 of 2", retry_after=2.5, replies=1),
    e.NoLeader: lambda: e.NoLeader("no leader", retry_after=0.2, leader_hint="n2"),
    e.NotReady: lambda: e.NotReady("booting"),
    e.UnknownOutcome: lambda: e.UnknownOutcome("may have been applied"),
    e.PeerUnreachable: lambda: e.PeerUnreachable("n2: connection refused", retry_after=0.5),
    e.PeerTimeout: lambda: e.PeerTimeout("n2 did not answer fetch within 2.00s"),
    e.StorageFailed: lambda: e.StorageFailed("this node's storage failed: I/O error"),
}

# Raised by the internode transport only: to a client they are their parent (same code and
# status); a peer's error reply is never rebuilt as one of them (kv/errors.py).
LOCAL_ONLY = {e.PeerUnreachable: e.Retryable, e.PeerTimeout: e.UnknownOutcome}

# DESIGN.md §5, written out independently of kv/http/errors.py.
EXPECTED_STATUS = {
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
    e.Retryable: 503,
    e.QuorumUnavailable: 503,
    e.NoLeader: 503,
    e.NotReady: 503,
    e.UnknownOutcome: 504,
    e.PeerUnreachable: 503,
    e.PeerTimeout: 504,
    e.StorageFailed: 504,
}


def ids(cls: type[e.KvError]) -> str:
    return cls.__qualname__


def test_every_subclass_has_an_example() -> None:
    # A new error class must be added here, and so to the table checks below.
    assert set(SUBCLASSES) == set(EXAMPLES)


def test_codes_are_unique_snake_case() -> None:
    classes: list[type[e.KvError]] = [e.KvError, *(c for c in SUBCLASSES if c not in LOCAL_ONLY)]
    codes = [c.code for c in classes]
    for local, parent in LOCAL_ONLY.items():
        assert issubclass(local, parent) and local.code == parent.code
    assert len(codes) == len(set(codes))
    for code in codes:
        assert code.isidentifier() and code == code.lower()


@pytest.mark.parametrize("cls", SUBCLASSES, ids=ids)
def test_every_subclass_maps_to_its_documented_status(cls: type[e.KvError]) -> None:
    status = status_for(EXAMPLES[cls]())
    assert status != 500, f"{cls.__qualname__} falls through to 500"
    assert status == EXPECTED_STATUS[cls]


def test_the_table_holds_only_kv_errors_with_valid_statuses() -> None:
    for cls, status in STATUS.items():
        assert issubclass(cls, e.KvError) and 400 <= status < 600


def test_the_base_class_falls_through_to_500() -> None:
    # Only a bug raises a bare KvError; it must not look like any documented outcome.
    assert e.KvError not in STATUS
    assert status_for(e.KvError("bug")) == 500


@pytest.mark.parametrize("cls", SUBCLASSES, ids=ids)
def test_5xx_only_for_retryable_unknown_outcome_and_not_implemented(
    cls: type[e.KvError],
) -> None:
    # DESIGN.md §5: a 5xx never means "maybe" unless it is 504.
    status = status_for(EXAMPLES[cls]())
    if issubclass(cls, e.Retryable):
        assert status == 503
    elif issubclass(cls, e.UnknownOutcome):
        assert status == 504
    elif issubclass(cls, e.NotImplementedYet):
        assert status == 501
    else:
        assert status < 500


@pytest.mark.parametrize("cls", SUBCLASSES, ids=ids)
def test_response_body_and_retry_after(cls: type[e.KvError]) -> None:
    exc = EXAMPLES[cls]()
    resp = response_for(exc)
    assert resp.status == status_for(exc)
    assert resp.content_type == "application/json"
    assert resp.body is not None
    assert json.loads(resp.body) == exc.to_wire()  # type: ignore[arg-type]
    if resp.status == 503:
        assert isinstance(exc, e.Retryable)
        assert int(resp.headers["Retry-After"]) >= max(1, exc.retry_after)
    else:
        assert "Retry-After" not in resp.headers


@pytest.mark.parametrize(("retry_after", "header"), [(0.0, "1"), (0.2, "1"), (1, "1"), (2.5, "3")])
def test_retry_after_is_whole_seconds_rounded_up_at_least_one(
    retry_after: float, header: str
) -> None:
    resp = response_for(e.NoLeader("no leader", retry_after=retry_after))
    assert resp.headers["Retry-After"] == header


@pytest.mark.parametrize("cls", SUBCLASSES, ids=ids)
def test_to_wire_shape(cls: type[e.KvError]) -> None:
    # DESIGN.md §5: {"error": {"code": "<snake_case>", "message": "...", ...details}}
    exc = EXAMPLES[cls]()
    wire = exc.to_wire()
    assert list(wire) == ["error"]
    body = wire["error"]
    assert body["code"] == cls.code and body["message"] == exc.message == str(exc)
    assert {k: v for k, v in body.items() if k not in ("code", "message")} == exc.details
    assert json.loads(json.dumps(wire)) == wire


def test_details_carry_the_callers_next_move() -> None:
    assert e.InvalidRequest("w", "too big").details == {"field": "w"}
    assert e.InvalidRequest("w", "too big").message == "w: too big"
    assert e.ConditionFailed(3).details == {"current_version": 3}
    assert e.KeyspaceNotFound("ks").details == {"keyspace": "ks"}
    assert e.TooLarge("key", 9, 8).details == {"field": "key", "size": 9, "limit": 8}
    assert e.NotReady("booting").details == {"retry_after": 1.0}


@pytest.mark.parametrize("cls", SUBCLASSES, ids=ids)
def test_from_wire_rebuilds_the_same_error(cls: type[e.KvError]) -> None:
    exc = EXAMPLES[cls]()
    back = e.from_wire(status_for(exc), json.loads(json.dumps(exc.to_wire())))
    assert type(back) is LOCAL_ONLY.get(cls, cls)
    assert (back.code, back.message, back.details) == (exc.code, exc.message, exc.details)
    assert str(back) == str(exc)
    assert status_for(back) == status_for(exc)
    if isinstance(exc, e.Retryable):
        assert isinstance(back, e.Retryable) and back.retry_after == exc.retry_after


@pytest.mark.parametrize(
    "body",
    [None, "oops", [], {}, {"error": {}}, {"error": {"code": "no_such_code"}}, {"error": None}],
)
def test_from_wire_of_a_foreign_body_is_a_500_kv_error(body: Any) -> None:
    back = e.from_wire(502, body)
    assert type(back) is e.KvError
    assert status_for(back) == 500
    assert back.message == "HTTP 502" and back.details == {}


def test_from_wire_with_a_string_error_does_not_crash() -> None:
    back = e.from_wire(502, {"error": "Bad Gateway"})
    assert type(back) is e.KvError and back.message == "HTTP 502"
