"""kv/voters.py under random metadata and voter sets, against a naive oracle.

Properties: never more than 5 voters and an odd count whenever the candidates allow it; a
member the plan in flight removes is never desired; current voters that are fine stay (so
adding members never moves one); the result does not depend on input order; the oracle —
"keep the eligible current voters, best ranked first; fill with the best ranked others" —
agrees; and following `next_step` from any voter set reaches the desired one, one change at
a time, never with more than one voter above the desired size (unless it started above),
and never adding while a down voter it could remove first keeps the add from a majority.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from kv import voters
from kv.meta import Member, Metadata, Transition

NAMES = [f"n{i}" for i in range(30)]

ids_st = st.lists(st.sampled_from(NAMES), min_size=1, max_size=12, unique=True)


def metadata(ids: list[str], leaving: list[str]) -> Metadata:
    members = tuple(Member(i, f"{i}:1", f"{i}:2") for i in ids)
    md = Metadata(epoch=1, members=members)
    if not leaving:
        return md
    staying = tuple(m for m in members if m.id not in leaving)
    return replace(md, transition=Transition("p", (), staying, (), frozenset()))


@st.composite
def cases(draw: st.DrawFn) -> tuple[Metadata, list[str], set[str]]:
    ids = draw(ids_st)
    leaving = draw(st.lists(st.sampled_from(ids), max_size=len(ids) - 1, unique=True))
    current = draw(st.lists(st.sampled_from(NAMES), max_size=6, unique=True))
    unavailable = set(draw(st.lists(st.sampled_from(ids), max_size=3, unique=True)))
    return metadata(ids, leaving), current, unavailable


def oracle(md: Metadata, current: list[str], unavailable: set[str]) -> set[str]:
    ok = [m.id for m in md.members]
    if md.transition is not None:
        ok = [i for i in ok if i in {m.id for m in md.transition.members}]
    size = {0: 0, 1: 1, 2: 1, 3: 3, 4: 3}.get(len(ok), 5)
    best = sorted(ok, key=voters.rank)
    keep = [i for i in best if i in current][:size]
    others = [i for i in best if i not in current and i not in unavailable]
    chosen = keep + others[: size - len(keep)]
    if len(chosen) % 2 == 0 and len(chosen) > len(keep):
        chosen = chosen[:-1]
    return set(chosen)


@settings(max_examples=300, deadline=None)
@given(cases())
def test_desired_voters_match_the_oracle_and_the_invariants(
    case: tuple[Metadata, list[str], set[str]],
) -> None:
    md, current, unavailable = case
    want = voters.desired(md, current, unavailable)
    assert set(want) == oracle(md, current, unavailable)
    assert len(want) <= 5 and len(set(want)) == len(want)
    leaving = {m.id for m in md.members} - {m.id for m in (md.transition or md).members}
    assert not leaving & set(want)
    eligible = voters.eligible(md)
    kept = [i for i in eligible if i in current]
    assert set(kept[: voters.target_size(len(eligible))]) <= set(want)  # stable
    if len([i for i in eligible if i not in unavailable or i in current]) >= len(want) + 1:
        assert len(want) % 2 == 1 or not want
    assert voters.desired(md, list(reversed(current)), unavailable) == want


@settings(max_examples=200, deadline=None)
@given(ids_st, st.lists(st.sampled_from(NAMES), min_size=1, max_size=12, unique=True))
def test_adding_members_never_moves_a_voter_that_is_fine(ids: list[str], more: list[str]) -> None:
    before = voters.desired(metadata(ids, []), [])
    grown = metadata(list(dict.fromkeys([*ids, *more])), [])
    assert set(before) <= set(voters.desired(grown, before))


@settings(max_examples=300, deadline=None)
@given(cases())
def test_next_step_converges_one_change_at_a_time(
    case: tuple[Metadata, list[str], set[str]],
) -> None:
    md, current, unavailable = case
    want = voters.desired(md, current, unavailable)
    group = list(current) or ["seed"]
    bound = max(len(group), len(want) + 1)
    down = {n for n in group if n in unavailable and n != group[0]}  # the leader is up
    for _ in range(20):
        live = [n for n in group if n not in down]
        step = voters.next_step(group, want, leader=group[0], live=live)
        if step is None:
            break
        if step.kind == "add":
            assert len(live) >= voters.quorum(len(group) + 1) or not down & set(group) - set(want)
        group = [*group, step.node] if step.kind == "add" else [n for n in group if n != step.node]
        assert 1 <= len(group) <= bound
    assert not want or sorted(group) == sorted(want)
