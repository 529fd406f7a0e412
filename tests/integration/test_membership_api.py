"""The membership routes of the HTTP API on a real in-process node (kv/http/app.py):
plan → commit → status → abort, and every refusal as a 4xx naming the problem.

One node (n1) with an eventual keyspace of replication 1; the plan adds a node n2 whose
addresses nothing listens on — no data moves here (transfers are tested where they are
built): the plan is committed, shows its pending moves, and is aborted before any flips,
which returns the cluster to n1 alone.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import Api, error_of

N2 = {"id": "n2", "http": "127.0.0.1:1", "raft": "127.0.0.1:2"}
ADD_N2 = {"changes": [{"kind": "add", "node": "n2", "member": N2}]}


@pytest.fixture(scope="module")
def eventual(api: Api) -> str:
    body = {"consistency": "eventual", "replication": 1, "read_quorum": 1, "write_quorum": 1}
    assert api.put("/v1/keyspaces/mem_ev", body).status in (200, 201)
    return "mem_ev"


def ok(reply: Any, status: int = 200) -> dict[str, Any]:
    assert reply.status == status, reply
    data: dict[str, Any] = reply.json()
    return data


def test_plan_commit_status_abort(api: Api, eventual: str) -> None:
    assert ok(api.get("/v1/membership"))["status"] == "idle"
    plan = ok(api.request("POST", "/v1/membership/plan", json_body=ADD_N2))
    assert plan["summary"]["by_mode"] == {"eventual": len(plan["moves"])}
    assert all(m["to"] == "n2" and m["from"] == "n1" for m in plan["moves"])
    assert ok(api.get("/v1/membership"))["status"] == "idle"  # a plan changes nothing

    commit = {"plan_id": plan["plan_id"], **ADD_N2}
    status = ok(api.request("POST", "/v1/membership/commit", json_body=commit), 202)
    assert status["status"] == "moving" and status["moves_pending"] == len(plan["moves"])
    members = [m["id"] for m in api.get("/v1/cluster").json()["members"]]
    assert members == ["n1", "n2"]

    again = api.request("POST", "/v1/membership/commit", json_body=commit)
    assert again.status == 409 and error_of(again)["reason"] == "plan_in_flight"

    abort = {"plan_id": plan["plan_id"]}
    assert ok(api.request("POST", "/v1/membership/abort", json_body=abort), 202)["status"] == "idle"
    assert [m["id"] for m in api.get("/v1/cluster").json()["members"]] == ["n1"]


def test_a_commit_naming_an_old_plan_is_refused(api: Api, eventual: str) -> None:
    plan = ok(api.request("POST", "/v1/membership/plan", json_body=ADD_N2))
    body = {"consistency": "eventual", "replication": 1}
    assert api.put("/v1/keyspaces/mem_other", body).status == 201  # the metadata moves on
    commit = {"plan_id": plan["plan_id"], **ADD_N2}
    reply = api.request("POST", "/v1/membership/commit", json_body=commit)
    assert reply.status == 409 and error_of(reply)["reason"] == "plan_changed"
    assert ok(api.get("/v1/membership"))["status"] == "idle"


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/v1/membership/plan", {"changes": [{"kind": "remove", "node": "n9"}]}, 400, "node"),
        ("/v1/membership/plan", {"changes": [{"kind": "remove", "node": "n1"}]}, 400, "node"),
        ("/v1/membership/plan", {"changes": "add"}, 400, "changes"),
        ("/v1/membership/plan", {"changes": [{"kind": "add", "node": "n1"}]}, 400, "member"),
        ("/v1/membership/plan", {"nope": 1}, 400, "nope"),
        ("/v1/membership/commit", ADD_N2, 400, "plan_id"),
        ("/v1/membership/abort", {"plan_id": "x"}, 409, None),
    ],
)
def test_bad_membership_requests_are_4xx_and_change_nothing(
    api: Api, eventual: str, path: str, body: Any, status: int, field: str | None
) -> None:
    reply = api.request("POST", path, json_body=body)
    assert reply.status == status, reply
    err = error_of(reply)
    if field is not None:
        assert err["field"] == field
    assert ok(api.get("/v1/membership"))["status"] == "idle"
