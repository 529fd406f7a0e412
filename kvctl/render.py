"""Text for people — pure: plans, staged changes, plan status and the cluster, as lines.
(`--json` prints the replies and `kvctl.status.Status.to_wire` instead.)"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from kvctl.status import MoveStatus, Status


def change(c: Mapping[str, Any]) -> str:
    """One staged change, as the operator typed it."""
    m = c.get("member") or {}
    where = f" (http {m.get('http')}, raft {m.get('raft')})" if m else ""
    if c.get("kind") == "remove":
        return f"remove {c.get('node')}" + (" --force" if c.get("force") else "")
    if c.get("kind") == "replace":
        return f"replace {c.get('node')} by {m.get('id')}{where}"
    return f"add {c.get('node')}{where}"


def staged(changes: Sequence[Mapping[str, Any]], plan_id: str | None) -> list[str]:
    if not changes:
        return ["nothing staged (kvctl plan add|remove|replace)"]
    lines = [f"staged: {change(c)}" for c in changes]
    if plan_id is None:
        return [*lines, "review it with `kvctl plan show`, then `kvctl commit`"]
    return [*lines, f"shown as plan {plan_id}; `kvctl commit` starts it"]


def plan(p: Mapping[str, Any]) -> list[str]:
    """Every replica the plan moves, then a summary."""
    head = [f"plan {p.get('plan_id')} (metadata epoch {p.get('epoch')}):"]
    head += [f"  {change(c)}" for c in p.get("changes", ())]
    rows = [
        [
            m["mode"],
            m["replication"],
            m["partition"],
            _arrow([m["from"]], [m["to"]]),
            size(m.get("bytes")),
            "?" if m.get("keys") is None else m["keys"],
        ]
        for m in p.get("moves", ())
    ]
    s = p.get("summary", {})
    by_mode = ", ".join(f"{mode} {n}" for mode, n in sorted(s.get("by_mode", {}).items()))
    unknown = int(s.get("bytes_unknown", 0))
    unsized = f" (at least: {unknown} moves unsized, their owners did not answer)"
    tail = [
        f"{s.get('replicas_moving', len(rows))} replicas move ({by_mode or 'none'}); "
        f"{size(s.get('bytes'))} in {s.get('keys', '?')} keys expected"
        + (unsized if unknown else ""),
        "commit exactly this plan with `kvctl commit`",
    ]
    headers = ["mode", "n", "partition", "from → to", "bytes", "keys"]
    table_ = table(headers, rows) if rows else []
    return [*head, *table_, *tail]


def summary(st: Status) -> str:
    """One line: the plan's progress, rates and ETA, and how many moves are stuck."""
    if st.idle:
        return f"no plan in flight (epoch {st.epoch}); members {', '.join(st.members)}"
    total = st.moves_done + st.moves_pending
    parts = [f"plan {st.plan_id} {st.state}: {st.moves_done}/{total} moves done"]
    if st.moves_per_s is not None:
        parts.append(f"{st.moves_per_s:.2f} moves/s")
    if st.keys_per_s is not None:
        parts.append(f"{st.keys_per_s:.0f} keys/s")
    if st.bytes_per_s is not None and st.bytes:
        parts.append(f"{size(st.bytes_per_s)}/s")
    if st.eta_s is not None:
        parts.append(f"ETA {duration(st.eta_s)}")
    if st.bytes or st.bytes_expected:
        unsized = f", {st.bytes_unknown} moves unsized" if st.bytes_unknown else ""
        parts.append(f"{size(st.bytes)} copied ({size(st.bytes_expected)} pending{unsized})")
    if st.stuck:
        parts.append(f"{len(st.stuck)} stuck")
    if st.unreachable:
        parts.append(f"{len(st.unreachable)} node(s) not answering")
    return ", ".join(parts)


def status(st: Status) -> list[str]:
    """The summary, every pending move, then what is stuck and who did not answer."""
    lines = [summary(st)]
    if st.idle:
        return lines
    lines += [f"  {change(c)}" for c in st.changes]
    rows = [_move_row(m) for m in st.moves]
    if rows:
        headers = ["mode", "n", "partition", "from → to", "state", "keys", "keys/s", "bytes"]
        lines += table(headers, rows)
    lines += [f"stuck: {_where(m)}: {m.stuck}" for m in st.stuck]
    lines += [f"not answering: {n}: {err}" for n, err in sorted(st.unreachable.items())]
    return lines


def first_stuck(st: Status) -> str:
    """Why a wait gives up, in one line: the first stuck move and the first node that does
    not answer, else how much is still pending."""
    reasons = []
    if st.stuck:
        more = f" (and {len(st.stuck) - 1} more stuck)" if len(st.stuck) > 1 else ""
        reasons.append(f"stuck: {_where(st.stuck[0])}: {st.stuck[0].stuck}{more}")
    if st.unreachable:
        node, err = sorted(st.unreachable.items())[0]
        reasons.append(f"not answering: {node}: {err}")
    return "; ".join(reasons) or f"{st.moves_pending} moves still pending, none stuck (slow?)"


def cluster(view: Mapping[str, Any]) -> list[str]:
    """`GET /v1/cluster` of one node: its members and the meta group."""
    meta = view.get("meta_group", {})
    voters = set(meta.get("voters", ()))
    head = (
        f"epoch {view.get('epoch')}; asked {view.get('node')}; meta group leader "
        f"{meta.get('leader') or '?'}, voters {', '.join(sorted(voters)) or '?'}"
    )
    rows = [
        [m["id"], m["http"], m["raft"], m.get("status", "?"), "yes" if m["id"] in voters else ""]
        for m in view.get("members", ())
    ]
    rows += [[m["id"], m["http"], m["raft"], "joining", ""] for m in view.get("joining", ())]
    return [head, *table(["id", "http", "raft", "status", "voter"], rows)]


# ---------------------------------------------------------------------- pieces
def tokens(found: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = [[t["id"], t["name"], t["role"], ", ".join(t["keyspaces"] or ["*"])] for t in found]
    return table(["id", "name", "role", "keyspaces"], rows) if rows else ["no tokens"]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(h) for h in headers], *[["-" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]


def size(n: float | None) -> str:
    """Bytes for people (binary units); `?` when not known."""
    if n is None:
        return "?"
    if abs(n) < 1024:
        return f"{n:.0f} B"
    power = min(3, int(math.log(abs(n), 1024)))
    return f"{n / 1024**power:.1f} {('KiB', 'MiB', 'GiB')[power - 1]}"


def duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _move_row(m: MoveStatus) -> list[Any]:
    rate = None if m.keys_per_s is None else f"{m.keys_per_s:.0f}"
    state = f"{m.state} {m.detail}".strip()
    done = "-" if m.bytes is None else size(m.bytes)
    moved = f"{done}/{size(m.bytes_expected)}"
    arrow = _arrow(m.outgoing, m.incoming)
    return [m.mode, m.replication, m.partition, arrow, state, m.keys, rate, moved]


def _arrow(outgoing: Sequence[str | None], incoming: Sequence[str | None]) -> str:
    left = ",".join(n for n in outgoing if n) or "-"
    right = ",".join(n for n in incoming if n) or "-"
    return f"{left} → {right}"


def _where(m: MoveStatus) -> str:
    return f"{m.mode} n={m.replication} partition {m.partition} ({_arrow(m.outgoing, m.incoming)})"
