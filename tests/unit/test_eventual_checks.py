"""Eventual-mode checks (verification/eventual.py) on hand-made histories - each check with a
history it must accept and one it must reject - plus the staleness curve and the recorder
against an in-memory fake of the eventual API."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kv.errors import KeyNotFound, UnknownOutcome
from verification.eventual import (
    EventualConfig,
    EventualOp,
    Ids,
    ReplicaStates,
    Sample,
    check_convergence,
    check_lost_writes,
    check_phantoms,
    diverged,
    final_reads,
    format_curve,
    next_eventual_op,
    probe_order,
    record_eventual,
    staleness_curve,
)
from verification.history import Outcome

_ids = itertools.count(1)


def write(
    value: str,
    t: float,
    outcome: Outcome = "ok",
    *,
    key: str = "k",
    src: EventualOp | None = None,
    process: int = 1,
) -> EventualOp:
    ret = None if outcome == "unknown" else t + 0.01
    return EventualOp(
        id=next(_ids),
        process=process,
        kind="write",
        key=key,
        call=t,
        ret=ret,
        outcome=outcome,
        value=value,
        context_sent=None if src is None else f"ctx{src.id}",
        context_from=None if src is None else src.id,
        context=f"ctx-w{value}" if outcome == "ok" else None,
    )


def read(values: list[str], t: float, *, key: str = "k", final: bool = False) -> EventualOp:
    op_id = next(_ids)
    return EventualOp(
        id=op_id,
        process=0 if final else 2,
        kind="final" if final else "read",
        key=key,
        call=t,
        ret=t + 0.01,
        outcome="ok",
        values=tuple(values),
        context=f"ctx{op_id}",
    )


# ---------------------------------------------------------------------- lost writes
def test_present_and_superseded_writes_are_not_lost() -> None:
    a = write("a", 1.0)
    b = write("b", 1.0, process=3)  # concurrent blind write: a sibling
    seen = read(["a", "b"], 2.0)
    c = write("c", 3.0, src=seen)  # read-modify-write: supersedes a and b
    d = write("d", 4.0, src=c)  # update with c's returned context: supersedes c
    e = write("e", 4.5)  # blind: a sibling of d
    final = read(["d", "e"], 9.0, final=True)
    found = check_lost_writes([a, b, seen, c, d, e, final])
    assert found.verdict == "ok", found.message
    assert found.counts["present"] == 2 and found.counts["superseded"] == 3


def test_an_acknowledged_write_missing_from_the_final_read_is_lost() -> None:
    a = write("a", 1.0)
    b = write("b", 2.0)  # blind: must not destroy a (Dynamo §4.4)
    final = read(["b"], 9.0, final=True)
    found = check_lost_writes([a, b, final])
    assert found.verdict == "violation"
    assert found.counts["lost"] == 1 and "'a'" in found.examples[0]


def test_a_context_that_did_not_include_the_value_does_not_supersede_it() -> None:
    a = write("a", 1.0)
    early = read([], 0.5)  # read before a existed: its context does not include a
    b = write("b", 2.0, src=early)
    found = check_lost_writes([a, early, b, read(["b"], 9.0, final=True)])
    assert found.verdict == "violation" and found.counts["lost"] == 1


def test_an_unknown_superseder_counts_only_once_observed() -> None:
    a = write("a", 1.0)
    seen = read(["a"], 2.0)
    b = write("b", 3.0, "unknown", src=seen)
    final_without_b = read([], 9.0, final=True)
    assert check_lost_writes([a, seen, b, final_without_b]).verdict == "violation"
    final_with_b = read(["b"], 9.0, final=True)
    assert check_lost_writes([a, seen, b, final_with_b]).verdict == "ok"


def test_a_failed_superseder_does_not_count() -> None:
    a = write("a", 1.0)
    seen = read(["a"], 2.0)
    b = write("b", 3.0, "fail", src=seen)
    assert check_lost_writes([a, seen, b, read([], 9.0, final=True)]).verdict == "violation"


def test_a_key_without_a_final_read_is_unknown_never_ok() -> None:
    found = check_lost_writes([write("a", 1.0, key="other")])
    assert found.verdict == "unknown"


def test_unacknowledged_writes_may_be_lost() -> None:
    history = [write("a", 1.0, "unknown"), write("b", 1.0, "fail"), read([], 9.0, final=True)]
    assert check_lost_writes(history).verdict == "ok"


# ---------------------------------------------------------------------- phantoms
def test_values_written_by_clients_are_no_phantoms() -> None:
    history = [write("a", 1.0), write("b", 1.0, "unknown"), read(["a", "b"], 2.0)]
    assert check_phantoms(history).verdict == "ok"


@pytest.mark.parametrize(
    ("history", "why"),
    [
        ([read(["zz"], 2.0)], "never written"),
        ([write("a", 1.0, "fail"), read(["a"], 2.0)], "certainly failed"),
        ([read(["a"], 1.0), write("a", 5.0)], "before its write"),
        ([write("a", 1.0, key="k1"), read(["a"], 2.0, key="k2")], "never written"),
    ],
)
def test_phantoms_are_caught(history: list[EventualOp], why: str) -> None:
    found = check_phantoms(history)
    assert found.verdict == "violation" and why in found.examples[0]


# ---------------------------------------------------------------------- convergence
V1: dict[str, Any] = {"dot": ["n1", 1], "context": {"n1": 1}, "value": "a", "deleted": False}
V2: dict[str, Any] = {"dot": ["n2", 1], "context": {"n2": 1}, "value": "b", "deleted": False}


def test_identical_replicas_converge_whatever_the_order() -> None:
    states: ReplicaStates = {
        "k": {"n1": [V1, V2], "n2": [V2, V1], "n3": [V1, V2]},
        "j": {"n1": [], "n2": []},
    }
    assert diverged(states) == [] and check_convergence(states).verdict == "ok"


def test_missing_version_or_unreadable_replica_is_divergence() -> None:
    tombstone = dict(V1, deleted=True)
    states: ReplicaStates = {
        "k": {"n1": [V1, V2], "n2": [V1], "n3": [V1, V2]},
        "t": {"n1": [V1], "n2": [tombstone]},
        "u": {"n1": [V1], "n2": None},
        "ok": {"n1": [V1], "n2": [V1]},
    }
    found = check_convergence(states)
    assert found.verdict == "violation" and diverged(states) == ["k", "t", "u"]
    assert found.examples[0].startswith("k: ")


# ---------------------------------------------------------------------- staleness
def test_staleness_curve_fractions_per_delay_and_r() -> None:
    samples = [Sample(0, 1, False), Sample(0, 1, True), Sample(0, 2, True), Sample(5, 1, True)]
    points = {(p.delay_ms, p.r): p for p in staleness_curve(samples, (0, 5), (1, 2))}
    assert points[(0, 1)].fraction == 0.5 and points[(0, 2)].fraction == 1.0
    assert points[(5, 2)].trials == 0 and points[(5, 2)].fraction is None
    table = format_curve(list(points.values()))
    assert "R=1" in table and "R=2" in table and "0.500" in table


@given(seed=st.integers(min_value=0, max_value=2**32))
def test_probe_order_is_each_pair_once(seed: int) -> None:
    order = probe_order(random.Random(seed), (0, 1, 2), (1, 2))
    assert sorted(order) == [(d, r) for d in (0, 1, 2) for r in (1, 2)]


def test_next_op_follows_the_mix() -> None:
    rng = random.Random(3)
    kinds = {next_eventual_op(rng, ["a"], {"read": 1.0, "rmw": 0.0}).kind for _ in range(50)}
    assert kinds == {"read"}


# ---------------------------------------------------------------------- recorder on a fake
class FakeStore:
    """Single-copy eventual store: dots per key, contexts are sets of dots (as strings)."""

    def __init__(self, unknown_every: int = 0) -> None:
        self.versions: dict[str, dict[int, Any]] = {}
        self.dots = itertools.count(1)
        self.puts = 0
        self.unknown_every = unknown_every

    async def get(self, ks: str, key: str, *, node: str | None = None, **q: Any) -> dict[str, Any]:
        live = self.versions.get(key, {})
        context = ",".join(str(d) for d in sorted(live))
        if not live:
            raise KeyNotFound("absent", context=context)
        values = [live[d] for d in sorted(live)]
        if len(values) == 1:
            return {"key": key, "value": values[0], "context": context}
        return {"key": key, "siblings": values, "context": context}

    async def put(
        self,
        ks: str,
        key: str,
        value: Any,
        *,
        context: str | None = None,
        node: str | None = None,
        **q: Any,
    ) -> dict[str, Any]:
        seen = {int(d) for d in context.split(",") if d} if context else set()
        live = self.versions.setdefault(key, {})
        for d in seen:
            live.pop(d, None)
        dot = next(self.dots)
        live[dot] = value
        self.puts += 1
        if self.unknown_every and self.puts % self.unknown_every == 0:
            raise UnknownOutcome("applied, but the reply was lost")
        return {"context": ",".join(str(d) for d in sorted(seen | {dot}))}

    async def replica(self, ks: str, key: str, node: str) -> dict[str, Any]:
        raise NotImplementedError


class TickClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 0.001
        return self.t


@pytest.mark.parametrize("unknown_every", [0, 7])
def test_recorder_on_a_correct_store_passes_every_check(unknown_every: int) -> None:
    store = FakeStore(unknown_every)
    cfg = EventualConfig("ks", ["a", "b", "c"], clients=4, duration_s=2.0, seed=11)
    ids = Ids()
    clock = TickClock()

    async def run() -> list[EventualOp]:
        history = await record_eventual(store, cfg, clock, ids)
        return history + await final_reads(store, cfg, ids, 3, clock)

    history = asyncio.run(run())
    kinds = {op.kind for op in history}
    assert kinds == {"read", "write", "final"}
    assert any(op.context_from is not None for op in history)
    assert len({op.id for op in history}) == len(history)
    assert check_lost_writes(history).verdict == "ok"
    assert check_phantoms(history).verdict == "ok"
    if unknown_every:
        assert len({op.process for op in history}) > cfg.clients


def test_recorder_catches_a_store_that_drops_acknowledged_writes() -> None:
    store = FakeStore()
    cfg = EventualConfig("ks", ["a"], clients=2, duration_s=1.0, seed=5)
    ids = Ids()
    clock = TickClock()

    async def run() -> list[EventualOp]:
        history = await record_eventual(store, cfg, clock, ids)
        store.versions.clear()  # the bug: every acknowledged value vanishes
        return history + await final_reads(store, cfg, ids, 3, clock)

    assert check_lost_writes(asyncio.run(run())).verdict == "violation"
