"""The provably-stale-read test the negative controls rely on (tests/cluster/stale_reads.py):
it must never call a linearizable read stale, and must see the plain cases."""

from __future__ import annotations

from typing import Any

from tests.cluster.stale_reads import provably_stale
from verification.checker import check
from verification.history import Op

_ids = iter(range(1, 1_000_000))


def op(kind: str, call: float, ret: float | None, version: int | None, **kw: Any) -> Op:
    outcome = kw.pop("outcome", "ok" if ret is not None else "unknown")
    return Op(
        id=next(_ids),
        process=kw.pop("process", 1),
        kind=kind,  # type: ignore[arg-type]
        key=kw.pop("key", "k"),
        call=call,
        ret=ret,
        outcome=outcome,
        version=version,
        **kw,
    )


def test_a_read_older_than_an_acknowledged_write_is_stale_and_the_checker_agrees() -> None:
    w1 = op("write", 0.0, 1.0, 1, value="a")
    w2 = op("write", 2.0, 3.0, 2, value="b")
    read = op("read", 4.0, 5.0, 1, value="a", process=2)
    assert provably_stale([w1, w2, read]) == [(read, w2)]
    assert check([w1, w2, read]).verdict == "violation"


def test_an_absent_read_after_an_acknowledged_write_is_stale() -> None:
    w1 = op("write", 0.0, 1.0, 1, value="a")
    read = op("read", 2.0, 3.0, 0, process=2)
    assert provably_stale([w1, read]) == [(read, w1)]


def test_overlapping_unknown_failed_and_refused_writes_do_not_make_a_read_stale() -> None:
    history = [
        op("write", 0.0, 1.0, 1, value="a"),
        op("write", 1.5, 9.0, 2, value="b"),  # still running when the read was sent
        op("write", 0.5, None, None, value="c"),  # unknown outcome
        op("write", 0.5, 0.8, None, value="d", outcome="fail"),
        op("cas", 0.6, 0.9, 1, value="e", if_version=5, condition_failed=True),
        op("read", 2.0, 3.0, 1, value="a", process=2),
    ]
    assert provably_stale(history) == []


def test_keys_with_a_delete_are_skipped() -> None:
    history = [
        op("write", 0.0, 1.0, 1, value="a"),
        op("delete", 1.5, 2.0, 0),
        op("write", 2.5, 3.0, 1, value="b"),
        op("read", 4.0, 5.0, 1, value="b", process=2),
    ]
    assert provably_stale(history) == []


def test_keys_are_judged_separately() -> None:
    history = [
        op("write", 0.0, 1.0, 3, value="a", key="x"),
        op("read", 2.0, 3.0, 1, value="z", key="y", process=2),
    ]
    assert provably_stale(history) == []
