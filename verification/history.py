"""Client-observed histories of single-key operations, the input of the checker.

An operation is an interval ``[call, ret]`` on one client's clock (Herlihy & Wing 1990
§2): it took effect at some instant inside it, or - for ``outcome == "unknown"`` (an
HTTP 504, a Raft ``LEADER_CHANGED``) - at some instant after ``call``, or never
(Jepsen's ``:info``). ``fail`` means certainly not applied (``DISCARDED``, a 4xx other
than 412) and carries no information. The register model is DESIGN.md §3; the file
format is docs/verification.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

Kind = Literal["read", "write", "cas", "delete"]
Outcome = Literal["ok", "fail", "unknown"]

KINDS: frozenset[str] = frozenset(get_args(Kind))
OUTCOMES: frozenset[str] = frozenset(get_args(Outcome))


@dataclass(frozen=True)
class Op:
    id: int  # unique within a history
    process: int  # client id; a client that saw "unknown" continues under a new id
    kind: Kind
    key: str
    call: float  # monotonic seconds
    ret: float | None  # None iff outcome == "unknown" (treated as +infinity)
    outcome: Outcome
    value: Any = None  # write/cas: the value written; ok read: the value observed (None = absent)
    if_version: int | None = None  # cas: required version; delete: optional condition
    # ok read: observed version (0 = absent); ok write/cas/delete: resulting version
    # (delete -> 0); condition_failed: the current_version reported with the 412.
    version: int | None = None
    # ok cas/delete whose condition did not hold: nothing was written, but the op observed
    # that the version was not if_version (and was `version`, when reported).
    condition_failed: bool = False

    def __post_init__(self) -> None:
        _validate(self)


def _fail(op: Op, field: str, why: str) -> ValueError:
    return ValueError(f"op {op.id!r}: {field}={getattr(op, field)!r}: {why}")


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _validate(op: Op) -> None:
    _validate_identity(op)
    _validate_times(op)
    _validate_versions(op)
    _validate_condition(op)


def _validate_identity(op: Op) -> None:
    if not _is_int(op.id):
        raise _fail(op, "id", "must be an int")
    if not _is_int(op.process):
        raise _fail(op, "process", "must be an int")
    if op.kind not in KINDS:
        raise _fail(op, "kind", f"must be one of {sorted(KINDS)}")
    if op.outcome not in OUTCOMES:
        raise _fail(op, "outcome", f"must be one of {sorted(OUTCOMES)}")
    if not isinstance(op.key, str):
        raise _fail(op, "key", "must be a str")


def _validate_times(op: Op) -> None:
    if (
        isinstance(op.call, bool)
        or not isinstance(op.call, int | float)
        or not math.isfinite(op.call)
    ):
        raise _fail(op, "call", "must be a finite number")
    if op.outcome == "unknown":
        if op.ret is not None:
            raise _fail(op, "ret", "must be None when outcome is 'unknown'")
        return
    if isinstance(op.ret, bool) or not isinstance(op.ret, int | float) or not math.isfinite(op.ret):
        raise _fail(op, "ret", f"must be a finite number when outcome is {op.outcome!r}")
    if op.ret < op.call:
        raise _fail(op, "ret", f"must be >= call ({op.call!r})")


def _validate_versions(op: Op) -> None:
    for name in ("if_version", "version"):
        v = getattr(op, name)
        if v is not None and (not _is_int(v) or v < 0):
            raise _fail(op, name, "must be None or an int >= 0")
    if op.kind == "cas" and op.if_version is None:
        raise _fail(op, "if_version", "is required for a cas")
    if op.kind in ("read", "write") and op.if_version is not None:
        raise _fail(op, "if_version", f"is not allowed for a {op.kind} (use kind='cas')")


def _validate_condition(op: Op) -> None:
    if not op.condition_failed:
        return
    if op.kind not in ("cas", "delete") or op.if_version is None:
        raise _fail(op, "condition_failed", "only a conditional cas/delete can fail its condition")
    if op.outcome != "ok":
        raise _fail(op, "condition_failed", "requires outcome 'ok' (a 412 is a definite answer)")
    if op.version is not None and op.version == op.if_version:
        raise _fail(op, "condition_failed", f"reported version equals if_version {op.if_version}")


_DEFAULTS: dict[str, Any] = {
    "value": None,
    "if_version": None,
    "version": None,
    "condition_failed": False,
}
_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Op))
_REQUIRED: frozenset[str] = frozenset(_FIELDS) - frozenset(_DEFAULTS)


def op_to_dict(op: Op) -> dict[str, Any]:
    """All required fields; optional ones only when they differ from their default."""
    out: dict[str, Any] = {}
    for name in _FIELDS:
        v = getattr(op, name)
        if name in _REQUIRED or v != _DEFAULTS[name]:
            out[name] = v
    return out


def op_from_dict(d: Mapping[str, Any]) -> Op:
    unknown = sorted(set(d) - set(_FIELDS))
    if unknown:
        raise ValueError(f"op {d.get('id')!r}: unknown field(s) {unknown}")
    missing = sorted(_REQUIRED - set(d))
    if missing:
        raise ValueError(f"op {d.get('id')!r}: missing field(s) {missing}")
    return Op(**d)


def to_json(ops: Iterable[Op]) -> list[dict[str, Any]]:
    return [op_to_dict(op) for op in ops]


def from_json(data: Any) -> list[Op]:
    """Ops from a JSON list of op objects; ids must be unique."""
    if not isinstance(data, list):
        raise ValueError(f"history: expected a list of ops, got {type(data).__name__}")
    ops = [op_from_dict(d) for d in data]
    check_unique_ids(ops)
    return ops


def check_unique_ids(ops: Iterable[Op]) -> None:
    seen: set[int] = set()
    for op in ops:
        if op.id in seen:
            raise ValueError(f"history: id={op.id!r} appears more than once")
        seen.add(op.id)


def load_history(path: str | Path) -> list[Op]:
    """A history file: a JSON list of ops, or an object whose "ops" member is one."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    return from_json(doc["ops"] if isinstance(doc, dict) else doc)


def dump_history(path: str | Path, ops: Iterable[Op]) -> None:
    text = json.dumps(to_json(ops), indent=None, separators=(",", ":"))
    Path(path).write_text(text + "\n", encoding="utf-8")


def describe(op: Op) -> str:
    """One line for messages, e.g. ``#7 p2 cas k1 'b' if_version=1 -> ok v2 [3.000, 4.000]``."""
    ret = "inf" if op.ret is None else f"{op.ret:.3f}"
    head = f"#{op.id} p{op.process} {op.kind} {op.key}{_describe_args(op)}"
    return f"{head} -> {_describe_result(op)} [{op.call:.3f}, {ret}]"


def _describe_args(op: Op) -> str:
    parts = [] if op.kind in ("read", "delete") else [repr(op.value)]
    if op.if_version is not None:
        parts.append(f"if_version={op.if_version}")
    return "".join(" " + p for p in parts)


def _describe_result(op: Op) -> str:
    if op.outcome != "ok":
        return op.outcome
    version = "" if op.version is None else f" v{op.version}"
    if op.condition_failed:
        return f"condition_failed{version}"
    if op.kind == "read":
        return f"ok {op.value!r}{version}"
    return f"ok{version}"
