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
       applied; look with `kvctl status` before retrying
    5  not done: `status --wait` reached its --timeout with the plan still moving
"""

from __future__ import annotations

from kv.errors import InvalidRequest, KvError, PlanConflict, Retryable, UnknownOutcome

OK = 0
REFUSED = 1
USAGE = 2
UNAVAILABLE = 3
UNKNOWN = 4
NOT_DONE = 5

PLAN_CHANGED = "the cluster changed since `kvctl plan show`; run `kvctl plan show` again"


class KvctlError(Exception):
    """A failure of kvctl's own, with its exit code."""

    def __init__(self, message: str, code: int = REFUSED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def failure(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, one-line message) for an error kvctl reports; None for anything else
    (click's own exits and usage errors, bugs), which propagates."""
    if isinstance(exc, KvctlError):
        return exc.code, _line(exc.message)
    if not isinstance(exc, KvError):
        return None
    if isinstance(exc, UnknownOutcome):
        return UNKNOWN, _line(
            f"unknown outcome ({exc.message}): it may have been applied; "
            "check `kvctl status` before retrying"
        )
    if isinstance(exc, Retryable):
        return UNAVAILABLE, _line(f"unavailable: {exc.message}")
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
