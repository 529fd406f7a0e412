"""The pure parts of `kvctl get|put|del|ls` and `cluster health` (kvctl/cli_keys.py,
kvctl/cli_cluster.py): a VALUE argument read as JSON, replies as lines, the walk over the
pages of a key listing, and the health of every endpoint with its exit code. No I/O: the
listing's page fetch is a parameter."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kv.errors import KvError
from kvctl import render
from kvctl.errors import UNAVAILABLE, UNHEALTHY, USAGE, KvctlError

# fetch(after, limit) → one page of `GET /v1/keyspaces/KS/keys`: {"keys": [...], "next": ...}
Fetch = Callable[[str | None, int], Mapping[str, Any]]


class _OutOfRange(Exception):
    pass


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python's extensions, not RFC 8259


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _OutOfRange(text)
    return value


def parse_value(text: str) -> Any:
    """VALUE as JSON; text that is not valid JSON is the string itself (`42` is a number,
    `'"42"'` the string "42", `hello` the string "hello", `NaN` the string "NaN"). A
    number no double holds (`1e999`) is valid JSON the API refuses (kv/http/parse.py
    `_finite_float`): a usage error, not silently a string."""
    try:
        return json.loads(text, parse_constant=_not_json, parse_float=_finite)
    except _OutOfRange as exc:
        raise KvctlError(f"VALUE: the number {exc} is out of range", USAGE) from None
    except ValueError:
        return text


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def value_lines(reply: Mapping[str, Any]) -> list[str]:
    """A read: its value as one line of JSON, or (eventual, concurrent writes) one line per
    sibling, in the order the reply lists them."""
    if "siblings" in reply:
        return [_compact(v) for v in reply["siblings"]]
    return [_compact(reply.get("value"))]


def written(reply: Mapping[str, Any]) -> list[str]:
    """A put: `OK`, with the key's new version in a linearizable keyspace."""
    version = reply.get("version")
    return ["OK" if version is None else f"OK version {version}"]


def deleted(key: str, reply: Mapping[str, Any]) -> list[str]:
    return [f"deleted {key}" if reply.get("deleted") else f"{key} did not exist"]


def walk(fetch: Fetch, limit: int | None, page_size: int) -> Iterator[str]:
    """Every key of the listing in order, page after page until `next` is None, or the
    first `limit` of them. Each page asks for no more than are still wanted."""
    after: str | None = None
    left = limit
    while left is None or left > 0:
        page = fetch(after, page_size if left is None else min(page_size, left))
        keys: list[str] = list(page.get("keys", ()))
        yield from keys if left is None else keys[:left]
        if left is not None:
            left -= len(keys)
        following = page.get("next")
        if following is None:
            return
        # docs/listing.md: `next` is past `after` (a cursor that does not move would
        # loop forever; it would be a server bug, reported rather than followed)
        if after is not None and following <= after:
            raise KvctlError(f"the listing did not advance past {after!r}")
        after = following


# ---------------------------------------------------------------------- cluster health
def health_row(endpoint: str, answer: Mapping[str, Any] | KvError) -> dict[str, Any]:
    """One endpoint's `GET /v1/health`, as `--json` shows it: healthy only when it answers
    `ok` (a node `joining` or `degraded` answers, and is not). `status` None: it is down —
    no answer, or an error (a 503 while it boots), whose code and message are kept."""
    if isinstance(answer, KvError):
        error = {"code": answer.code, "error": answer.message}
        return {"endpoint": endpoint, "healthy": False, "status": None, **error}
    status = answer.get("status")
    row = {"endpoint": endpoint, "healthy": status == "ok", "status": status}
    return {**row, "node": answer.get("node"), "epoch": answer.get("epoch")}


def health_lines(rows: list[dict[str, Any]]) -> list[str]:
    table = [[r["endpoint"], r["status"] or "down", r.get("node"), _detail(r)] for r in rows]
    return render.table(["endpoint", "health", "node", "detail"], table)


def _detail(row: Mapping[str, Any]) -> str:
    if row.get("error"):
        return str(row["error"])
    return f"metadata epoch {row.get('epoch')}"


def health_verdict(rows: list[dict[str, Any]]) -> KvctlError | None:
    """None when every endpoint is `ok`; else the one-line failure: exit 3 (unavailable)
    when one is down, else 9 (unhealthy: every one answers, not all `ok`)."""
    bad = [r for r in rows if not r["healthy"]]
    if not bad:
        return None
    code = UNAVAILABLE if any(r["status"] is None for r in bad) else UNHEALTHY
    named = ", ".join(f"{r['endpoint']} ({r['status'] or 'down'})" for r in bad)
    return KvctlError(f"{len(bad)} of {len(rows)} endpoints not healthy: {named}", code)
