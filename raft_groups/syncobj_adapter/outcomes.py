"""How a group's futures end: a pysyncobj FAIL_REASON or a read's error becomes the typed
error the API maps (kv/errors.py), by whether the command can have been applied. Runs on
the caller's event loop (`loop.call_soon_threadsafe` from the driver thread)."""

from __future__ import annotations

import asyncio
from typing import Any

from pysyncobj import FAIL_REASON

from kv.errors import KvError, NoLeader, Retryable, UnknownOutcome


def settle(fut: asyncio.Future[Any], result: Any, reason: int) -> None:
    if fut.done():
        return
    if reason == FAIL_REASON.SUCCESS:
        fut.set_result(result)
    else:
        fut.set_exception(error_for(reason))


def fail(fut: asyncio.Future[Any], error: KvError) -> None:
    if not fut.done():
        fut.set_exception(error)


def settle_read(fut: asyncio.Future[None], error: KvError | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)


def error_for(reason: int) -> KvError:
    """FAIL_REASON → typed error, by whether the command can have been applied."""
    if reason in (FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME):
        # measured: 59 of 178 LEADER_CHANGED commands were applied (DESIGN.md §3)
        return UnknownOutcome(
            "the Raft leader changed before the command committed; it may have been applied"
        )
    if reason in (FAIL_REASON.MISSING_LEADER, FAIL_REASON.NOT_LEADER):
        return NoLeader(
            "no Raft leader is available; the command was not proposed", retry_after=0.5
        )
    if reason == FAIL_REASON.DISCARDED:
        return NoLeader(
            "a new Raft leader discarded the command; it was not applied", retry_after=0.2
        )
    return Retryable(
        f"Raft refused the command (reason {reason}); it was not applied", retry_after=0.5
    )
