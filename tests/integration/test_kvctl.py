"""kvctl against a real cluster (issue 9, item 8): the commands run in-process through
click's CliRunner and talk HTTP to in-process nodes, as in the rest of this tier.

Three founders with an eventual keyspace holding data, and n4 started as a joiner (seeds
only). Pulls are throttled (`transfer_keys_per_s`) so that moving n4's partitions takes a
few seconds and `status --wait` sees the plan move. Each test has its own state file and
leaves no plan in flight; every wait is a poll with a deadline (`status --wait --timeout`);
every node is stopped even when a test fails.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kvctl import errors
from kvctl.cli import cli
from tests.integration.conftest import (
    NodeThread,
    api_of,
    free_port,
    key_path,
    running,
)
from tests.integration.test_joining import EVENTUAL, configs

KEYS = 240
THROTTLE = {
    "transfer_keys_per_s": 80.0,
    "transfer_batch": 16,
    "partitions": 16,
    "switch_partitions_per_round": 1,  # a switch takes seconds: `keyspace cancel` meets it
}
WAIT_S = "120"  # status --wait deadline: the move takes a few seconds


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NodeThread]]:
    founders, joiner = configs(tmp_path_factory.mktemp("kvctl"))
    with (
        running([replace(cfg, **THROTTLE) for cfg in founders]) as started,
        running([replace(joiner, **THROTTLE)]) as joining,
    ):
        api = api_of(started["n1"])
        assert api.put("/v1/keyspaces/ev", EVENTUAL).status == 201
        for i in range(KEYS):
            assert api.put(key_path("ev", f"k{i}"), {"value": i}).status == 200
        yield {**started, **joining}


@pytest.fixture
def kvctl(nodes: dict[str, NodeThread], tmp_path: Path) -> Any:
    """Run kvctl with the founders as endpoints and this test's own state file."""
    endpoints = ",".join(nodes[n].config.advertise for n in ("n1", "n2", "n3"))
    state = tmp_path / "plan.json"

    def run(*args: str, endpoints: str = endpoints) -> Result:
        argv = ["--endpoints", endpoints, "--state-file", str(state), "--timeout", "10", *args]
        result = CliRunner().invoke(cli, argv)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    return run


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.output)
    return result.stdout


def failed(result: Result, code: int) -> str:
    """The exit code, and the one line on stderr."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvctl: "), result.stderr
    return lines[0]


def test_adding_the_joiner_plan_show_commit_and_wait(
    nodes: dict[str, NodeThread], kvctl: Any
) -> None:
    cfg = nodes["n4"].config
    staged = ok(kvctl("plan", "add", "n4", "--http", cfg.advertise, "--raft", cfg.raft_advertise))
    assert "staged: add n4" in staged

    plan = json.loads(ok(kvctl("--json", "plan", "show")))
    assert plan["moves"] and {m["to"] for m in plan["moves"]} == {"n4"}
    shown = ok(kvctl("plan", "show"))  # the same plan, as text: every replica that moves
    assert f"plan {plan['plan_id']}" in shown
    assert sum(" → n4" in line for line in shown.splitlines()) == len(plan["moves"])

    assert f"committed plan {plan['plan_id']}" in ok(kvctl("commit"))
    moving = json.loads(ok(kvctl("--json", "status")))
    assert moving["status"] in ("moving", "idle")
    for move in moving["moves"]:
        assert move["mode"] == "eventual" and "n4" in move["to"] and "n4" not in move["from"]

    waited = ok(kvctl("status", "--wait", "--timeout", WAIT_S, "--interval", "0.2"))
    lines = waited.splitlines()
    assert lines[-1].startswith("no plan in flight") and lines[-1].endswith("n1, n2, n3, n4")
    if moving["status"] == "moving":
        assert any("moves done" in line for line in lines[:-1]), waited
    assert ok(kvctl("plan", "clear")) == "nothing was staged\n"  # the commit cleared it
    assert "n4" in ok(kvctl("cluster", "status"))


def test_a_commit_after_the_cluster_changed_is_refused(
    nodes: dict[str, NodeThread], kvctl: Any
) -> None:
    ghost = ("--http", f"127.0.0.1:{free_port()}", "--raft", f"127.0.0.1:{free_port()}")
    ok(kvctl("plan", "add", "n9", *ghost))
    ok(kvctl("plan", "show"))
    api = api_of(nodes["n1"])
    assert api.put("/v1/keyspaces/ev_other", EVENTUAL).status == 201  # the metadata moves on
    line = failed(kvctl("commit"), errors.REFUSED)
    assert line == f"kvctl: {errors.PLAN_CHANGED}"
    assert ok(kvctl("plan", "clear")) == "staged changes dropped\n"  # kept for a re-plan
    assert json.loads(ok(kvctl("--json", "status")))["status"] == "idle"


def test_a_plan_that_cannot_finish_times_out_with_its_reason_and_aborts(kvctl: Any) -> None:
    """n9 is added, but nothing runs at its addresses: its pulls never start."""
    ghost = ("--http", f"127.0.0.1:{free_port()}", "--raft", f"127.0.0.1:{free_port()}")
    ok(kvctl("plan", "add", "n9", *ghost))
    ok(kvctl("plan", "show"))
    ok(kvctl("commit"))
    try:
        result = kvctl("status", "--wait", "--timeout", "2", "--interval", "0.5")
        line = failed(result, errors.NOT_DONE)
        assert "not done after 2s: stuck: eventual n=3 partition" in line
        assert "n9: does not answer" in line and "not answering: n9: cannot connect" in line
        assert "stuck: eventual" in result.stdout  # the last status, in full
        # issue 12: no switch while a plan moves data — a clear refusal, nothing changed
        before = ok(kvctl("keyspace", "describe", "ev"))
        refused = kvctl("keyspace", "switch", "ev", "--to", "linearizable", "--siblings", "lww")
        assert refused.exit_code != 0 and "is moving data" in refused.stderr, refused.output
        assert ok(kvctl("keyspace", "describe", "ev")) == before
    finally:
        aborted = ok(kvctl("abort"))
    assert aborted.startswith("aborted plan")
    final = json.loads(ok(kvctl("--json", "status", "--wait", "--timeout", WAIT_S)))
    assert final["status"] == "idle" and "n9" not in final["members"]


def test_refusals_and_usage_errors_are_one_line_and_change_nothing(kvctl: Any) -> None:
    line = failed(kvctl("commit"), errors.REFUSED)
    assert line == "kvctl: nothing staged: stage changes with `kvctl plan add|remove|replace`"
    assert failed(kvctl("abort"), errors.REFUSED) == "kvctl: no plan in flight to abort"
    ok(kvctl("plan", "add", "n1", "--http", "127.0.0.1:1", "--raft", "127.0.0.1:2"))
    line = failed(kvctl("plan", "show"), errors.REFUSED)
    assert line == "kvctl: refused: member: id 'n1' is already a member"
    line = failed(kvctl("commit"), errors.REFUSED)
    assert "run `kvctl plan show` first" in line
    assert ok(kvctl("plan", "clear")) == "staged changes dropped\n"
    bad = kvctl("plan", "add", "n5", "--http", "nowhere", "--raft", "127.0.0.1:2")
    assert bad.exit_code == errors.USAGE and "'nowhere' is not HOST:PORT" in bad.stderr


def test_an_endpoint_nobody_listens_on_is_unavailable(kvctl: Any) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    line = failed(kvctl("cluster", "status", endpoints=nobody), errors.UNAVAILABLE)
    assert line.startswith(f"kvctl: unavailable: cannot connect to http://{nobody}/v1/cluster")


def test_cluster_status_as_json_and_endpoints_from_the_environment(
    nodes: dict[str, NodeThread], tmp_path: Path
) -> None:
    env = {"KV_ENDPOINTS": nodes["n2"].config.advertise, "KVCTL_STATE": str(tmp_path / "s")}
    result = CliRunner().invoke(cli, ["--json", "cluster", "status"], env=env)
    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout)
    assert view["node"] == "n2" and {"n1", "n2", "n3"} <= {m["id"] for m in view["members"]}


def test_keyspace_commands_and_a_live_switch_followed_to_the_end(
    kvctl: Any, nodes: dict[str, NodeThread]
) -> None:
    """Issue 12: `kvctl keyspace switch` starts the switch and follows it, both ways; the
    same mode is refused with one line and exit 1."""
    created = ok(kvctl("keyspace", "create", "sw", "--consistency", "eventual"))
    assert created.startswith("sw  eventual  replication 3")
    assert api_of(nodes["n2"]).put(key_path("sw", "k"), {"value": [1]}).status == 200
    switched = ok(kvctl("keyspace", "switch", "sw", "--to", "linearizable"))
    assert switched.startswith("sw  linearizable  replication 3")
    assert api_of(nodes["n3"]).get(key_path("sw", "k")).json()["value"] == [1]
    again = kvctl("keyspace", "switch", "sw", "--to", "linearizable")
    assert "already linearizable" in failed(again, 1)
    assert "sw  linearizable" in ok(kvctl("keyspace", "list"))
    back = ok(kvctl("keyspace", "switch", "sw", "--to", "eventual"))
    assert back.startswith("sw  eventual  replication 3")
    assert api_of(nodes["n1"]).get(key_path("sw", "k")).json()["value"] == [1]
    ok(kvctl("keyspace", "delete", "sw"))
    assert "sw " not in ok(kvctl("keyspace", "list"))


def test_keyspace_cancel_follows_a_switch_back(kvctl: Any, nodes: dict[str, NodeThread]) -> None:
    """Issue 12: `kvctl keyspace cancel` turns a switch to linearizable around and follows
    it back to eventual; nothing to cancel is one line and a non-zero exit."""
    ok(kvctl("keyspace", "create", "cs", "--consistency", "eventual"))
    assert api_of(nodes["n1"]).put(key_path("cs", "k"), {"value": "kept"}).status == 200
    started = ok(kvctl("keyspace", "switch", "cs", "--to", "linearizable", "--no-wait"))
    assert "switching to linearizable" in started
    back = ok(kvctl("keyspace", "cancel", "cs"))
    assert back.startswith("cs  eventual  replication 3"), back
    assert api_of(nodes["n2"]).get(key_path("cs", "k")).json()["value"] == "kept"
    assert "no switch in flight" in failed(kvctl("keyspace", "cancel", "cs"), 1)
    ok(kvctl("keyspace", "delete", "cs"))
