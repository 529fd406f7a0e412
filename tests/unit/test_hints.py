"""Sloppy quorum and hinted handoff, the pure decisions (Dynamo §4.6; Riak riak_kv_put_fsm
for `pw`/`pr`): fallback choice, quorum accounting with hints, hint keys, drop rules."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo_mode.hints import (
    HINT_PREFIX,
    Send,
    SloppyWrite,
    hint_key,
    may_drop,
    owner_prefix,
    owners_to_visit,
    parse_hint_key,
    read_refusal,
    write_refusal,
)
from dynamo_mode.siblings import Version, coordinate, join_context, obsoletes, reconcile, same

PROPS = settings(max_examples=300, deadline=None, print_blob=True)
P = ("a", "b", "c")  # primaries
F = ("d", "e", "f")  # fallbacks, in ring order


# -- hint keys ---------------------------------------------------------------------------


def test_hint_key_layout() -> None:
    assert hint_key("n2", b"e\x00\x05key") == b"hn2\x00e\x00\x05key"
    assert parse_hint_key(b"hn2\x00e\x00\x05key") == ("n2", b"e\x00\x05key")


def test_owner_ranges_do_not_nest() -> None:
    # Without the NUL terminator, n1's range would contain every hint for n10.
    assert not hint_key("n10", b"e").startswith(owner_prefix("n1"))
    assert hint_key("n1", b"e").startswith(owner_prefix("n1"))


@pytest.mark.parametrize("owner", ["", "a\0b"])
def test_owner_must_be_a_non_empty_id_without_nul(owner: str) -> None:
    with pytest.raises(ValueError, match="hint owner"):
        hint_key(owner, b"e")


@pytest.mark.parametrize("raw", [b"", b"h", b"hn1", b"h\x00e", b"en1\x00e", b"x"])
def test_parse_rejects_what_is_not_a_hint_key(raw: bytes) -> None:
    with pytest.raises(ValueError, match="not a hint key"):
        parse_hint_key(raw)


@PROPS
@given(
    st.text(min_size=1).filter(lambda s: "\0" not in s),
    st.binary(max_size=40),
)
def test_hint_keys_round_trip(owner: str, storage_key: bytes) -> None:
    raw = hint_key(owner, storage_key)
    assert raw.startswith(HINT_PREFIX + owner.encode())
    assert parse_hint_key(raw) == (owner, storage_key)


# -- refusals before a request (503, nothing written) --------------------------------------


@pytest.mark.parametrize(
    ("down", "fallbacks", "w", "pw", "reason"),
    [
        ((), F, 3, 3, None),
        ({"c"}, F, 3, 0, None),  # sloppy: a hint on d fills c's slot
        ({"c"}, F, 2, 2, None),
        ({"c"}, F, 3, 3, "pw=3 but only 2 primaries are alive"),
        ({"c"}, (), 3, 0, "w=3 but only 2 primaries and fallbacks are alive"),
        ({"b", "c"}, ("d",), 3, 0, "w=3 but only 2"),  # one fallback for two down primaries
        ({"b", "c", "d"}, F, 3, 0, None),  # d is down too: e and f take the hints
        ({"b", "c", "d"}, ("d", "e"), 3, 0, "w=3 but only 2"),
        ({"a", "b", "c"}, F, 1, 0, "no primary"),  # the dot is minted by a primary
    ],
)
def test_write_refusal(
    down: set[str], fallbacks: tuple[str, ...], w: int, pw: int, reason: str | None
) -> None:
    got = write_refusal(P, fallbacks, down, w, pw)
    assert got == reason if reason is None else reason in (got or "")


@pytest.mark.parametrize(
    ("down", "pr", "reason"),
    [((), 3, None), ({"c"}, 2, None), ({"c"}, 3, "pr=3 but only 2 primaries are alive")],
)
def test_read_refusal(down: set[str], pr: int, reason: str | None) -> None:
    got = read_refusal(P, down, pr)
    assert got == reason if reason is None else reason in (got or "")


# -- sloppy-quorum accounting (scenarios) ------------------------------------------------------


def test_all_primaries_alive_no_hints() -> None:
    plan = SloppyWrite(P, F, w=2)
    assert plan.start("a") == [Send("b", "b"), Send("c", "c")]
    assert plan.status() == "pending"
    plan.on_ack(Send("b", "b"))
    assert plan.status() == "ok"
    assert plan.filled == {"a": "a", "b": "b"}


def test_a_down_primary_gets_a_hint_on_the_first_fallback_and_it_counts_toward_w() -> None:
    plan = SloppyWrite(P, F, w=3, down={"c"})
    assert plan.start("a") == [Send("b", "b"), Send("d", "c")]
    assert Send("d", "c").is_hint
    plan.on_ack(Send("b", "b"))
    plan.on_ack(Send("d", "c"))
    assert plan.status() == "ok"
    assert plan.filled == {"a": "a", "b": "b", "c": "d"}


def test_a_hint_never_counts_toward_pw() -> None:
    plan = SloppyWrite(P, F, w=2, pw=3, down={"c"})
    plan.start("a")
    plan.on_ack(Send("b", "b"))
    assert plan.status() == "failed"  # c's slot can only be filled by a hint now


def test_unreachable_primary_is_rerouted_and_unreachable_fallback_skipped() -> None:
    plan = SloppyWrite(P, F, w=3)
    plan.start("a")
    assert plan.on_error(Send("c", "c"), "refused", reroute=True) == [Send("d", "c")]
    assert plan.on_error(Send("d", "c"), "refused", reroute=True) == [Send("e", "c")]
    plan.on_ack(Send("b", "b"))
    assert plan.status() == "pending"
    plan.on_ack(Send("e", "c"))
    assert plan.status() == "ok"


def test_a_timeout_is_not_rerouted_the_copy_may_be_there() -> None:
    plan = SloppyWrite(P, F, w=3)
    plan.start("a")
    assert plan.on_error(Send("c", "c"), "timeout", reroute=False) == []
    assert plan.status() == "failed"
    assert "timeout" in plan.errors["c"]


def test_two_down_primaries_get_distinct_fallbacks_skipping_down_ones() -> None:
    plan = SloppyWrite(P, F, w=1, down={"b", "c", "d"})
    assert plan.start("a") == [Send("e", "b"), Send("f", "c")]


def test_no_fallback_left_fails_the_slot() -> None:
    plan = SloppyWrite(P, ("d",), w=3, down={"b", "c"})
    assert plan.start("a") == [Send("d", "b")]
    assert plan.status() == "failed"
    assert "no fallback left" in plan.errors["c"]


def test_answers_to_superseded_sends_are_ignored() -> None:
    plan = SloppyWrite(P, F, w=3)
    plan.start("a")
    plan.on_error(Send("c", "c"), "refused", reroute=True)
    plan.on_ack(Send("c", "c"))  # late: c's slot moved to d
    assert plan.on_error(Send("c", "c"), "again", reroute=True) == []
    assert plan.inflight == (Send("b", "b"), Send("d", "c"))
    assert "c" not in plan.filled


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((P, ("a",), 1), "distinct"),
        ((P, F, 0), "w=0"),
        ((P, F, 4), "w=4"),
        ((P, F, 1, 4), "pw=4"),
    ],
)
def test_invalid_plans(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SloppyWrite(*args)  # type: ignore[arg-type]


def test_the_minting_node_must_be_a_primary() -> None:
    with pytest.raises(ValueError, match="not a primary"):
        SloppyWrite(P, F, 1).start("d")


# -- sloppy-quorum accounting (property against a naive recount) ---------------------------


def _naive_status(filled: dict[str, str], outstanding: Sequence[Send], w: int, pw: int) -> str:
    by_primary = sum(1 for o, n in filled.items() if o == n)
    if len(filled) >= w and by_primary >= pw:
        return "ok"
    best_fill = len(filled) + len(outstanding)
    best_primary = by_primary + sum(1 for s in outstanding if s.node == s.owner)
    return "failed" if best_fill < w or best_primary < pw else "pending"


@PROPS
@given(st.data())
def test_sloppy_write_agrees_with_a_naive_recount(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 3), "n")
    primaries, fallbacks = P[:n], F[: data.draw(st.integers(0, 3), "fallbacks")]
    down = data.draw(st.sets(st.sampled_from(primaries + fallbacks)), "down")
    w, pw = data.draw(st.integers(1, n), "w"), data.draw(st.integers(0, n), "pw")
    minted_by = data.draw(st.sampled_from(primaries), "minted_by")
    plan = SloppyWrite(primaries, fallbacks, w, pw, down)
    outstanding = plan.start(minted_by)
    sent, answered = list(outstanding), []
    filled, unreachable = {minted_by: minted_by}, set()
    decided = None
    while outstanding:
        send = outstanding.pop(data.draw(st.integers(0, len(outstanding) - 1)))
        outcome = data.draw(st.sampled_from(["ack", "unreachable", "timeout"]))
        if outcome == "ack":
            plan.on_ack(send)
            filled[send.owner] = send.node
        else:
            unreachable |= {send.node} if outcome == "unreachable" else set()
            new = plan.on_error(send, outcome, reroute=outcome == "unreachable")
            outstanding += new
            sent += new
        answered.append(send)
        if data.draw(st.booleans()):  # a duplicate answer changes nothing
            assert plan.on_error(data.draw(st.sampled_from(answered)), "dup", True) == []
        status = plan.status()
        assert status == _naive_status(filled, outstanding, w, pw)
        assert decided in (None, status), "a decided write never changes its mind"
        decided = status if status != "pending" else None
        assert sorted(plan.inflight, key=str) == sorted(outstanding, key=str)
    assert plan.status() != "pending"
    _check_placement(sent, primaries, fallbacks, down, minted_by, unreachable)


def _check_placement(
    sent: list[Send],
    primaries: Sequence[str],
    fallbacks: Sequence[str],
    down: set[str],
    minted_by: str,
    unreachable: set[str],
) -> None:
    hinted = [s.node for s in sent if s.is_hint]
    assert len(hinted) == len(set(hinted)), "a fallback takes at most one hint per write"
    for s in sent:
        assert s.owner in primaries and s.owner != minted_by
        assert s.node not in down
        if s.is_hint:
            assert s.node in fallbacks, "a hint never goes to a primary"
            assert s.owner in down or s.owner in unreachable, "hints only for missing primaries"


@PROPS
@given(st.data())
def test_refusal_is_exactly_when_all_acks_would_not_be_enough(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 3))
    primaries, fallbacks = P[:n], F[: data.draw(st.integers(0, 3))]
    down = data.draw(st.sets(st.sampled_from(primaries + fallbacks)))
    alive = [p for p in primaries if p not in down]
    w, pw = data.draw(st.integers(1, n)), data.draw(st.integers(0, n))
    refused = write_refusal(primaries, fallbacks, down, w, pw)
    if not alive:
        assert refused is not None
        return
    plan = SloppyWrite(primaries, fallbacks, w, pw, down)
    for send in plan.start(data.draw(st.sampled_from(alive))):
        plan.on_ack(send)
    assert (plan.status() == "ok") == (refused is None)


# -- handoff decisions ---------------------------------------------------------------------------


def test_owners_to_visit_skips_down_owners_and_empty_counts() -> None:
    assert owners_to_visit({"c": 2, "a": 1, "b": 3, "z": 0}, {"b"}) == ["a", "c"]


def _v(node: str, seen: Sequence[Version] = ()) -> Version:
    return coordinate([], node, join_context(seen), None, False, 99)[0]


X1 = _v("x")
X2 = _v("x", [X1])  # supersedes X1
Y1 = _v("y")  # concurrent with both


@pytest.mark.parametrize(
    ("current", "delivered", "drop"),
    [
        ((X1,), (X1,), True),
        ((X1,), (X2,), True),  # the owner's copy supersedes the hint
        ((X2,), (X1,), False),  # the hint grew while the delivery was in flight
        ((X1, Y1), (X1,), False),  # a concurrent write was hinted meanwhile
        ((), (X1,), True),
    ],
)
def test_may_drop(current: tuple[Version, ...], delivered: tuple[Version, ...], drop: bool) -> None:
    assert may_drop(current, delivered) is drop


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[Version, ...]]:
    """Whole reconciled sets produced by writes at nodes x, y, z that sync now and then
    (the only thing replicas and hints ever hold; dynamo_mode/siblings.py invariants)."""
    local: dict[str, tuple[Version, ...]] = {"x": (), "y": (), "z": ()}
    sets: list[tuple[Version, ...]] = []
    for i in range(draw(st.integers(1, 10))):
        node = draw(st.sampled_from(sorted(local)))
        if draw(st.booleans()) and sets:
            local[node] = reconcile((*local[node], *draw(st.sampled_from(sets))))
        seen = local[node] if draw(st.booleans()) else ()
        _, local[node] = coordinate(local[node], node, join_context(seen), i, False, 99)
        sets.append(local[node])
    return sets


@PROPS
@given(st.data())
def test_dropping_a_hint_never_hides_a_version_from_its_owner(data: st.DataObject) -> None:
    sets = data.draw(histories())
    pick = st.lists(st.sampled_from(sets), max_size=3)
    current = reconcile(v for s in data.draw(pick) for v in s)
    delivered = reconcile(v for s in data.draw(pick) for v in s)
    owner = reconcile(v for s in data.draw(pick) for v in s)
    naive = all(
        v.dot in {d.dot for d in delivered} or any(obsoletes(d, v) for d in delivered)
        for v in current
    )
    assert may_drop(current, delivered) is naive
    if naive:
        after = reconcile((*owner, *delivered))
        assert same(reconcile((*after, *current)), after)
