"""Siblings with dotted version vectors: scenarios from Dynamo §4.4 and the DVV paper
(Preguiça et al., "Dotted Version Vectors: Logical Clocks for Optimistic Replication", 2010)."""

from __future__ import annotations

import pytest

from dynamo_mode.siblings import (
    SiblingLimitExceeded,
    Version,
    coordinate,
    is_tombstone_only,
    join_context,
    live,
    make_version,
    next_dot,
    obsoletes,
    reconcile,
    same,
)

LIMIT = 10


def test_two_blind_writes_through_one_coordinator_both_survive() -> None:
    # The DVV paper's motivating bug: with one vector clock per version, the second
    # blind write through node A would get [A:2] and falsely descend the first [A:1].
    first, stored = coordinate((), "A", {}, "x", False, LIMIT)
    second, stored = coordinate(stored, "A", {}, "y", False, LIMIT)
    assert (first.dot, second.dot) == (("A", 1), ("A", 2))
    assert not obsoletes(second, first) and not obsoletes(first, second)
    assert [v.value for v in stored] == ["x", "y"]


def test_write_with_joined_context_supersedes_both_siblings() -> None:
    # Dynamo §4.4: a client reads both siblings, reconciles, writes with the context.
    _, stored = coordinate((), "A", {}, "x", False, LIMIT)
    _, stored = coordinate(stored, "A", {}, "y", False, LIMIT)
    context = join_context(stored)
    assert context == {"A": 2}
    resolved, stored = coordinate(stored, "B", context, "xy", False, LIMIT)
    assert stored == (resolved,)
    assert resolved.dot == ("B", 1) and resolved.context_clock() == {"A": 2}


def test_write_with_partial_context_keeps_the_unseen_sibling() -> None:
    # Dynamo §4.4: writes never silently destroy a value the writer had not seen.
    x, stored = coordinate((), "A", {}, "x", False, LIMIT)
    y, stored = coordinate((), "B", {}, "y", False, LIMIT)
    stored = reconcile([x, y])
    z, stored = coordinate(stored, "A", join_context([x]), "z", False, LIMIT)
    assert z.dot == ("A", 2)
    assert [v.value for v in stored] == ["z", "y"]


def test_tombstone_with_context_supersedes_values() -> None:
    _, stored = coordinate((), "A", {}, "x", False, LIMIT)
    _, stored = coordinate(stored, "B", {}, "y", False, LIMIT)
    tomb, stored = coordinate(stored, "C", join_context(stored), None, True, LIMIT)
    assert stored == (tomb,)
    assert is_tombstone_only(stored) and live(stored) == ()


def test_blind_delete_leaves_concurrent_value_as_sibling() -> None:
    value, stored = coordinate((), "A", {}, "x", False, LIMIT)
    tomb, stored = coordinate(stored, "A", {}, None, True, LIMIT)
    assert stored == (value, tomb)
    assert live(stored) == (value,) and not is_tombstone_only(stored)
    assert not is_tombstone_only(())


def test_write_on_a_replica_that_lacks_the_read_versions_still_supersedes_them() -> None:
    # Contexts carry dots, not versions: the new version obsoletes what the
    # client saw even where it arrives later (Dynamo §4.4 syntactic reconciliation).
    old, _ = coordinate((), "A", {}, "old", False, LIMIT)
    new, on_b = coordinate((), "B", join_context([old]), "new", False, LIMIT)
    assert reconcile([*on_b, old]) == (new,)


def test_next_dot_exceeds_every_known_counter_of_the_node() -> None:
    # Invariant: a node never reuses a dot while its versions or the context remember it.
    local = [make_version(("A", 3), {"B": 1}, "v"), make_version(("B", 2), {"A": 5}, "w")]
    assert next_dot(local, "A", {}) == ("A", 6)
    assert next_dot(local, "A", {"A": 9}) == ("A", 10)
    assert next_dot(local, "B", {}) == ("B", 3)
    assert next_dot((), "C", {}) == ("C", 1)


def test_sibling_limit_refuses_the_write_and_drops_nothing() -> None:
    stored: tuple[Version, ...] = ()
    for value in ("a", "b"):
        _, stored = coordinate(stored, "A", {}, value, False, 2)
    with pytest.raises(SiblingLimitExceeded) as info:
        coordinate(stored, "A", {}, "c", False, 2)
    assert (info.value.count, info.value.limit) == (3, 2)
    _, resolved = coordinate(stored, "A", join_context(stored), "abc", False, 2)
    assert [v.value for v in resolved] == ["abc"]


def test_max_siblings_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_siblings"):
        coordinate((), "A", {}, "x", False, 0)


def test_reconcile_dedupes_by_dot_and_sorts() -> None:
    a = make_version(("B", 1), {}, "b")
    b = make_version(("A", 1), {}, "a")
    assert reconcile([a, b, a, b]) == (b, a)


def test_reconcile_picks_a_deterministic_copy_for_a_conflicting_dot() -> None:
    one = make_version(("A", 1), {}, "one")
    two = make_version(("A", 1), {}, "two")
    assert reconcile([one, two]) == reconcile([two, one]) == (one,)


def test_same_compares_sets_of_dots() -> None:
    a = make_version(("A", 1), {}, "a")
    b = make_version(("B", 1), {}, "b")
    assert same([a, b], [b, a, a])
    assert not same([a], [a, b])


def test_wire_round_trip_keeps_any_json_value() -> None:
    for value in (None, 0, "s", [1, {"k": None}], {"nested": [True]}):
        v = make_version(("A", 2), {"B": 3, "A": 1}, value, deleted=value is None)
        wire = v.to_wire()
        assert wire["dot"] == ["A", 2] and wire["context"] == {"A": 1, "B": 3}
        assert Version.from_wire(wire) == v
    assert v.context == (("A", 1), ("B", 3))


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param([], id="not-object"),
        pytest.param({"dot": ["A", 1], "context": {}, "value": 1}, id="missing-deleted"),
        pytest.param(
            {"dot": ["A", 1], "context": {}, "value": 1, "deleted": False, "x": 1}, id="extra-key"
        ),
        pytest.param({"dot": ["A"], "context": {}, "value": 1, "deleted": False}, id="short-dot"),
        pytest.param({"dot": "A1", "context": {}, "value": 1, "deleted": False}, id="str-dot"),
        pytest.param({"dot": [1, 1], "context": {}, "value": 1, "deleted": False}, id="int-node"),
        pytest.param({"dot": ["A", 0], "context": {}, "value": 1, "deleted": False}, id="dot-0"),
        pytest.param({"dot": ["A", True], "context": {}, "value": 1, "deleted": False}, id="bool"),
        pytest.param({"dot": ["A", 1], "context": [], "value": 1, "deleted": False}, id="ctx-list"),
        pytest.param({"dot": ["A", 1], "context": {"B": 0}, "value": 1, "deleted": False}, id="c0"),
        pytest.param({"dot": ["A", 1], "context": {}, "value": 1, "deleted": 0}, id="deleted-int"),
        pytest.param(
            {"dot": ["A", 2], "context": {"A": 2}, "value": 1, "deleted": False}, id="own"
        ),
    ],
)
def test_from_wire_rejects_bad_shapes(wire: object) -> None:
    with pytest.raises(ValueError):
        Version.from_wire(wire)


def test_context_may_not_contain_its_own_dot() -> None:
    with pytest.raises(ValueError, match="contains the version's dot"):
        make_version(("A", 1), {"A": 1}, "x")


def test_versions_with_unhashable_values_are_hashable() -> None:
    v = make_version(("A", 1), {}, {"list": [1, 2]})
    assert len({v, make_version(("A", 1), {}, {"list": [1, 2]})}) == 1
