"""kvctl's pieces around the commands: exit codes and messages (kvctl/errors.py), the
staged-changes file (kvctl/staged.py) and the `status --wait` loop (kvctl/follow.py) with
a fake client, a fake clock and no sleeping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kv.errors import (
    ConditionFailed,
    InvalidRequest,
    KeyNotFound,
    KeyspaceNotFound,
    KvError,
    NoLeader,
    PlanConflict,
    Retryable,
    UnknownOutcome,
    from_wire,
)
from kv.meta import Member
from kv.plan import Change
from kvctl import errors, follow, staged
from kvctl.errors import KvctlError
from kvctl.status import Status

N4 = Member("n4", "10.0.0.4:7001", "10.0.0.4:7101")


# ---------------------------------------------------------------------- exit codes
@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (
            PlanConflict("the metadata changed since the plan was made", reason="plan_changed"),
            errors.REFUSED,
            "the cluster changed since `kvctl plan show`; run `kvctl plan show` again",
        ),
        (
            PlanConflict("plan 1234 is in flight", reason="plan_in_flight"),
            errors.REFUSED,
            "another plan is in flight (plan 1234 is in flight); follow it with "
            "`kvctl status --wait` or stop it with `kvctl abort`",
        ),
        (InvalidRequest("node", "'n9' is not a member"), errors.REFUSED, "refused: node: 'n9'"),
        (NoLeader("no voter took it"), errors.UNAVAILABLE, "unavailable: no voter took it"),
        (Retryable("cannot connect to\nhttp://x:1"), errors.UNAVAILABLE, "unavailable: cannot"),
        (UnknownOutcome("POST timed out"), errors.UNKNOWN, "unknown outcome (POST timed out)"),
        (KvError("internal error (logged)"), errors.REFUSED, "refused (internal): internal"),
        (KvctlError("nothing staged"), errors.REFUSED, "nothing staged"),
        (KvctlError("not done", errors.NOT_DONE), errors.NOT_DONE, "not done"),
        (KeyNotFound("key 'k' not found"), errors.NOT_FOUND, "not found: key 'k' not found"),
        (KeyspaceNotFound("ks"), errors.NO_KEYSPACE, "no such keyspace: keyspace 'ks' does"),
        (ConditionFailed(3), errors.CONDITION_FAILED, "condition failed: if_version did not"),
    ],
)
def test_each_failure_has_an_exit_code_and_one_line(
    exc: Exception, code: int, message: str
) -> None:
    found = errors.failure(exc)
    assert found is not None and found[0] == code
    assert found[1].startswith(message) and "\n" not in found[1]


@pytest.mark.parametrize(
    ("command", "advice"),
    [
        ("put", "read the key, or send it again with the same --request-id"),
        ("del", "read the key, or send it again with the same --request-id"),
        ("commit", "check `kvctl status` before retrying"),
        ("", "check `kvctl status` before retrying"),
    ],
)
def test_an_unknown_outcome_says_what_to_look_at_for_the_command(command: str, advice: str) -> None:
    found = errors.failure(UnknownOutcome("PUT timed out"), command)
    assert found == (
        errors.UNKNOWN,
        f"unknown outcome (PUT timed out): it may have been applied; {advice}",
    )


def test_a_plan_conflict_from_the_wire_keeps_its_reason() -> None:
    body = {"error": {"code": "plan_conflict", "message": "m", "reason": "plan_changed"}}
    assert errors.failure(from_wire(409, body)) == (errors.REFUSED, errors.PLAN_CHANGED)


def test_anything_else_is_not_ours_to_map() -> None:
    assert errors.failure(ValueError("a bug")) is None


# ---------------------------------------------------------------------- staged changes
def test_staging_forgets_the_plan_shown(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "plan.json"
    assert staged.load(path) == staged.Staged()
    staged.save(path, staged.Staged().staging(Change("add", "n4", N4)).shown("p1"))
    loaded = staged.load(path)
    assert loaded.plan_id == "p1" and loaded.changes == (Change("add", "n4", N4).to_wire(),)
    more = loaded.staging(Change("remove", "n1", force=True))
    assert more.plan_id is None and more.changes[1] == {
        "kind": "remove",
        "node": "n1",
        "force": True,
    }
    assert staged.clear(path) and not staged.clear(path)


def test_a_node_is_staged_once(tmp_path: Path) -> None:
    once = staged.Staged().staging(Change("replace", "n3", N4))
    with pytest.raises(KvctlError, match="n4 is already in a staged change"):
        once.staging(Change("add", "n4", N4))
    with pytest.raises(KvctlError, match="n3 is already"):
        once.staging(Change("remove", "n3"))


@pytest.mark.parametrize(
    "text",
    ["{", "[]", '{"version": 9}', '{"version": 1, "changes": [{"kind": "grow"}]}'],
)
def test_a_damaged_state_file_is_refused_naming_it(tmp_path: Path, text: str) -> None:
    path = tmp_path / "plan.json"
    path.write_text(text)
    with pytest.raises(KvctlError, match="is not a kvctl state file"):
        staged.load(path)


def test_the_file_is_the_documented_json(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    staged.save(path, staged.Staged().staging(Change("add", "n4", N4)))
    assert json.loads(path.read_text()) == {
        "version": 1,
        "changes": [{"kind": "add", "node": "n4", "member": N4.to_dict()}],
        "plan_id": None,
    }
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # no temporary left


# ---------------------------------------------------------------------- status --wait
IDLE = {"status": "idle", "epoch": 9, "members": ["n1", "n2"]}
MEMBERS = {"members": [{"id": "n1", "http": "h1:1", "raft": "h1:2"}]}


def moving(done: int) -> dict[str, Any]:
    move = {"mode": "eventual", "replication": 1, "partition": 0, "from": ["n1"], "to": ["n2"]}
    return {"status": "moving", "epoch": 8, "plan_id": "p", "moves_done": done, "pending": [move]}


class FakeClient:
    """Answers GET /v1/membership from a script; an exception in it is raised."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script

    def membership_status(self) -> Any:
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def cluster(self) -> Any:
        return MEMBERS

    def clusters(self, nodes: list[str]) -> Any:
        return {"h1:1": {"node": "n1", "members": MEMBERS["members"], "transfers": []}}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def wait(
    client: FakeClient, clock: FakeClock, deadline: float = 10.0
) -> tuple[Status, list[Status]]:
    seen: list[Status] = []
    st = follow.until_idle(client, deadline, 1.0, seen.append, clock, clock.sleep)
    return st, seen


def test_the_wait_ends_when_the_plan_is_done_with_rates_since_the_first_look() -> None:
    clock = FakeClock()
    st, seen = wait(FakeClient([moving(0), moving(1), moving(3), IDLE]), clock)
    assert st.idle and [s.moves_done for s in seen] == [0, 1, 3, 0]
    assert seen[2].moves_per_s == 1.5 and clock.slept == [1.0, 1.0, 1.0]


def test_the_wait_gives_up_at_the_deadline_with_the_last_look() -> None:
    clock = FakeClock()
    st, _ = wait(FakeClient([moving(0)] * 10), clock, deadline=2.5)
    assert not st.idle and clock.now == 102.5 and clock.slept == [1.0, 1.0, 0.5]


def test_a_failed_look_is_retried_until_the_deadline_then_raised() -> None:
    clock = FakeClock()
    st, _ = wait(FakeClient([NoLeader("election"), moving(0), IDLE]), clock)
    assert st.idle
    with pytest.raises(UnknownOutcome):
        wait(FakeClient([UnknownOutcome("504")] * 5), FakeClock(), deadline=2.0)
