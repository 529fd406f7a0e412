"""Typed errors, named by what the caller should do next (tikv `errors.rs` style).

    KvError                      code                 caller's next move
    ├── InvalidRequest           invalid_request      fix the named field
    │   └── MalformedJson        malformed_json       send valid JSON
    ├── KeyspaceNotFound         keyspace_not_found   create it / fix the name
    ├── KeyNotFound              not_found            (absent; eventual reads carry a context)
    ├── KeyspaceConflict         keyspace_conflict    delete and re-create, or keep the old config
    ├── PlanConflict             plan_conflict        re-plan, or wait for / abort the plan
    ├── SiblingLimit             sibling_limit        read, resolve, write back with the context
    │   └── SiblingSetTooLarge   sibling_set_too_large  (the same: the set's bytes, not count)
    ├── ConditionFailed          condition_failed     re-read `current_version`, retry the CAS
    ├── RequestIdConflict        request_id_conflict  a new request_id for a new command
    ├── TooLarge                 too_large            shrink the key or value
    ├── NotImplementedYet        not_implemented      use a supported feature
    ├── Unauthorized             unauthorized         present a valid token (401)
    ├── Forbidden                forbidden            use a token whose role covers it (403)
    ├── Retryable                unavailable          retry after `retry_after` seconds
    │   ├── QuorumUnavailable    quorum_unavailable   (certainly not applied)
    │   ├── NoLeader             no_leader            (certainly not applied)
    │   ├── NotReady             not_ready            (node booting, group not running here)
    │   └── PeerUnreachable      unavailable          internode: never reached the peer
    └── UnknownOutcome           timeout              may have been applied: read before retrying
        ├── PeerTimeout          timeout              internode: sent, no reply in time
        └── StorageFailed        storage_failed       this node's disk failed: use another node

`PeerUnreachable` and `PeerTimeout` are raised by the internode transport (kv/transport.py)
at its boundary; callers that can do better (the Dynamo coordinator reroutes a write that
never reached a primary) catch them, and any that escape map to HTTP like their parents.
They are never rebuilt from a peer's reply (`from_wire`): a peer's 504 is the peer's
`UnknownOutcome`, not a transport failure of ours.

The one mapping to HTTP status codes is `kv.http.errors.STATUS`.
"""

from __future__ import annotations

from typing import Any


class KvError(Exception):
    code = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_wire(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.details}}


class InvalidRequest(KvError):
    code = "invalid_request"

    def __init__(self, field: str, message: str, **details: Any) -> None:
        super().__init__(f"{field}: {message}", field=field, **details)


class MalformedJson(KvError):
    code = "malformed_json"


class KeyspaceNotFound(KvError):
    code = "keyspace_not_found"

    def __init__(self, keyspace: str) -> None:
        super().__init__(f"keyspace {keyspace!r} does not exist", keyspace=keyspace)


class KeyNotFound(KvError):
    code = "not_found"


class KeyspaceConflict(KvError):
    code = "keyspace_conflict"


class PlanConflict(KvError):
    """A membership commit or abort refused: `reason` is plan_changed (the metadata moved on
    since the plan was shown), plan_in_flight (one plan at a time) or no_plan."""

    code = "plan_conflict"


class SiblingLimit(KvError):
    """The write would leave more than the keyspace's `max_siblings` versions (`count`,
    `limit`); nothing was written."""

    code = "sibling_limit"


class SiblingSetTooLarge(SiblingLimit):
    """The write would leave a sibling set of `size` encoded bytes, over `limit`
    (dynamo_mode/siblings.py MAX_SIBLING_BYTES, which keeps every key's versions inside one
    internode frame); nothing was written."""

    code = "sibling_set_too_large"


class ConditionFailed(KvError):
    code = "condition_failed"

    def __init__(self, current_version: int) -> None:
        super().__init__(
            f"if_version did not match; current version is {current_version}",
            current_version=current_version,
        )


class RequestIdConflict(KvError):
    """A request_id already used (within the dedupe window) for a different command."""

    code = "request_id_conflict"


class TooLarge(KvError):
    code = "too_large"

    def __init__(self, field: str, size: int, limit: int) -> None:
        super().__init__(
            f"{field} is {size} bytes; the limit is {limit}", field=field, size=size, limit=limit
        )


class RequestTimeout(KvError):
    """The client did not send its request in time (kv/http/limits.py): nothing was done."""

    code = "request_timeout"


class NotImplementedYet(KvError):
    code = "not_implemented"


class Unauthorized(KvError):
    code = "unauthorized"


class Forbidden(KvError):
    code = "forbidden"


class Retryable(KvError):
    """Certainly not applied; safe to retry after `retry_after` seconds."""

    code = "unavailable"

    def __init__(self, message: str, retry_after: float = 1.0, **details: Any) -> None:
        super().__init__(message, retry_after=retry_after, **details)
        self.retry_after = retry_after


class QuorumUnavailable(Retryable):
    code = "quorum_unavailable"


class NoLeader(Retryable):
    code = "no_leader"


class NotReady(Retryable):
    code = "not_ready"


class PeerUnreachable(Retryable):
    """Internode: the request certainly did not reach the peer's handler (connection refused,
    unknown member) — the operation was not performed there."""


class UnknownOutcome(KvError):
    """The request may or may not have been applied (HTTP 504)."""

    code = "timeout"


class StorageFailed(UnknownOutcome):
    """This node's storage raised (kv/storage.py StorageError: I/O, corruption) while serving
    the request; other replicas may have applied it. Logged as an error on the node."""

    code = "storage_failed"


class PeerTimeout(UnknownOutcome):
    """Internode: the request was sent (or may have been) and no reply came in time — it may
    have been performed on the peer."""


_LOCAL_ONLY: tuple[type[KvError], ...] = (PeerUnreachable, PeerTimeout)


def from_wire(status: int, body: Any) -> KvError:
    """Rebuild a typed error from an HTTP error reply (used by kv.client and internode calls)."""
    err = body.get("error", {}) if isinstance(body, dict) else {}
    code = err.get("code", "internal") if isinstance(err, dict) else "internal"
    message = err.get("message", f"HTTP {status}") if isinstance(err, dict) else f"HTTP {status}"
    if not isinstance(err, dict):
        err = {}
    details = {k: v for k, v in err.items() if k not in ("code", "message")}
    cls = _BY_CODE.get(code, KvError)
    exc = KvError.__new__(cls)
    KvError.__init__(exc, message, **details)
    if isinstance(exc, Retryable):
        exc.retry_after = float(details.get("retry_after", 1.0))
    return exc


def raise_refused(outcome: dict[str, Any]) -> None:
    """A meta change's refusal (kv/meta_machine.py outcomes) as its typed error; nothing
    for any other outcome."""
    if outcome.get("status") != "refused":
        return
    code, message = outcome.get("code"), str(outcome.get("message"))
    if code == "keyspace_conflict":
        raise KeyspaceConflict(message)
    if code == "keyspace_not_found":
        raise KeyspaceNotFound(message.split("'")[1] if "'" in message else message)
    if code == "plan_conflict":
        raise PlanConflict(message, reason=outcome.get("reason"))
    if code == "not_implemented":
        raise NotImplementedYet(message)
    field, sep, rest = message.partition(": ")
    if code == "invalid_request" and sep and field.isidentifier():
        raise InvalidRequest(field, rest)  # a refusal naming the field at fault
    raise InvalidRequest("change", message)


def _subclasses(cls: type[KvError]) -> list[type[KvError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_subclasses(sub))
    return out


_BY_CODE: dict[str, type[KvError]] = {}
for _cls in _subclasses(KvError):  # depth first: a parent claims its code before a child
    if _cls not in _LOCAL_ONLY:
        _BY_CODE.setdefault(_cls.code, _cls)
