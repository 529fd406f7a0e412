"""Siblings with dotted version vectors: scenarios from Dynamo §4.4 and the DVV paper
(Preguiça et al., "Dotted Version Vectors: Logical Clocks for Optimistic Replication", 2010)."""

from __future__ import annotations

import base64
import json

import pytest

from dynamo_mode import siblings, vclock
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
from kv.keyspace import MAX_REPLICATION
from kv.routing import MAX_VALUE_BYTES
from kv.wire import MAX_PAYLOAD

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


# --- causal contexts with extra dots (the lost-write bug ops/verify found) --------------


def test_context_returned_by_a_put_does_not_claim_a_concurrent_sibling() -> None:
    """Two blind writes through n1 make (n1,1) "a" and (n1,2) "b". The writer of "b" has
    seen only (n1,2): as a plain clock {n1: 2} it would also claim (n1,1) and its next write
    would silently supersede "a" (Dynamo §4.4: a context-carrying write supersedes only
    what it saw). With clock + extra dots it does not."""
    a, stored = siblings.coordinate((), "n1", {}, "a", False, 10)
    b, stored = siblings.coordinate(stored, "n1", {}, "b", False, 10)
    assert b.dot == ("n1", 2)
    clock, dots = vclock.compact({}, [b.dot])
    assert (clock, dots) == ({}, (("n1", 2),))
    c, stored = siblings.coordinate(stored, "n2", clock, "c", False, 10, dots)
    assert sorted(v.value for v in stored) == ["a", "c"]
    assert c.covers(("n1", 2)) and not c.covers(("n1", 1))


def test_join_full_is_exact_and_compact() -> None:
    a = siblings.make_version(("n1", 1), {}, "a")
    c = siblings.make_version(("n1", 3), {"n2": 1}, "c", context_dots=[("n1", 2)])
    clock, dots = siblings.join_full([a, c])
    assert (clock, dots) == ({"n1": 3, "n2": 1}, ())
    clock, dots = siblings.join_full([siblings.make_version(("n1", 2), {}, "b")])
    assert (clock, dots) == ({}, (("n1", 2),))


def test_full_context_round_trips_and_plain_clocks_stay_plain() -> None:
    assert vclock.decode_context_full(vclock.encode_context_full({"n1": 1})) == ({"n1": 1}, ())
    assert vclock.encode_context_full({"n1": 1}) == vclock.encode_context({"n1": 1})
    token = vclock.encode_context_full({"n1": 1}, [("n1", 3), ("n2", 2)])
    assert vclock.decode_context_full(token) == ({"n1": 1}, (("n1", 3), ("n2", 2)))
    for bad in ([{}, "x"], [{}, [["n1", 0]]], [{}, [["n1"]]], [{}]):
        raw = base64.urlsafe_b64encode(json.dumps(bad).encode()).decode().rstrip("=")
        with pytest.raises(ValueError):
            vclock.decode_context_full(raw)


def test_a_write_that_resolves_siblings_is_not_refused_by_the_cap() -> None:
    stored: tuple[siblings.Version, ...] = ()
    for value in "abc":
        _, stored = siblings.coordinate(stored, "n1", {}, value, False, 3)
    clock, dots = siblings.join_full(stored[:2])  # saw two of three
    _, after = siblings.coordinate(stored, "n1", clock, "ab", False, 1, dots)
    assert len(after) == 2  # still over the cap of 1, but fewer than before: allowed


def test_the_bytes_limit_refuses_a_set_over_it_even_when_the_write_shrinks_nothing() -> None:
    siblings.admit_bytes(100, limit=100)
    with pytest.raises(siblings.SiblingBytesExceeded) as info:
        siblings.admit_bytes(101, limit=100)
    assert (info.value.size, info.value.limit) == (101, 100)
    assert siblings.MAX_SIBLING_BYTES >= 4 * MAX_VALUE_BYTES  # four values at the limit fit


def test_the_sets_of_twice_the_largest_preference_list_fit_in_one_internode_frame() -> None:
    """kv/wire.py MAX_PAYLOAD: a merged set is at most MAX_SIBLING_BYTES per actor."""
    envelope = 2 * MAX_VALUE_BYTES  # a ref, a name, a mint's new version, with room
    assert 2 * MAX_REPLICATION * siblings.MAX_SIBLING_BYTES + envelope <= MAX_PAYLOAD
