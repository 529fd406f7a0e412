"""The linearizability checker (Herlihy & Wing 1990; Wing & Gong 1993; Lowe 2017).

Labelled histories in tests/data/histories/ are readable scenarios. Properties: a history
recorded from a simulated sequential register is linearizable by construction; a quiet
read changed to a value the register cannot hold must be rejected; and on small perturbed
histories the checker agrees with a naive search over every order (the dumb oracle).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from verification.checker import check
from verification.history import (
    Op,
    describe,
    dump_history,
    from_json,
    load_history,
    op_from_dict,
    to_json,
)

HISTORIES = sorted((Path(__file__).parent.parent / "data" / "histories").glob("*.json"))


# --- labelled histories -------------------------------------------------------------------


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
def test_labelled_history(path: Path) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    result = check(from_json(doc["ops"]))
    expected = "ok" if doc["label"] == "valid" else "violation"
    assert result.verdict == expected, result.message
    assert result.key == doc["offending_key"]
    if expected == "violation":
        assert result.ops_around, "a violation quotes the ops around it"
        assert {op.key for op in result.ops_around} == {doc["offending_key"]}
        assert result.per_key[doc["offending_key"]] == "violation"


def test_labelled_histories_cover_the_required_scenarios() -> None:
    labels = [json.loads(p.read_text(encoding="utf-8"))["label"] for p in HISTORIES]
    assert labels.count("valid") >= 4 and labels.count("invalid") >= 7


def test_violation_names_the_blocked_op_and_the_state_before_it() -> None:
    result = check(load_history(_history("invalid_flicker")))
    blocked = next(op for op in result.ops_around if op.kind == "read" and op.value == "a")
    assert describe(blocked) in result.message
    assert "value='b' version=2" in result.message
    assert [op.call for op in result.ops_around] == sorted(op.call for op in result.ops_around)


def test_multikey_violation_leaves_other_keys_ok() -> None:
    result = check(load_history(_history("invalid_multikey_only_k7")))
    assert result.per_key == {f"k{i}": "ok" if i != 7 else "violation" for i in range(8)}


# --- the model, op by op (DESIGN.md §3) ---------------------------------------------------


def _op(i: int, kind: str, call: float, ret: float | None, **kw: Any) -> Op:
    outcome = kw.pop("outcome", "ok" if ret is not None else "unknown")
    return op_from_dict(
        {"id": i, "process": i, "kind": kind, "key": "k", "call": call, "ret": ret}
        | {"outcome": outcome}
        | kw
    )


@pytest.mark.parametrize(
    ("second", "verdict"),
    [
        (dict(kind="read", value="a", version=1), "ok"),
        (dict(kind="read", value=None, version=0), "violation"),
        (dict(kind="write", value="b", version=2), "ok"),
        (dict(kind="write", value="b", version=1), "violation"),
        (dict(kind="cas", value="b", if_version=1, version=2), "ok"),
        (dict(kind="cas", value="b", if_version=0, version=1), "violation"),
        (dict(kind="cas", value="b", if_version=0, version=1, condition_failed=True), "ok"),
        (dict(kind="cas", value="b", if_version=1, version=2, condition_failed=True), "violation"),
        (dict(kind="delete", version=0), "ok"),
        (dict(kind="delete", if_version=1, version=0), "ok"),
        (dict(kind="delete", if_version=3, version=1, condition_failed=True), "ok"),
        (dict(kind="delete", if_version=3, version=0), "violation"),
    ],
)
def test_second_op_after_a_write(second: dict[str, Any], verdict: str) -> None:
    history = [_op(1, "write", 0, 1, value="a", version=1), _op(2, call=2, ret=3, **second)]
    assert check(history).verdict == verdict


def test_create_only_on_an_absent_key_and_delete_of_an_absent_key() -> None:
    history = [
        _op(1, "delete", 0, 1, version=0),
        _op(2, "cas", 2, 3, value="a", if_version=0, version=1),
        _op(3, "delete", 4, 5, version=0),
        _op(4, "read", 6, 7, value=None, version=0),
        _op(5, "write", 8, 9, value="b", version=1),
    ]
    assert check(history).verdict == "ok"


def test_touching_intervals_count_as_concurrent() -> None:
    history = [
        _op(1, "write", 0, 1, value="a", version=1),
        _op(2, "read", 1, 2, value=None, version=0),
    ]
    assert check(history).verdict == "ok"


def test_empty_history_and_failed_or_unknown_only() -> None:
    assert check([]).verdict == "ok"
    history = [
        _op(1, "write", 0, 1, value="a", outcome="fail"),
        _op(2, "write", 0, None, value="b"),
        _op(3, "read", 0, None),
    ]
    assert check(history).verdict == "ok"


# --- bounds: "unknown" is never "ok" ------------------------------------------------------


def test_tiny_state_budget_yields_unknown_not_ok() -> None:
    history = load_history(_history("valid_concurrent_cas"))
    result = check(history, max_states=2)
    assert result.verdict == "unknown"
    assert result.key == "k1" and "state budget" in result.message


def test_time_limit_cuts_a_search_short_and_skips_the_remaining_keys() -> None:
    readings = iter([0.0, 0.0])  # check() starts, k0 starts; every later reading is late
    history = simulate(random.Random(7), n_ops=3000, keys=1, clients=4)
    history += [replace(op, id=op.id + 10_000, key="k1") for op in history]
    result = check(history, time_limit_s=5, clock=lambda: next(readings, 1000.0))
    assert result.verdict == "unknown" and result.key == "k0"
    assert "time limit reached after 1024 states" in result.message
    assert result.per_key == {"k0": "unknown", "k1": "unknown"}


def test_a_hard_key_gets_a_fair_share_and_cannot_hide_a_violation_in_another() -> None:
    readings = itertools.count()  # every clock reading advances one "second"
    hard = simulate(random.Random(1), n_ops=2000, keys=1, clients=8, p_unknown=0.5)
    bad = [
        replace(op, key="k1", id=op.id + 10_000)
        for op in load_history(_history("invalid_stale_read"))
    ]
    result = check(hard + bad, time_limit_s=10, clock=lambda: float(next(readings)))
    assert result.per_key == {"k0": "unknown", "k1": "violation"}
    assert result.verdict == "violation" and result.key == "k1"


def test_a_violation_outranks_an_unknown_key() -> None:
    bad = [replace(op, key="a") for op in load_history(_history("invalid_stale_read"))]
    slow = simulate(random.Random(3), n_ops=200, keys=1, clients=4)
    slow = [replace(op, key="z", id=op.id + 1000) for op in slow]
    result = check(bad + slow, max_states=3)
    assert result.verdict == "violation" and result.key == "a"
    assert result.per_key == {"a": "violation", "z": "unknown"}


# --- history data model -------------------------------------------------------------------


def test_json_round_trip(tmp_path: Path) -> None:
    history = simulate(random.Random(1), n_ops=300, keys=2, clients=3)
    assert from_json(json.loads(json.dumps(to_json(history)))) == history
    dump_history(tmp_path / "h.json", history)
    assert load_history(tmp_path / "h.json") == history


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (dict(kind="append"), "kind"),
        (dict(outcome="maybe"), "outcome"),
        (dict(ret=None), "ret"),
        (dict(ret=-1.0), "ret"),
        (dict(kind="cas"), "if_version"),
        (dict(if_version=1), "if_version"),
        (dict(version=-1), "version"),
        (dict(condition_failed=True), "condition_failed"),
    ],
)
def test_invalid_ops_are_rejected_naming_the_field(change: dict[str, Any], field: str) -> None:
    base = {"id": 1, "process": 1, "kind": "write", "key": "k", "call": 0.0, "ret": 1.0}
    with pytest.raises(ValueError, match=field):
        op_from_dict(base | {"outcome": "ok", "value": "a", "version": 1} | change)


def test_unknown_fields_and_duplicate_ids_are_rejected() -> None:
    op = {"id": 1, "process": 1, "kind": "read", "key": "k", "call": 0, "ret": 1, "outcome": "ok"}
    with pytest.raises(ValueError, match="colour"):
        from_json([op | {"colour": "red"}])
    with pytest.raises(ValueError, match="id=1"):
        from_json([op, op])


# --- properties against a simulated sequential register -----------------------------------


@dataclass
class _Pending:
    op: dict[str, Any]
    lin: float  # the instant it takes effect in the simulation; +inf: never
    seq: int


def simulate(
    rng: random.Random,
    *,
    n_ops: int,
    keys: int,
    clients: int,
    p_unknown: float = 0.03,
    p_fail: float = 0.03,
    spread: float = 1.0,
) -> list[Op]:
    """Clients issue ops back to back on a real register; each op takes effect at one
    random instant inside its interval (an unknown one: any time after its call, or never).
    Results are filled in by applying the ops in that order: linearizable by construction."""
    pending = _schedule(rng, n_ops, keys, clients, p_unknown, p_fail, spread)
    registers: dict[str, tuple[Any, int]] = {}
    for p in sorted(pending, key=lambda p: (p.lin, p.seq)):
        _apply_to_register(rng, p, registers)
    return [op_from_dict(p.op) for p in sorted(pending, key=lambda p: p.seq)]


def _schedule(
    rng: random.Random,
    n_ops: int,
    keys: int,
    clients: int,
    p_unknown: float,
    p_fail: float,
    spread: float,
) -> list[_Pending]:
    free = [(rng.random(), c, c) for c in range(clients)]  # (free at, slot, process id)
    heapq.heapify(free)
    next_process = clients
    out = []
    for seq in range(1, n_ops + 1):
        now, slot, process = heapq.heappop(free)
        call = now + rng.random() * spread
        ret = call + 0.01 + rng.random() * spread
        outcome = rng.choices(
            ["ok", "unknown", "fail"], [1 - p_unknown - p_fail, p_unknown, p_fail]
        )[0]
        lin = _instant(rng, outcome, call, ret)
        op = {"id": seq, "process": process, "kind": _kind(rng), "key": f"k{rng.randrange(keys)}"}
        op |= {"call": call, "ret": None if outcome == "unknown" else ret, "outcome": outcome}
        out.append(_Pending(op, lin, seq))
        if outcome == "unknown":
            process, next_process = next_process, next_process + 1
        heapq.heappush(free, (ret, slot, process))
    return out


def _kind(rng: random.Random) -> str:
    return rng.choices(["read", "write", "cas", "delete"], [45, 25, 20, 10])[0]


def _instant(rng: random.Random, outcome: str, call: float, ret: float) -> float:
    if outcome == "fail" or (outcome == "unknown" and rng.random() < 0.5):
        return float("inf")
    if outcome == "unknown":
        return call + rng.expovariate(1.0) * (ret - call) * 5
    return rng.uniform(call, ret)


def _apply_to_register(rng: random.Random, p: _Pending, registers: dict[str, Any]) -> None:
    op = p.op
    value, version = registers.get(op["key"], (None, 0))
    applied = p.lin != float("inf")
    if op["kind"] == "read":
        if op["outcome"] == "ok":
            op |= {"value": value, "version": version}
        return
    if op["kind"] != "write" and (op["kind"] == "cas" or rng.random() < 0.3):
        op["if_version"] = (
            version if rng.random() < 0.6 else rng.choice([version + 1, version - 1, 0])
        )
        op["if_version"] = max(op["if_version"], 0)
    holds = op.get("if_version") in (None, version)
    new = (None, 0) if op["kind"] == "delete" else (f"v{op['id']}", version + 1)
    if op["kind"] != "delete":
        op["value"] = new[0]
    if applied and holds:
        registers[op["key"]] = new
    if op["outcome"] == "ok":
        failed = {"condition_failed": True, "version": version}
        op |= {"version": new[1]} if holds else failed


@st.composite
def _histories(draw: st.DrawFn, max_ops: int = 60) -> list[Op]:
    seed = draw(st.integers(0, 2**32 - 1))
    return simulate(
        random.Random(seed),
        n_ops=draw(st.integers(1, max_ops)),
        keys=draw(st.integers(1, 3)),
        clients=draw(st.integers(1, 5)),
        p_unknown=draw(st.sampled_from([0.0, 0.05, 0.2])),
        p_fail=draw(st.sampled_from([0.0, 0.05])),
        spread=draw(st.sampled_from([0.2, 1.0, 3.0])),
    )


@settings(max_examples=200, deadline=None)
@given(_histories())
def test_simulated_register_histories_are_linearizable(history: list[Op]) -> None:
    result = check(history)
    assert result.verdict == "ok", result.message


@settings(max_examples=200, deadline=None)
@given(_histories(), st.data())
def test_a_quiet_read_changed_to_an_impossible_value_is_rejected(
    history: list[Op], data: st.DataObject
) -> None:
    quiet = [op for op in history if _is_quiet_read(op, history)]
    assume(quiet)
    read = data.draw(st.sampled_from(quiet))
    value = data.draw(st.sampled_from(_impossible_values(read, history)))
    mutated = [replace(op, value=value) if op.id == read.id else op for op in history]
    result = check(mutated)
    assert result.verdict == "violation" and result.key == read.key, result.message


@settings(max_examples=500, deadline=None)
@given(_histories(max_ops=9), st.data())
def test_agrees_with_a_naive_search_on_perturbed_histories(
    history: list[Op], data: st.DataObject
) -> None:
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(history) - 1))
        history[i] = data.draw(_perturbed(history[i], history))
    result = check(history)
    expected = "ok" if _naive_linearizable(history) else "violation"
    event(expected)
    assert result.verdict == expected, (to_json(history), result.message)


@st.composite
def _perturbed(draw: st.DrawFn, op: Op, history: list[Op]) -> Op:
    """`op` with one field changed, still a well-formed op."""
    values = [None, "fresh"] + [o.value for o in history if o.kind != "read"]
    changes: list[dict[str, Any]] = [
        {"call": op.call + draw(st.sampled_from([-2.0, -0.5, 0.5]))},
        {"ret": None if op.ret is None else op.ret + draw(st.sampled_from([0.5, 2.0]))},
    ]
    if op.outcome == "ok":
        changes.append({"version": max(0, (op.version or 0) + draw(st.sampled_from([-1, 1])))})
    if op.outcome == "ok" and op.kind == "read":
        changes.append({"value": draw(st.sampled_from(values))})
    if op.outcome != "unknown" and not op.condition_failed:
        changes.append({"outcome": "fail" if op.outcome == "ok" else "ok", "version": None})
    try:
        return replace(op, **draw(st.sampled_from(changes)))
    except ValueError:
        return op


def _naive_linearizable(history: list[Op]) -> bool:
    """Every order of the ok ops and of any subset of the unknown ops, per key."""
    return all(
        _naive_key([op for op in history if op.key == key]) for key in {o.key for o in history}
    )


def _naive_key(ops: list[Op]) -> bool:
    relevant = [op for op in ops if op.outcome == "ok" or op.outcome == "unknown"]

    @functools.cache
    def search(remaining: frozenset[int], state: tuple[Any, int]) -> bool:
        pending_ok = [relevant[i] for i in remaining if relevant[i].outcome == "ok"]
        if not pending_ok:
            return True
        horizon = min(_ret(op) for op in pending_ok)
        for i in remaining:
            new = _naive_step(relevant[i], state) if relevant[i].call <= horizon else None
            if new is not None and search(remaining - {i}, new):
                return True
        return False

    return search(frozenset(range(len(relevant))), (None, 0))


def _naive_step(op: Op, state: tuple[Any, int]) -> tuple[Any, int] | None:
    value, version = state
    if op.kind == "read":
        seen = (op.value, version if op.version is None else op.version)
        return state if op.outcome == "ok" and seen == state else None
    if op.condition_failed:
        return state if version not in (op.if_version,) and op.version in (None, version) else None
    if op.if_version is not None and op.if_version != version:
        return None
    new = (None, 0) if op.kind == "delete" else (op.value, version + 1)
    return new if op.outcome != "ok" or op.version in (None, new[1]) else None


def _is_quiet_read(read: Op, history: list[Op]) -> bool:
    """An ok read that no op able to write its key overlaps (unknown ops never return)."""
    if read.kind != "read" or read.outcome != "ok":
        return False
    writers = [op for op in history if op.key == read.key and op.kind != "read"]
    return not any(
        op.outcome != "fail" and op.call <= _ret(read) and _ret(op) >= read.call for op in writers
    )


def _ret(op: Op) -> float:
    return float("inf") if op.ret is None else op.ret


def _impossible_values(read: Op, history: list[Op]) -> list[Any]:
    """Values the state cannot hold together with `read.version` at the read: a fresh one,
    None at a version > 0, and values written by ok ops at another version or by failed ops."""
    same_key = [op for op in history if op.key == read.key and op.kind in ("write", "cas")]
    out: list[Any] = ["never-written"] + ([None] if read.version else [])
    for op in same_key:
        written = op.outcome == "ok" and not op.condition_failed
        if (written and op.version != read.version) or op.outcome == "fail":
            out.append(op.value)
    return [v for v in out if v != read.value]


# --- scale --------------------------------------------------------------------------------


def test_a_deep_single_key_history_needs_no_recursion() -> None:
    history = simulate(random.Random(11), n_ops=10_000, keys=1, clients=8, p_unknown=0.01)
    result = check(history)
    assert result.verdict == "ok", result.message


def test_a_stale_read_deep_in_a_big_history_is_found_and_quoted() -> None:
    history = simulate(random.Random(5), n_ops=5_000, keys=4, clients=8, p_unknown=0.0)
    read = next(op for op in history[2500:] if _is_quiet_read(op, history) and op.version)
    earlier = [
        op for op in history if op.key == read.key and op.kind == "write" and op.call < read.call
    ]
    old = next(op for op in reversed(earlier) if op.outcome == "ok" and op.version != read.version)
    stale = replace(read, value=old.value)
    result = check([stale if op.id == read.id else op for op in history])
    assert result.verdict == "violation" and result.key == read.key
    assert stale in result.ops_around


def _history(name: str) -> Path:
    return next(p for p in HISTORIES if p.stem == name)
