"""Reads that are stale beyond doubt, for the negative controls of the linearizability checker.

A negative control runs with `consistency=stale` reads and expects the checker to reject the
history. Whether a stale read lands on a replica that is behind in a given run is luck, so
the controls repeat runs until the checker reports a violation (up to a deadline), and use
`provably_stale` to make sure no run the checker accepted contained a stale read it missed.

A read is provably stale when a write or successful CAS on the same key was acknowledged
(its return) before the read was sent (its call) and reported a higher version than the
read observed. Versions only grow while a key is never deleted (DESIGN.md §3: +1 on each
write; a delete resets to 0), so keys with any delete in the history are skipped: the test
is sound (no false alarm), not complete (the checker finds more).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from verification.history import Op


def provably_stale(history: Iterable[Op]) -> list[tuple[Op, Op]]:
    """(read, write) pairs: `write` returned before `read` was called, with a higher version."""
    by_key: dict[str, list[Op]] = {}
    for op in history:
        by_key.setdefault(op.key, []).append(op)
    found: list[tuple[Op, Op]] = []
    for ops in by_key.values():
        if not any(op.kind == "delete" for op in ops):
            found += _stale_in_key(ops)
    return found


def _stale_in_key(ops: list[Op]) -> list[tuple[Op, Op]]:
    acked = sorted((op for op in ops if _acked_write(op)), key=_ret)
    rets = [_ret(w) for w in acked]
    newest: list[Op] = []  # newest[i]: the highest-version write among acked[: i + 1]
    for w in acked:
        newest.append(w if not newest or _version(w) > _version(newest[-1]) else newest[-1])
    found = []
    for read in ops:
        if read.kind != "read" or read.outcome != "ok" or read.version is None:
            continue
        before = bisect.bisect_left(rets, read.call)  # writes with ret < call
        if before and _version(newest[before - 1]) > read.version:
            found.append((read, newest[before - 1]))
    return found


def _acked_write(op: Op) -> bool:
    return (
        op.kind in ("write", "cas")
        and op.outcome == "ok"
        and not op.condition_failed
        and op.version is not None
        and op.ret is not None
    )


def _ret(op: Op) -> float:
    assert op.ret is not None
    return op.ret


def _version(op: Op) -> int:
    assert op.version is not None
    return op.version
