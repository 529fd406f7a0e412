"""`kvctl get|put|del|ls` and `cluster health` against a real node (issue 13, item 2): the
commands run in-process through click's CliRunner and talk HTTP to one in-process node,
as in the rest of this tier (tests/integration/test_kvctl.py runs the membership ones on
four). The node has a linearizable keyspace `lin` (the `lin_ks` fixture waits, with a
deadline, for its groups to be led) and an eventual one `ev`, both of replication 1; it is
stopped by its fixture even when a test fails. Nothing here waits on time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kvctl import errors
from kvctl.cli import cli
from tests.integration.conftest import (
    Api,
    NodeThread,
    create_keyspace,
    free_port,
    key_path,
)

Kvctl = Callable[..., Result]


@pytest.fixture(scope="module")
def ev(api: Api) -> str:
    create_keyspace(api, "ev", {"consistency": "eventual", "replication": 1})
    return "ev"


@pytest.fixture
def kvctl(node: NodeThread, tmp_path: Any) -> Kvctl:
    """Run kvctl against the node (or `endpoints`), with a state file of this test's own."""

    def run(*args: str, endpoints: str = node.config.advertise) -> Result:
        argv = ["--endpoints", endpoints, "--state-file", str(tmp_path / "s"), *args]
        result = CliRunner().invoke(cli, ["--timeout", "10", *argv])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    return run


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.output)
    assert result.stderr == "", result.stderr
    return result.stdout


def failed(result: Result, code: int) -> str:
    """The exit code, and the one line on stderr."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvctl: "), result.stderr
    return lines[0]


# ---------------------------------------------------------------------- get, put, del
def test_put_reads_json_else_a_string_and_get_prints_json(kvctl: Kvctl, ev: str) -> None:
    assert ok(kvctl("put", ev, "cart", '["milk", "eggs"]')) == "OK\n"
    assert ok(kvctl("get", ev, "cart")) == '["milk","eggs"]\n'
    assert ok(kvctl("put", ev, "greeting", "hello world")) == "OK\n"
    assert ok(kvctl("get", ev, "greeting")) == '"hello world"\n'
    ok(kvctl("put", ev, "n", "42"))
    ok(kvctl("put", ev, "s", '"42"'))
    assert ok(kvctl("get", ev, "n")) == "42\n" and ok(kvctl("get", ev, "s")) == '"42"\n'
    reply = json.loads(ok(kvctl("--json", "get", ev, "cart")))
    assert reply["key"] == "cart" and reply["value"] == ["milk", "eggs"]
    assert isinstance(reply["context"], str)
    bad = kvctl("put", ev, "x", "1e999")
    assert bad.exit_code == errors.USAGE and "VALUE: the number 1e999" in bad.stderr


def test_siblings_print_one_per_line_and_a_put_with_the_context_resolves_them(
    kvctl: Kvctl, ev: str
) -> None:
    ok(kvctl("put", ev, "sib", '["a"]'))
    ok(kvctl("put", ev, "sib", '["b"]'))  # blind: a sibling, not an overwrite
    assert sorted(ok(kvctl("get", ev, "sib")).splitlines()) == ['["a"]', '["b"]']
    seen = json.loads(ok(kvctl("--json", "get", ev, "sib")))
    assert sorted(seen["siblings"]) == [["a"], ["b"]]
    ok(kvctl("put", ev, "sib", '["a", "b"]', "--context", seen["context"]))
    assert ok(kvctl("get", ev, "sib")) == '["a","b"]\n'


def test_eventual_delete_and_a_missing_key(kvctl: Kvctl, ev: str) -> None:
    ok(kvctl("put", ev, "gone", "1"))
    context = json.loads(ok(kvctl("--json", "get", ev, "gone")))["context"]
    assert ok(kvctl("del", ev, "gone", "--context", context)) == "deleted gone\n"
    line = failed(kvctl("get", ev, "gone"), errors.NOT_FOUND)
    assert line == "kvctl: not found: key 'gone' not found"
    assert ok(kvctl("del", ev, "gone")) == "gone did not exist\n"
    line = failed(kvctl("put", ev, "k", "1", "--if-version", "1"), errors.REFUSED)
    assert "if_version: applies only to linearizable keyspaces; use context" in line


def test_linearizable_versions_conditions_and_delete(kvctl: Kvctl, lin_ks: str) -> None:
    assert ok(kvctl("put", lin_ks, "alice", "100", "--if-version", "0")) == "OK version 1\n"
    line = failed(kvctl("put", lin_ks, "alice", "90", "--if-version", "0"), errors.CONDITION_FAILED)
    assert line == "kvctl: condition failed: if_version did not match; current version is 1"
    assert ok(kvctl("put", lin_ks, "alice", "90", "--if-version", "1")) == "OK version 2\n"
    reply = json.loads(ok(kvctl("--json", "get", lin_ks, "alice")))
    assert reply == {"key": "alice", "value": 90, "version": 2}
    failed(kvctl("del", lin_ks, "alice", "--if-version", "1"), errors.CONDITION_FAILED)
    assert ok(kvctl("del", lin_ks, "alice", "--if-version", "2")) == "deleted alice\n"
    failed(kvctl("get", lin_ks, "alice"), errors.NOT_FOUND)
    line = failed(kvctl("put", lin_ks, "k", "1", "--context", "x"), errors.REFUSED)
    assert "context: applies only to eventual keyspaces" in line


def test_a_write_sent_again_with_its_request_id_is_applied_once(kvctl: Kvctl, lin_ks: str) -> None:
    first = json.loads(ok(kvctl("--json", "put", lin_ks, "rid", "1", "--request-id", "kv-r1")))
    again = json.loads(ok(kvctl("--json", "put", lin_ks, "rid", "1", "--request-id", "kv-r1")))
    assert again == first
    assert json.loads(ok(kvctl("--json", "get", lin_ks, "rid")))["version"] == first["version"]
    line = failed(kvctl("put", lin_ks, "rid", "2", "--request-id", "kv-r1"), errors.REFUSED)
    assert line.startswith("kvctl: refused (request_id_conflict): ")
    ok(kvctl("del", lin_ks, "rid", "--request-id", "kv-d1"))
    assert ok(kvctl("del", lin_ks, "rid", "--request-id", "kv-d1")) == "deleted rid\n"


@pytest.mark.parametrize("mode", ["ev", "lin"])
def test_put_with_a_ttl_shows_when_the_key_expires(
    kvctl: Kvctl, mode: str, request: pytest.FixtureRequest
) -> None:
    """docs/ttl.md: `--ttl` is the write's `ttl_s`; `get --json` shows `expires_at` (ms), and
    a write without it makes the key permanent again. The expiry itself: test_ttl.py."""
    ks = request.getfixturevalue("lin_ks" if mode == "lin" else "ev")
    before = time.time()
    ok(kvctl("put", ks, "session", '{"user": "bob"}', "--ttl", "3600"))
    after = time.time()
    expires = json.loads(ok(kvctl("--json", "get", ks, "session")))["expires_at"]
    assert (before + 3600) * 1000 - 1 <= expires <= (after + 3600) * 1000 + 1
    ok(
        kvctl(
            "put", ks, "session", "1", *(("--context", _context(kvctl, ks)) if mode == "ev" else ())
        )
    )
    assert "expires_at" not in json.loads(ok(kvctl("--json", "get", ks, "session")))
    assert kvctl("put", ks, "session", "1", "--ttl", "0").exit_code == errors.USAGE


def _context(kvctl: Kvctl, ks: str) -> str:
    context: str = json.loads(ok(kvctl("--json", "get", ks, "session")))["context"]
    return context


# ---------------------------------------------------------------------- ls
LISTED = [f"p/{i:03d}" for i in range(30)]


@pytest.mark.parametrize("mode", ["ev", "lin"])
def test_ls_follows_the_pages_to_the_end_or_the_limit(
    kvctl: Kvctl, api: Api, mode: str, request: pytest.FixtureRequest
) -> None:
    ks = request.getfixturevalue("ev" if mode == "ev" else "lin_ks")
    for key in [*LISTED, "p", "q/1", "o/1"]:
        assert api.put(key_path(ks, key), {"value": key}).status == 200
    assert ok(kvctl("ls", ks, "--prefix", "p/", "--page-size", "7")).splitlines() == LISTED
    limited = ok(kvctl("ls", ks, "--prefix", "p/", "--page-size", "4", "--limit", "10"))
    assert limited.splitlines() == LISTED[:10]
    everything = json.loads(ok(kvctl("--json", "ls", ks, "--page-size", "3")))
    assert everything == sorted(everything) and set(LISTED) | {"p", "q/1", "o/1"} <= set(everything)
    assert json.loads(ok(kvctl("--json", "ls", ks, "--prefix", "zz"))) == []
    assert ok(kvctl("ls", ks, "--prefix", "zz")) == ""


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "args",
    [("get", "nope", "k"), ("put", "nope", "k", "1"), ("del", "nope", "k"), ("ls", "nope")],
)
def test_an_unknown_keyspace_exits_7_with_one_line(kvctl: Kvctl, args: tuple[str, ...]) -> None:
    line = failed(kvctl(*args), errors.NO_KEYSPACE)
    assert line == "kvctl: no such keyspace: keyspace 'nope' does not exist"


def test_an_endpoint_nobody_listens_on_is_unavailable(kvctl: Kvctl, ev: str) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    line = failed(kvctl("get", ev, "k", endpoints=nobody), errors.UNAVAILABLE)
    assert line.startswith(f"kvctl: unavailable: cannot connect to http://{nobody}/v1/keyspaces")
    line = failed(kvctl("put", ev, "k", "1", endpoints=nobody), errors.UNAVAILABLE)
    assert "cannot connect" in line  # not sent: certainly not applied, no "unknown outcome"


# ---------------------------------------------------------------------- cluster health
def test_cluster_health(kvctl: Kvctl, node: NodeThread) -> None:
    me = node.config.advertise
    lines = ok(kvctl("cluster", "health")).splitlines()
    assert lines[0].split() == ["endpoint", "health", "node", "detail"]
    assert lines[1].split()[:3] == [me, "ok", "n1"]
    whole = json.loads(ok(kvctl("--json", "cluster", "health", "--cluster")))
    assert [(r["endpoint"], r["healthy"]) for r in whole["endpoints"]] == [(me, True)]

    nobody = f"127.0.0.1:{free_port()}"
    result = kvctl("cluster", "health", endpoints=f"{me},{nobody}")
    line = failed(result, errors.UNAVAILABLE)
    assert line == f"kvctl: 1 of 2 endpoints not healthy: {nobody} (down)"
    rows = result.stdout.splitlines()
    assert rows[1].split()[:2] == [me, "ok"] and rows[2].split()[:2] == [nobody, "down"]
    as_json = kvctl("--json", "cluster", "health", endpoints=f"{nobody},{me}")
    failed(as_json, errors.UNAVAILABLE)
    found = {r["endpoint"]: r for r in json.loads(as_json.stdout)["endpoints"]}
    assert found[me]["healthy"] and not found[nobody]["healthy"]
    assert found[nobody]["status"] is None and "cannot connect" in found[nobody]["error"]
