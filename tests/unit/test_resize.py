"""ops/resize's pure checks: the meta group's majority, a known leader, agreed views."""

from __future__ import annotations

from typing import Any

from ops.resize import disagreement, leader_known, majority


def view(epoch: int, voters: list[str], leader: str | None, members: list[str]) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "members": [{"id": m} for m in members],
        "meta_group": {"voters": voters, "leader": leader},
    }


FIVE = ["n1", "n2", "n3", "n4", "n5"]


def test_majority_counts_running_voters_as_the_newest_epoch_lists_them() -> None:
    views = {"n1": view(7, FIVE, "n1", FIVE), "n2": view(6, ["n1"], "n1", FIVE)}
    assert majority(views, {"n1", "n2", "n3"})[0]
    assert not majority(views, {"n1", "n2"})[0]  # 2 of 5: no majority
    assert not majority({}, {"n1"})[0]


def test_a_leader_must_be_one_of_the_voters_a_member_lists() -> None:
    assert leader_known({"n1": view(1, FIVE, "n2", FIVE)})[0]
    assert not leader_known({"n1": view(1, FIVE, "127.0.0.1:7101", FIVE)})[0]
    assert not leader_known({"n1": view(1, FIVE, None, FIVE)})[0]


def test_views_must_agree_on_epoch_members_and_an_odd_voter_count() -> None:
    four = ["n1", "n2", "n3", "n4"]
    agreed = {n: view(3, ["n1", "n2", "n3"], "n1", four) for n in four}
    assert disagreement(agreed, set(four)) is None
    assert disagreement({**agreed, "n4": view(2, ["n1", "n2", "n3"], "n1", four)}, set(four))
    even = {n: view(3, four, "n1", four) for n in four}  # 4 voters: kv/voters.py says 3
    assert disagreement(even, set(four)) is not None
    assert disagreement(dict(list(agreed.items())[:3]), set(four)) is not None
