"""The staged membership changes: a local JSON file between `kvctl plan add|remove|replace`,
`plan show` and `commit` (Riak's `cluster plan` / `cluster commit`).

    {"version": 1, "changes": [<change>, ...], "plan_id": "…" | null}

Changes are the wire form the API takes (kv/plan.py `Change`). `plan_id` is the plan
`plan show` returned for exactly these changes; staging another change forgets it, so a
commit always names a plan the operator saw. The file is replaced atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kv.errors import KvError
from kv.plan import Change
from kvctl.errors import KvctlError

VERSION = 1


@dataclass(frozen=True)
class Staged:
    changes: tuple[dict[str, Any], ...] = ()
    plan_id: str | None = None

    def staging(self, change: Change) -> Staged:
        """These changes and `change`; refused if its node is already staged."""
        nodes = {c["node"] for c in self.changes} | {
            c["member"]["id"] for c in self.changes if "member" in c
        }
        named = {change.node} | ({change.member.id} if change.member else set())
        if nodes & named:
            raise KvctlError(
                f"{', '.join(sorted(nodes & named))} is already in a staged change "
                "(`kvctl plan show` lists them; `kvctl plan clear` starts over)"
            )
        return Staged((*self.changes, change.to_wire()))

    def shown(self, plan_id: str) -> Staged:
        return Staged(self.changes, plan_id)

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "changes": list(self.changes), "plan_id": self.plan_id}

    @staticmethod
    def from_dict(raw: Any) -> Staged:
        if not isinstance(raw, dict) or raw.get("version") != VERSION:
            raise ValueError(f"expected version {VERSION}")
        changes = tuple(Change.from_wire(c).to_wire() for c in raw.get("changes", []))
        plan_id = raw.get("plan_id")
        return Staged(changes, plan_id if isinstance(plan_id, str) else None)


def load(path: Path) -> Staged:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Staged()
    except OSError as exc:
        raise KvctlError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return Staged.from_dict(json.loads(text))
    except (ValueError, KvError) as exc:
        raise KvctlError(
            f"{path} is not a kvctl state file ({exc}); remove it or `kvctl plan clear`"
        ) from None


def save(path: Path, staged: Staged) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".plan-", suffix=".json")
    except OSError as exc:
        raise KvctlError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(staged.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise KvctlError(f"cannot write {path}: {exc.strerror}") from None


def clear(path: Path) -> bool:
    """Drop the staged changes; whether there were any."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise KvctlError(f"cannot remove {path}: {exc.strerror}") from None
    return True
