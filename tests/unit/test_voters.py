"""The meta group's voter policy (kv/voters.py), by cases: how many voters, which ones, and
the one change to make next (docs/membership.md "Meta group voters")."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kv import voters
from kv.meta import Member, Metadata, Transition
from kv.voters import Step, desired, next_step, target_size


def member(i: int) -> Member:
    return Member(f"n{i}", f"h{i}:1", f"h{i}:2")


def md_of(*ids: int, leaving: tuple[int, ...] = ()) -> Metadata:
    members = tuple(member(i) for i in ids)
    md = Metadata(epoch=1, members=members)
    if not leaving:
        return md
    staying = tuple(m for m in members if int(m.id[1:]) not in leaving)
    return replace(md, transition=Transition("p", (), staying, (), frozenset()))


@pytest.mark.parametrize(
    ("eligible", "size"), [(0, 0), (1, 1), (2, 1), (3, 3), (4, 3), (5, 5), (6, 5), (40, 5)]
)
def test_the_size_is_odd_and_at_most_five(eligible: int, size: int) -> None:
    assert target_size(eligible) == size


def test_founders_stay_voters_while_members_join() -> None:
    founders = ("n1", "n2", "n3")
    assert set(desired(md_of(1, 2, 3), founders)) == set(founders)
    assert set(desired(md_of(1, 2, 3, 4), founders)) == set(founders)  # 4 members: still 3
    five = desired(md_of(1, 2, 3, 4, 5), founders)
    assert set(five) == {"n1", "n2", "n3", "n4", "n5"}
    assert set(desired(md_of(*range(1, 9)), five)) == set(five)  # 8 members: the same 5


def test_new_voters_are_picked_in_rank_order_not_join_order() -> None:
    md = md_of(*range(1, 10))
    picked = desired(md, ("n1",))
    ranked = sorted((m.id for m in md.members if m.id != "n1"), key=voters.rank)
    assert set(picked) == {"n1", *ranked[:4]}
    assert list(picked) == sorted(picked, key=voters.rank)


def test_a_member_the_plan_removes_is_replaced_not_kept() -> None:
    five = ("n1", "n2", "n3", "n4", "n5")
    md = md_of(1, 2, 3, 4, 5, 6, leaving=(1,))
    assert set(desired(md, five)) == {"n2", "n3", "n4", "n5", "n6"}


def test_too_many_eligible_voters_keep_the_best_ranked() -> None:
    four = ("n1", "n2", "n3", "n4")
    kept = desired(md_of(1, 2, 3, 4), four)
    assert kept == tuple(sorted(four, key=voters.rank)[:3])


def test_voters_that_left_the_metadata_are_not_desired() -> None:
    assert "n9" not in desired(md_of(1, 2, 3), ("n1", "n2", "n9"))


def test_unavailable_candidates_are_skipped_and_the_count_stays_odd() -> None:
    md = md_of(1, 2, 3, 4, 5)
    assert set(desired(md, ("n1", "n2", "n3"), unavailable={"n4"})) == {"n1", "n2", "n3"}
    assert set(desired(md, ("n1",), unavailable={"n2", "n3"})) == {"n1", "n4", "n5"}
    # an unavailable voter is not replaced: the policy keeps current voters
    assert set(desired(md_of(1, 2, 3), ("n1", "n2", "n3"), unavailable={"n3"})) == {
        "n1",
        "n2",
        "n3",
    }


def test_the_next_step_adds_before_it_removes() -> None:
    assert next_step(["a", "b", "c"], ["b", "c", "d"], "a") == Step("add", "d")
    assert next_step(["a", "b", "c", "d"], ["b", "c", "d"], "b") == Step("remove", "a")
    assert next_step(["b", "c", "d"], ["b", "c", "d"], "b") is None


def test_the_leader_is_removed_last() -> None:
    assert next_step(["a", "b", "c", "d", "e"], ["c", "d", "e"], "a") == Step("remove", "b")
    assert next_step(["a", "c", "d", "e"], ["c", "d", "e"], "a") == Step("remove", "a")


def test_growing_and_shrinking_go_one_voter_at_a_time() -> None:
    assert next_step(["a"], ["a", "b", "c"], "a") == Step("add", "b")
    assert next_step(["a", "b", "c", "d", "e"], ["a"], "a") == Step("remove", "b")
    # several replacements interleave: never more than one voter above the desired size
    assert next_step(["a", "b", "c"], ["c", "d", "e"], "c") == Step("add", "d")
    assert next_step(["a", "b", "c", "d"], ["c", "d", "e"], "c") == Step("remove", "a")


def test_a_stranger_address_is_extra_and_nothing_empties_the_group() -> None:
    assert next_step(["n1", "h9:2"], ["n1"], "n1") == Step("remove", "h9:2")
    assert next_step(["n1"], [], "n1") is None


def test_a_dead_extra_voter_is_removed_before_an_add_it_would_block() -> None:
    # 3 voters, one leaving and already down: 3 → 4 would need three live voters
    assert next_step(["a", "b", "c"], ["b", "c", "d"], "b", live={"b", "c"}) == Step("remove", "a")
    assert next_step(["b", "c"], ["b", "c", "d"], "b", live={"b", "c"}) == Step("add", "d")
    # with enough live voters the replacement still comes first
    assert next_step(["a", "b", "c", "d", "e"], ["b", "c", "d", "e", "f"], "b", live="bcde") == (
        Step("add", "f")
    )


def test_dead_extra_voters_go_before_live_ones() -> None:
    assert next_step(["a", "b", "c", "d", "e"], ["c", "d", "e"], "c", live="abcde") == Step(
        "remove", "a"
    )
    assert next_step(["a", "b", "c", "d", "e"], ["c", "d", "e"], "c", live="acde") == Step(
        "remove", "b"
    )
