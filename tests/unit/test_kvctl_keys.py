"""kvctl/keys.py, the pure parts of `kvctl get|put|del|ls` and `cluster health`: VALUE read
as JSON or taken as a string, replies as lines, health verdicts by table, and the walk over
a listing's pages checked against a naive oracle (every live key, sorted) with a fake
server whose pages are short, empty or cut anywhere, as docs/listing.md allows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kv.errors import KvError, NotReady, Retryable
from kvctl import errors, keys
from kvctl.errors import KvctlError


# ---------------------------------------------------------------------- VALUE
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", 42),
        ("-1.5", -1.5),
        ('"42"', "42"),
        ("hello", "hello"),
        ("hello world", "hello world"),
        ('["milk", "eggs"]', ["milk", "eggs"]),
        ('{"a": {"b": null}}', {"a": {"b": None}}),
        ("true", True),
        ("null", None),
        ("", ""),
        ("{broken", "{broken"),
        ("NaN", "NaN"),  # Python's extension, not JSON: the string
        ("-Infinity", "-Infinity"),
        ("héllo", "héllo"),
    ],
)
def test_value_is_json_else_the_text(text: str, value: Any) -> None:
    assert keys.parse_value(text) == value


@pytest.mark.parametrize("text", ["1e999", "-1e400", "[1, 2e308]"])
def test_a_number_no_double_holds_is_a_usage_error(text: str) -> None:
    """Valid JSON the API refuses: said at once, not stored as a string."""
    with pytest.raises(KvctlError, match="VALUE: the number .* is out of range") as caught:
        keys.parse_value(text)
    assert caught.value.code == errors.USAGE


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(JSON)
def test_what_get_prints_put_reads_back_on_one_line(value: Any) -> None:
    [line] = keys.value_lines({"key": "k", "value": value})
    assert "\n" not in line and keys.parse_value(line) == value


def test_siblings_print_one_line_each_in_reply_order() -> None:
    reply = {"key": "cart", "siblings": [["milk"], {"n": "é"}, "x"], "context": "c"}
    assert keys.value_lines(reply) == ['["milk"]', '{"n":"é"}', '"x"']


def test_write_replies() -> None:
    assert keys.written({"context": "c"}) == ["OK"]
    assert keys.written({"version": 3}) == ["OK version 3"]
    assert keys.deleted("k", {"deleted": True, "version": 4}) == ["deleted k"]
    assert keys.deleted("k", {"deleted": False, "context": "c"}) == ["k did not exist"]


# ---------------------------------------------------------------------- ls: the page walk
class Server:
    """A fake listing: `stored` keys (False: a tombstone, examined but not listed); each
    page examines at most `cuts[i]` entries (the partition bounds of a real merge), lists
    the live ones up to `limit`, and gives as `next` the last listed key when the page is
    full, else the last examined one (None past the end)."""

    def __init__(self, stored: Mapping[str, bool], cuts: list[int]) -> None:
        self.order = sorted(stored)
        self.stored = stored
        self.cuts = cuts
        self.calls: list[tuple[str | None, int]] = []

    def fetch(self, after: str | None, limit: int) -> dict[str, Any]:
        self.calls.append((after, limit))
        cut = max(1, self.cuts[len(self.calls) % len(self.cuts)])
        rest = [k for k in self.order if after is None or k > after]
        listed: list[str] = []
        for examined, key in enumerate(rest[:cut]):
            if self.stored[key]:
                listed.append(key)
            if len(listed) == limit:
                return {"keys": listed, "next": key}
            if examined == cut - 1 and examined < len(rest) - 1:
                return {"keys": listed, "next": key}
        return {"keys": listed, "next": None}


@given(
    stored=st.dictionaries(st.text(max_size=4), st.booleans(), max_size=40),
    cuts=st.lists(st.integers(1, 12), min_size=1, max_size=5),
    limit=st.none() | st.integers(1, 50),
    page_size=st.integers(1, 15),
)
def test_the_walk_lists_every_live_key_once_in_order(
    stored: dict[str, bool], cuts: list[int], limit: int | None, page_size: int
) -> None:
    oracle = sorted(k for k, live in stored.items() if live)
    server = Server(stored, cuts)
    assert list(keys.walk(server.fetch, limit, page_size)) == oracle[:limit]
    assert all(n <= page_size and (limit is None or n <= limit) for _, n in server.calls)


def test_the_walk_stops_asking_once_it_has_the_limit() -> None:
    server = Server({f"k{i:02d}": True for i in range(30)}, [100])
    assert list(keys.walk(server.fetch, 12, 5)) == [f"k{i:02d}" for i in range(12)]
    assert [n for _, n in server.calls] == [5, 5, 2]


def test_a_cursor_that_does_not_advance_is_an_error_not_a_loop() -> None:
    def stuck(after: str | None, limit: int) -> dict[str, Any]:
        return {"keys": [], "next": "b"}

    with pytest.raises(KvctlError, match="did not advance past 'b'"):
        list(keys.walk(stuck, None, 10))


# ---------------------------------------------------------------------- cluster health
OK = {"status": "ok", "epoch": 7, "node": "n1", "member": True}
JOINING = {"status": "joining", "epoch": 7, "node": "n4", "member": False}
DOWN = Retryable("cannot connect to http://h3:1/v1/health")


@pytest.mark.parametrize(
    ("answers", "code"),
    [
        ([OK, OK], None),
        ([OK, JOINING], errors.UNHEALTHY),
        ([OK, {"status": "degraded", "node": "n2"}], errors.UNHEALTHY),
        ([OK, DOWN], errors.UNAVAILABLE),
        ([JOINING, DOWN], errors.UNAVAILABLE),  # one down outweighs one joining
        ([NotReady("metadata not bootstrapped")], errors.UNAVAILABLE),  # a 503 while booting
    ],
)
def test_health_verdicts(answers: list[dict[str, Any] | KvError], code: int | None) -> None:
    rows = [keys.health_row(f"h{i}:1", a) for i, a in enumerate(answers)]
    verdict = keys.health_verdict(rows)
    assert (verdict and verdict.code) == code
    assert len(keys.health_lines(rows)) == len(rows) + 1


def test_health_rows_and_the_one_line() -> None:
    rows = [keys.health_row("h1:1", OK), keys.health_row("h3:1", DOWN)]
    assert rows[0] == {
        "endpoint": "h1:1",
        "healthy": True,
        "status": "ok",
        "node": "n1",
        "epoch": 7,
    }
    assert rows[1]["status"] is None and rows[1]["code"] == "unavailable"
    lines = keys.health_lines(rows)
    assert lines[1].split()[:3] == ["h1:1", "ok", "n1"]
    assert lines[2].split()[:3] == ["h3:1", "down", "-"] and "cannot connect" in lines[2]
    verdict = keys.health_verdict(rows)
    assert verdict is not None and verdict.message == "1 of 2 endpoints not healthy: h3:1 (down)"
