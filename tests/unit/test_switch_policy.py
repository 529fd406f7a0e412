"""The sibling policies of a switch to linearizable (dynamo_mode/switch_policy.py, issue 12)
and the write time a version carries for `lww` (dynamo_mode/siblings.py `Version.ts`)."""

from __future__ import annotations

import pytest

from dynamo_mode import siblings, switch_policy
from dynamo_mode.replica import decode_stored, decode_versions, encode_versions
from dynamo_mode.siblings import make_version


def v(actor: str, n: int, value: object, ts: int = 0, deleted: bool = False) -> siblings.Version:
    return make_version((actor, n), {}, value, deleted, (), ts)


def test_lww_keeps_the_latest_write_time_whatever_the_order() -> None:
    versions = [v("a", 1, "old", ts=1000), v("b", 1, "new", ts=2000), v("c", 1, "mid", ts=1500)]
    for order in (versions, versions[::-1], versions[1:] + versions[:1]):
        assert switch_policy.resolve(order, "lww") == (True, "new")


def test_lww_breaks_ties_and_unrecorded_times_by_the_larger_dot() -> None:
    assert switch_policy.resolve([v("a", 1, "x", 5), v("b", 1, "y", 5)], "lww") == (True, "y")
    assert switch_policy.resolve([v("a", 2, "x"), v("a", 1, "y")], "lww") == (True, "x")
    assert switch_policy.resolve([v("z", 9, "untimed"), v("a", 1, "t", 1)], "lww") == (True, "t")


def test_lww_with_a_tombstone_written_last_is_absent() -> None:
    versions = [v("a", 1, "x", ts=10), v("b", 1, None, ts=20, deleted=True)]
    assert switch_policy.resolve(versions, "lww") == switch_policy.ABSENT


def test_lww_never_keeps_a_superseded_version() -> None:
    """The merge comes first: a version some writer had seen is gone, whatever its time."""
    old = v("a", 1, "old", ts=9999)
    newer = make_version(("b", 1), {"a": 1}, "newer", False, (), 1)
    assert switch_policy.resolve([old, newer], "lww") == (True, "newer")


def test_refuse_still_refuses_siblings() -> None:
    with pytest.raises(switch_policy.Conflict):
        switch_policy.resolve([v("a", 1, "x", 1), v("b", 1, "y", 2)], "refuse")


def test_the_write_time_travels_on_the_wire_and_in_storage() -> None:
    timed, untimed = v("a", 1, "x", ts=1_700_000_000_000), v("b", 1, "y")
    assert decode_versions([timed.to_wire(), untimed.to_wire()]) == (timed, untimed)
    assert decode_stored(encode_versions((timed, untimed))) == (timed, untimed)
    assert "ts" not in untimed.to_wire()  # an unrecorded time is not written


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
def test_a_malformed_write_time_is_refused(bad: object) -> None:
    wire = {**v("a", 1, "x").to_wire(), "ts": bad}
    with pytest.raises(ValueError, match="ts"):
        decode_versions([wire])


def test_coordinate_stamps_the_new_version() -> None:
    new, stored = siblings.coordinate((), "n1", {}, "a", False, 10, (), 1234)
    assert new.ts == 1234 and stored == (new,)


# -- a cancelled switch's way back (switch_policy.written_back) ----------------------------

BACK = ("cancel@9", 1)


def test_written_back_supersedes_every_version_the_members_had() -> None:
    seen = [v("a", 1, "x"), v("b", 1, "y"), make_version(("c", 1), {}, None, True)]
    back = switch_policy.written_back(seen, True, "raft", BACK)
    assert back is not None and back.value == "raft" and back.dot == BACK
    assert siblings.reconcile([*seen, back]) == (back,)


def test_written_back_deletes_a_key_the_raft_state_lacks() -> None:
    back = switch_policy.written_back([v("a", 1, "x")], False, None, BACK)
    assert back is not None and back.deleted
    assert switch_policy.written_back([], False, None, BACK) is None
    tomb = make_version(("a", 2), {"a": 1}, None, True)
    assert switch_policy.written_back([tomb], False, None, BACK) is None


def test_written_back_leaves_copies_that_already_say_it() -> None:
    assert switch_policy.written_back([v("a", 1, {"n": 1})], True, {"n": 1}, BACK) is None
    assert switch_policy.written_back([v("a", 1, 1)], True, 2, BACK) is not None


def test_one_dot_one_version_whoever_writes_it_back() -> None:
    """A second attempt, after the first superseded some copies, reuses the first version
    rather than minting the same dot with a smaller context."""
    seen = [v("a", 1, "x"), v("b", 1, "y")]
    first = switch_policy.written_back(seen, True, "raft", BACK)
    assert first is not None
    later = switch_policy.written_back([first, v("b", 1, "y")], True, "raft", BACK)
    assert later is first


# -- a key's time to live across a switch (docs/ttl.md) ------------------------------------

NOW = 1_700_000_000_000


def e(actor: str, n: int, value: object, expires_at: int, ts: int = 0) -> siblings.Version:
    return make_version((actor, n), {}, value, False, (), ts, expires_at)


def test_a_switch_to_linearizable_keeps_the_expiry_of_the_value_it_keeps() -> None:
    resolve = switch_policy.resolve_expiring
    assert resolve([e("a", 1, "x", NOW + 5)], "refuse", NOW) == (True, "x", NOW + 5)
    assert resolve([e("a", 1, "x", NOW)], "refuse", NOW) == (False, None, None)  # expired
    assert resolve([v("a", 1, "x")], "refuse", NOW) == (True, "x", None)
    # an expired sibling is left out, as a read leaves it out: no conflict
    assert resolve([e("a", 1, "x", NOW), v("b", 1, "y")], "refuse", NOW) == (True, "y", None)
    late = [e("a", 1, "x", NOW + 9, ts=2), e("b", 1, "y", NOW + 5, ts=1)]
    assert resolve(late, "lww", NOW) == (True, "x", NOW + 9)


def test_a_merged_list_lives_as_long_as_its_longest_lived_part() -> None:
    resolve = switch_policy.resolve_expiring
    parts = [e("a", 1, [1], NOW + 5), e("b", 1, [2], NOW + 9)]
    assert resolve(parts, "merge-json-list", NOW) == (True, [1, 2], NOW + 9)
    forever = [e("a", 1, [1], NOW + 5), v("b", 1, [2])]
    assert resolve(forever, "merge-json-list", NOW) == (True, [1, 2], None)


def test_written_back_carries_the_raft_records_expiry() -> None:
    back = switch_policy.written_back([v("a", 1, "x")], True, "x", BACK, NOW + 5)
    assert back is not None and back.expires_at == NOW + 5  # same value, new expiry
    same = [e("a", 1, "x", NOW + 5)]
    assert switch_policy.written_back(same, True, "x", BACK, NOW + 5) is None
