"""Linearizability checker for the versioned register of DESIGN.md §3.

Linearizability is compositional (Herlihy & Wing 1990 §3.3), so a history is checked key
by key. Per key: the Wing & Gong (1993) depth-first search for a sequential order that
respects real time, with Lowe's (2017) memoization of (linearized set, model state), over
the doubly linked entry list of Porcupine (Athalye, ``checker.go: checkSingle``).

Differences from Porcupine, each sound:
- ``fail`` ops and unknown reads are dropped: they have no effect and prove nothing.
- An unknown op has no return entry; it may be linearized anywhere after its call or
  left out (never applied). The search succeeds once every ok op is linearized.
- An unknown op is linearized only if it changes the state; applying it as a no-op is
  the same as leaving it out.
- State merging: values that no read observes share one id (`_value_ids`).
- Unknown ops with the same effect form a class; once called they are interchangeable,
  so the memo records how many of each class were consumed, not which (`_next_of`).
- Memo dominance: a node whose linearized ok ops and state equal a visited node's, and
  which consumed at least as many unknown ops of every class, is pruned - the visited
  node had every option this one has.
- Version bound: let X be the pending ok op that returns first. Ops whose call is after
  X's return must follow X, so X's required pre-state version has to be reachable with
  the pending ops called before X's return (versions only grow, by one per write/cas,
  except through a delete, which resets them to 0).
- Forced reads: if a read (or condition_failed op) that may go next accepts the current
  state, some completion, if any exists, places it next - moving a read earlier keeps
  the state and, as it may go next, crosses no real-time edge. So it is the node's only
  move: when it fails, so does the node. This removes the orders of concurrent reads.
- Ok first: a node tries its ok ops before its unknown ops. Unknown ops called long ago
  stay at the head of the list; trying them first everywhere would explore their
  applications before the ok ops that pin the versions. (Order only; still complete.)

The verdict "unknown" (budget or time exhausted) is never a pass: it means the search
was cut short, not that an order exists.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from itertools import accumulate
from typing import Any, Literal, NamedTuple

from verification.history import Op, check_unique_ids, describe

Verdict = Literal["ok", "violation", "unknown"]

_READ, _WRITE, _CAS, _DELETE, _OBSERVE = range(5)  # _OBSERVE: a condition_failed cas/delete
_CODES = {"read": _READ, "write": _WRITE, "cas": _CAS, "delete": _DELETE}
_ABSENT = 0  # value id of None: the register's initial state is (_ABSENT, 0)
_UNOBSERVED = 1  # value id shared by all values no read observes (_value_ids)
_SENTINEL = 0  # entry 0 is both the head and the end of the entry list
_NONE = -1  # no entry left to try: the search failed
_CLOCK_EVERY = 1024  # memoized states between two reads of the clock
_PATH_SHOWN = 8  # ops of the deepest partial linearization quoted in a message


@dataclass(frozen=True)
class CheckStats:
    states: int  # search nodes memoized, summed over keys
    elapsed_s: float
    keys: int
    ops: int


@dataclass(frozen=True)
class CheckResult:
    verdict: Verdict
    key: str | None  # first key (sorted) with the verdict; None when "ok"
    message: str
    ops_around: list[Op]  # ops of `key` overlapping the failure point, sorted by call
    per_key: dict[str, str]
    stats: CheckStats


def check(
    history: Sequence[Op],
    *,
    time_limit_s: float = 10.0,
    max_states: int = 2_000_000,
    clock: Callable[[], float] = time.monotonic,
) -> CheckResult:
    """Decide whether `history` is linearizable, one key at a time (sorted order).

    `time_limit_s` bounds the whole check, shared fairly between keys (`_check_keys`);
    `max_states` bounds each key's memo table. A key that exceeds either gets "unknown",
    and so does every key left unchecked. The verdict is "violation" if any key has one,
    else "unknown" if any key has that, else "ok".
    """
    check_unique_ids(history)
    start = clock()
    by_key = _partition(history)
    outcomes: dict[str, _KeyOutcome] = {}
    retry = sorted(by_key)
    for _ in range(2):
        retry = _check_keys(retry, by_key, outcomes, start + time_limit_s, max_states, clock)
    stats = CheckStats(
        states=sum(o.states for o in outcomes.values()),
        elapsed_s=clock() - start,
        keys=len(by_key),
        ops=len(history),
    )
    return _summarize(outcomes, stats)


def _check_keys(
    keys: list[str],
    by_key: dict[str, list[Op]],
    outcomes: dict[str, _KeyOutcome],
    deadline: float,
    max_states: int,
    clock: Callable[[], float],
) -> list[str]:
    """Check `keys` into `outcomes`, each with a fair share of the time left, so one hard
    key cannot starve the others; return the keys that ran out of time (retried once
    with what the others left over)."""
    timed_out = []
    for i, key in enumerate(keys):
        now = clock()
        share = (deadline - now) / (len(keys) - i)
        earlier = outcomes.get(key)
        if share <= 0:
            skipped = _KeyOutcome(
                "unknown", f"key {key!r}: time limit reached before it was checked"
            )
            outcomes[key] = earlier or skipped
            continue
        outcome = _check_key(key, by_key[key], _Budget(now + share, max_states, clock))
        outcomes[key] = replace(outcome, states=outcome.states + (earlier.states if earlier else 0))
        if outcome.timed_out:
            timed_out.append(key)
    return timed_out


@dataclass(frozen=True)
class _Budget:
    deadline: float
    max_states: int
    clock: Callable[[], float]


@dataclass(frozen=True)
class _KeyOutcome:
    verdict: Verdict
    message: str
    ops_around: list[Op] = field(default_factory=list)
    states: int = 0
    timed_out: bool = False


class _Exhausted(Exception):
    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def _partition(history: Sequence[Op]) -> dict[str, list[Op]]:
    by_key: dict[str, list[Op]] = {}
    for op in history:
        by_key.setdefault(op.key, []).append(op)
    return by_key


def _check_key(key: str, ops: list[Op], budget: _Budget) -> _KeyOutcome:
    search = _Search(*_compile(ops), budget)
    try:
        found = search.run()
    except _Exhausted as exc:
        message = f"key {key!r}: {exc}"
        return _KeyOutcome("unknown", message, states=search.states, timed_out=exc.timed_out)
    if found:
        return _KeyOutcome("ok", "", states=search.states)
    return _KeyOutcome("violation", search.explain(key), _ops_around(ops, search), search.states)


def _summarize(outcomes: dict[str, _KeyOutcome], stats: CheckStats) -> CheckResult:
    per_key: dict[str, str] = {k: o.verdict for k, o in outcomes.items()}
    verdict: Verdict
    for verdict in ("violation", "unknown"):
        keys = [k for k in sorted(outcomes) if outcomes[k].verdict == verdict]
        if keys:
            first = outcomes[keys[0]]
            others = f" ({len(keys) - 1} more key(s) {verdict})" if len(keys) > 1 else ""
            return CheckResult(
                verdict, keys[0], first.message + others, first.ops_around, per_key, stats
            )
    message = f"linearizable: {stats.ops} ops on {stats.keys} key(s)"
    return CheckResult("ok", None, message, [], per_key, stats)


# --- the model: one register (value, version) per key (DESIGN.md §3) ---------------------


class _Step(NamedTuple):
    """One op as the search sees it; `value` is interned so states compare as ints."""

    op: Op
    code: int
    value: int
    known: bool  # outcome "ok": must be linearized; otherwise "unknown": may be left out
    bit: int  # ok op: 1 << its index among the ok ops; unknown op: 0
    cls: int  # unknown op: its class, keyed by (code, if_version, value id); ok op: -1
    need: int | None  # required version just before it, when the op pins one


def _compile(ops: list[Op]) -> tuple[list[_Step], list[int]]:
    """The steps, ordered by call, and each unknown-op class's size."""
    relevant = sorted((op for op in ops if _relevant(op)), key=lambda op: (op.call, op.id))
    ids = _value_ids(relevant)
    classes: dict[tuple[int, int | None, int], int] = {}
    sizes: list[int] = []
    steps = []
    n_ok = 0
    for op in relevant:
        code, value = _code(op), ids.get(_canonical(op.value), _UNOBSERVED)
        if op.outcome == "ok":
            steps.append(_Step(op, code, value, True, 1 << n_ok, -1, _need(op)))
            n_ok += 1
            continue
        cls = classes.setdefault((code, op.if_version, value), len(classes))
        sizes += [0] * (cls + 1 - len(sizes))
        sizes[cls] += 1
        steps.append(_Step(op, code, value, False, 0, cls, None))
    return steps, sizes


def _value_ids(ops: list[Op]) -> dict[str, int]:
    """Ids of the values some read observed; every other value is _UNOBSERVED.

    Sound: a value no read observes fails every read's test, like any other such value,
    so states that differ only in which one they hold are bisimilar and may be merged.
    """
    ids = {_canonical(None): _ABSENT}
    for op in ops:
        if op.kind == "read":
            ids.setdefault(_canonical(op.value), len(ids) + 1)
    return ids


def _relevant(op: Op) -> bool:
    return op.outcome == "ok" or (op.outcome == "unknown" and op.kind != "read")


def _code(op: Op) -> int:
    return _OBSERVE if op.condition_failed else _CODES[op.kind]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def _need(op: Op) -> int | None:
    if op.outcome != "ok":
        return None
    if op.kind == "read" or op.condition_failed:
        return op.version
    if op.kind == "write":
        return None if op.version is None else op.version - 1
    return op.if_version  # cas, or delete (unconditional: None)


def _apply(step: _Step, value: int, version: int) -> tuple[int, int] | None:
    """The state after `step` from (value, version), or None if the step cannot happen there."""
    code = step.code
    op = step.op
    if code == _READ:
        ok = value == step.value and (op.version is None or op.version == version)
        return (value, version) if ok else None
    if code == _OBSERVE:
        ok = version != op.if_version and (op.version is None or op.version == version)
        return (value, version) if ok else None
    if op.if_version is not None and version != op.if_version:
        return None
    new = (_ABSENT, 0) if code == _DELETE else (step.value, version + 1)
    if step.known and op.version is not None and op.version != new[1]:
        return None
    return new


def _can_reach(version: int, need: int | None, increments: int, deletes: int) -> bool:
    """Whether version `need` is reachable from `version` with the pending ops counted."""
    if need is None or version <= need <= version + increments:
        return True
    return deletes > 0 and need <= increments


# --- the search ---------------------------------------------------------------------------


class _Frame(NamedTuple):
    """A persistent stack: snapshots of the deepest path are O(1)."""

    entry: int  # call entry of the linearized op
    value: int  # state before it
    version: int
    forced: bool  # a read-only op placed as the node's only move ("forced reads" above)
    parent: _Frame | None


class _Failure(NamedTuple):
    depth: int
    path: _Frame | None
    version: int  # state after `path`
    blocked: int  # step that could not be placed before its return


class _Search:
    """Wing & Gong with Lowe's memo over Porcupine's entry list, for one key.

    Invariants: the list holds exactly the entries of ops not on the stack, in time order
    (calls before returns at equal times: touching intervals count as concurrent); the call
    entries before its first return entry are the ops that may be linearized next;
    `(ok_bits, unknown_bits, value, version)` describe the stack's top; a node whose
    forced move failed is dead, so backtracking pops through forced frames.
    """

    def __init__(self, steps: list[_Step], class_sizes: list[int], budget: _Budget) -> None:
        self.steps = steps
        self.budget = budget
        self._build_entries()
        self.class_base = list(accumulate(class_sizes, initial=0))  # bit range of each class
        self.consumed = [0] * len(class_sizes)
        self.value, self.version = _ABSENT, 0
        self.ok_bits = self.unknown_bits = 0
        self.ok_left = sum(step.known for step in steps)
        self.top: _Frame | None = None
        self.second_pass = False  # the node's unknown ops are being tried (run)
        self.depth = 0
        self.memo: dict[tuple[int, int, int, int], list[int]] = {}
        self.states = 0
        self.deepest: _Failure | None = None

    def _build_entries(self) -> None:
        events = [(s.op.call, 0, i) for i, s in enumerate(self.steps)]
        events += [(_ret(s.op), 1, i) for i, s in enumerate(self.steps) if s.known]
        events.sort()
        self.entry_step = [-1] + [i for _, _, i in events]
        self.is_return = [True] + [kind == 1 for _, kind, _ in events]
        self.match = [_SENTINEL] * len(self.entry_step)
        call_entry = {i: e for e, (_, kind, i) in enumerate(events, 1) if kind == 0}
        for e, (_, kind, i) in enumerate(events, 1):
            if kind == 1:
                self.match[call_entry[i]] = e
        n = len(self.entry_step)
        self.nxt = [(e + 1) % n for e in range(n)]
        self.prv = [(e - 1) % n for e in range(n)]

    def run(self) -> bool:
        """True iff every ok op can be linearized; raises _Exhausted when over budget.

        A node scans its candidates twice: ok ops, then (second pass) unknown ops.
        """
        entry = self._first_move()
        while self.ok_left and entry != _NONE:
            if self.is_return[entry]:
                entry = self._end_of_pass(entry)
            elif self.steps[self.entry_step[entry]].known == self.second_pass:
                entry = self.nxt[entry]
            else:
                entry = self._try(entry)
        return self.ok_left == 0

    def _end_of_pass(self, return_entry: int) -> int:
        if self.second_pass:
            return self._backtrack(return_entry)
        self.second_pass = True
        return self.nxt[_SENTINEL]

    def _first_move(self) -> int:
        blocker, forced = self._scan_window(self.value, self.version)
        if blocker != _SENTINEL:
            return self._backtrack(blocker)
        return forced if forced != _SENTINEL else self.nxt[_SENTINEL]

    def _try(self, entry: int) -> int:
        """Try to linearize the op of call `entry` next; return the entry to look at next."""
        step = self.steps[self.entry_step[entry]]
        new = _apply(step, self.value, self.version)
        if new is None or (not step.known and new == (self.value, self.version)):
            return self.nxt[entry]
        forced = step.code in (_READ, _OBSERVE)
        unknown_bits = self.unknown_bits if step.known else self.unknown_bits | self._next_of(step)
        if not self._memoize(self.ok_bits ^ step.bit, unknown_bits, new):
            return self._after_failed_move(entry, forced)
        self._lift(entry)
        blocker, next_forced = self._scan_window(*new)
        if blocker != _SENTINEL:
            path = _Frame(entry, self.value, self.version, forced, self.top)
            self._note_failure(self.depth + 1, path, new[1], blocker)
            self._unlift(entry)
            return self._after_failed_move(entry, forced)
        self._push(entry, step, new, unknown_bits, forced)
        self.second_pass = False
        return next_forced if next_forced != _SENTINEL else self.nxt[_SENTINEL]

    def _after_failed_move(self, entry: int, forced: bool) -> int:
        """The next candidate of this node, or - when its only move failed - backtrack."""
        return self._backtrack(_SENTINEL) if forced else self.nxt[entry]

    def _push(
        self, entry: int, step: _Step, new: tuple[int, int], unknown_bits: int, forced: bool
    ) -> None:
        self.top = _Frame(entry, self.value, self.version, forced, self.top)
        self.value, self.version = new
        self.ok_bits ^= step.bit
        self.unknown_bits = unknown_bits
        self.depth += 1
        self.ok_left -= step.known
        if not step.known:
            self.consumed[step.cls] += 1

    def _next_of(self, step: _Step) -> int:
        """The bit recording one more consumed op of `step`'s class.

        Unknown ops of one class (same effect: code, if_version, value id) are
        interchangeable once called. Every consumed op was called by the time the ok
        ops in `ok_bits` are linearized, so nodes equal in ok_bits and state differ only
        in how many ops of each class they consumed: the first k bits of the class's
        range stand for "k consumed", and subset means "consumed no more of any class".
        """
        return 1 << (self.class_base[step.cls] + self.consumed[step.cls])

    def _backtrack(self, blocking_entry: int) -> int:
        """Pop to the deepest node with moves left; the entry to resume at, or _NONE.

        `blocking_entry` is the return entry reached (or _SENTINEL when a forced move
        failed): its op cannot be placed after the current path.
        """
        if blocking_entry != _SENTINEL:
            self._note_failure(self.depth, self.top, self.version, blocking_entry)
        while self.top is not None:
            frame = self._pop()
            if not frame.forced:
                self.second_pass = not self.steps[self.entry_step[frame.entry]].known
                return self.nxt[frame.entry]
        return _NONE

    def _pop(self) -> _Frame:
        frame = self.top
        assert frame is not None
        self.top, self.value, self.version = frame.parent, frame.value, frame.version
        step = self.steps[self.entry_step[frame.entry]]
        self.ok_bits ^= step.bit
        if not step.known:
            self.consumed[step.cls] -= 1
            self.unknown_bits ^= self._next_of(step)
        self.depth -= 1
        self.ok_left += step.known
        self._unlift(frame.entry)
        return frame

    def _note_failure(self, depth: int, path: _Frame | None, version: int, blocking: int) -> None:
        """Keep the deepest path after which the op of return entry `blocking` cannot go."""
        if self.deepest is None or depth > self.deepest.depth:
            self.deepest = _Failure(depth, path, version, self.entry_step[blocking])

    def _memoize(self, ok_bits: int, unknown_bits: int, state: tuple[int, int]) -> bool:
        """Record a node; False if it or a node dominating it was visited (Lowe 2017 §4)."""
        prefix = (~ok_bits & (ok_bits + 1)).bit_length() - 1  # ok ops mostly form a prefix
        key = (prefix, ok_bits >> prefix, state[0], state[1])
        seen = self.memo.get(key)
        if seen is None:
            self.memo[key] = [unknown_bits]
        elif any(s & ~unknown_bits == 0 for s in seen):
            return False
        else:
            seen.append(unknown_bits)
        self.states += 1
        self._charge()
        return True

    def _charge(self) -> None:
        if self.states > self.budget.max_states:
            budget = self.budget.max_states
            raise _Exhausted(f"state budget of {budget} states exhausted", timed_out=False)
        if self.states % _CLOCK_EVERY == 0 and self.budget.clock() > self.budget.deadline:
            raise _Exhausted(f"time limit reached after {self.states} states", timed_out=True)

    def _scan_window(self, value: int, version: int) -> tuple[int, int]:
        """Over the ops that may go next from state (value, version): the first pending
        return entry X if the version bound (module docstring) rules X out, else
        _SENTINEL; and the first read-only op the state satisfies, else _SENTINEL."""
        entry = self.nxt[_SENTINEL]
        increments = deletes = 0
        forced = _SENTINEL
        while not self.is_return[entry]:
            step = self.steps[self.entry_step[entry]]
            increments += step.code in (_WRITE, _CAS)
            deletes += step.code == _DELETE
            if forced == _SENTINEL and step.code in (_READ, _OBSERVE):
                forced = entry if _apply(step, value, version) else _SENTINEL
            entry = self.nxt[entry]
        if entry == _SENTINEL:
            return _SENTINEL, forced
        x = self.steps[self.entry_step[entry]]
        increments -= x.code in (_WRITE, _CAS)
        deletes -= x.code == _DELETE
        reachable = _can_reach(version, x.need, increments, deletes)
        return (_SENTINEL if reachable else entry), forced

    def _lift(self, entry: int) -> None:
        """Unlink a call entry and its return entry (Knuth's dancing links)."""
        for e in (entry, self.match[entry]):
            if e != _SENTINEL:
                self.nxt[self.prv[e]] = self.nxt[e]
                self.prv[self.nxt[e]] = self.prv[e]

    def _unlift(self, entry: int) -> None:
        for e in (self.match[entry], entry):
            if e != _SENTINEL:
                self.nxt[self.prv[e]] = e
                self.prv[self.nxt[e]] = e

    # --- explanations ---

    def path(self, frame: _Frame | None) -> list[_Step]:
        out = []
        while frame is not None:
            out.append(self.steps[self.entry_step[frame.entry]])
            frame = frame.parent
        return out[::-1]

    def explain(self, key: str) -> str:
        failure = self.deepest
        assert failure is not None  # a violation is reported only after a return entry
        path = self.path(failure.path)
        blocked = self.steps[failure.blocked].op
        shown = [f"  {describe(s.op)}" for s in path[-_PATH_SHOWN:]]
        if len(path) > _PATH_SHOWN:
            shown.insert(0, f"  ... {len(path) - _PATH_SHOWN} earlier op(s)")
        state = f"value={_value_after(path)!r} version={failure.version}"
        return "\n".join(
            [
                f"key {key!r}: not linearizable.",
                f"Deepest partial linearization ({len(path)} op(s)), in order:",
                *(shown or ["  (none)"]),
                f"State after it: {state}.",
                f"Could not place {describe(blocked)}: no order of the ops pending before its "
                "return leads to a state it accepts.",
            ]
        )


def _value_after(path: list[_Step]) -> Any:
    for step in reversed(path):
        if step.code in (_WRITE, _CAS, _DELETE):
            return step.op.value
    return None


def _ret(op: Op) -> float:
    return float("inf") if op.ret is None else op.ret


def _ops_around(ops: list[Op], search: _Search) -> list[Op]:
    """Ops overlapping [call of the last ok op placed (or of the blocked op), blocked's return]."""
    failure = search.deepest
    assert failure is not None
    blocked = search.steps[failure.blocked].op
    placed = [s.op for s in search.path(failure.path) if s.known]
    start = min(blocked.call, placed[-1].call) if placed else blocked.call
    end = _ret(blocked)
    around = [op for op in ops if op.call <= end and _ret(op) >= start]
    return sorted(around, key=lambda op: (op.call, op.id))
