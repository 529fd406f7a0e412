"""kvctl's exit codes and one-line messages: the one place where a failure — a typed error
of kv/client.py or kvctl's own — becomes what the operator sees. Codes follow the caller's
next move (DESIGN.md §8.4), as the client's errors do:

    0  done
    1  refused: the cluster said no (4xx: an invalid change, a plan conflict) or kvctl
       cannot do it (nothing staged, no plan shown yet, no plan in flight)
    2  usage: a bad command line (click's own code)
    3  unavailable: no node answered, or every answer was a 503 — certainly not applied;
       retry later or with other --endpoints
    4  unknown outcome: a 504 or a connection lost after sending — it may have been
       applied; look before retrying (`kvctl status` for a plan; `put`/`del`: read the
       key, or send it again with the same --request-id)
    5  not done: `status --wait` reached its --timeout with the plan still moving
    6  not found: the key does not exist (`get`) — an answer, not a failure of the cluster
    7  no such keyspace: create it or fix the name
    8  condition failed: `--if-version` did not match; the message names the current version
    9  unhealthy: `cluster health` reached every endpoint it names, and one is not `ok`
   10  damaged archive: `restore` found the archive damaged, truncated or of another
       format version, and wrote nothing (docs/backup.md)

Codes 6-8 follow a 4xx the caller branches on; every other 4xx is 1. An endpoint that does
not answer is 3 everywhere, `cluster health` included.
"""

from __future__ import annotations

from kv.errors import (
    ConditionFailed,
    InvalidRequest,
    KeyNotFound,
    KeyspaceNotFound,
    KvError,
    PlanConflict,
    Retryable,
    UnknownOutcome,
)

OK = 0
REFUSED = 1
USAGE = 2
UNAVAILABLE = 3
UNKNOWN = 4
NOT_DONE = 5
NOT_FOUND = 6
NO_KEYSPACE = 7
CONDITION_FAILED = 8
UNHEALTHY = 9
DAMAGED = 10

PLAN_CHANGED = "the cluster changed since `kvctl plan show`; run `kvctl plan show` again"


class KvctlError(Exception):
    """A failure of kvctl's own, with its exit code."""

    def __init__(self, message: str, code: int = REFUSED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# What to look at before retrying a write whose outcome is unknown, by command.
_LOOK = {
    "put": "read the key, or send it again with the same --request-id",
    "del": "read the key, or send it again with the same --request-id",
}
_LOOK_PLAN = "check `kvctl status` before retrying"


def failure(exc: BaseException, command: str = "") -> tuple[int, str] | None:
    """(exit code, one-line message) for an error kvctl reports; None for anything else
    (click's own exits and usage errors, bugs), which propagates. `command`: the kvctl
    command that failed (`put`, `plan`, ...), for the advice after an unknown outcome."""
    if isinstance(exc, KvctlError):
        return exc.code, _line(exc.message)
    if not isinstance(exc, KvError):
        return None
    if isinstance(exc, UnknownOutcome):
        look = _LOOK.get(command, _LOOK_PLAN)
        return UNKNOWN, _line(f"unknown outcome ({exc.message}): it may have been applied; {look}")
    if isinstance(exc, Retryable):
        return UNAVAILABLE, _line(f"unavailable: {exc.message}")
    if isinstance(exc, KeyNotFound):
        return NOT_FOUND, _line(f"not found: {exc.message}")
    if isinstance(exc, KeyspaceNotFound):
        return NO_KEYSPACE, _line(f"no such keyspace: {exc.message}")
    if isinstance(exc, ConditionFailed):
        return CONDITION_FAILED, _line(f"condition failed: {exc.message}")
    if isinstance(exc, PlanConflict):
        return REFUSED, _line(_plan_conflict(exc))
    if isinstance(exc, InvalidRequest):
        return REFUSED, _line(f"refused: {exc.message}")
    return REFUSED, _line(f"refused ({exc.code}): {exc.message}")


def _plan_conflict(exc: PlanConflict) -> str:
    reason = exc.details.get("reason")
    if reason == "plan_changed":
        return PLAN_CHANGED
    if reason == "plan_in_flight":
        return (
            f"another plan is in flight ({exc.message}); follow it with "
            "`kvctl status --wait` or stop it with `kvctl abort`"
        )
    if reason == "no_plan":
        return "no plan in flight to abort"
    return f"plan conflict: {exc.message}"


def _line(message: str) -> str:
    return " ".join(message.split())
