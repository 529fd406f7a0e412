"""Which members vote in the meta Raft group — the policy, pure (DESIGN.md §2: "the meta group
keeps ≤ 5 voters; other members read metadata without voting").

`desired(md, current, unavailable)` is the voter set the meta group should have:

- **eligible**: members of the metadata that the plan in flight keeps (a member it removes
  is never desired, so its replacement joins while it still votes);
- **size**: at most `MAX_META_VOTERS` (5), odd when the eligible members allow it — 1, 3
  or 5: an even count tolerates no more failures than the odd one below it;
- **stable**: the current voters that are eligible stay (as many as the size allows), so a
  change moves as few voters as possible and adding members never moves a voter;
- **spread**: the rest are picked in rendezvous order (`rank`: a fixed hash of the node id,
  kv/hashing.py), which spreads voters over the members instead of favouring founders or
  the oldest nodes; the same ranking breaks ties when too many current voters are eligible.
  Candidates the caller knows to be unavailable (down, or not answering) are skipped.

`next_step(current, desired, leader, live)` is the one change to make now (one at a time,
Raft single-server changes): add a missing voter while that grows the group to at most one
more than its desired size — so a voter that goes is replaced *first* and the group never
shrinks below a majority of what it was — else remove an extra one: a voter that is not
live first, the leader last (its leadership must move first). An add needs the current
live voters to be a majority of the bigger group (3 → 4 needs all three); when an extra
voter is down and that is not so, it is removed first (3 with one down → 2 → 3), or the
group could never be repaired. Deterministic for the same inputs on every node.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from kv import hashing
from kv.config import MAX_META_VOTERS
from kv.meta import Metadata

RANK_DOMAIN = "meta-voters"  # the hash domain of `rank`: fixed, or every ranking moves


def rank(node_id: str) -> tuple[int, str]:
    """Rendezvous rank: lower is preferred. The node id breaks (astronomically rare) ties."""
    return hashing.token(RANK_DOMAIN, node_id), node_id


def eligible(md: Metadata) -> list[str]:
    """Members that may vote, best ranked first: listed now, and not removed by the plan in
    flight (a reverting plan's members are the ones it goes back to)."""
    staying = {m.id for m in md.transition.members} if md.transition is not None else None
    ids = [m.id for m in md.members if staying is None or m.id in staying]
    return sorted(ids, key=rank)


def target_size(eligible_count: int) -> int:
    """The number of voters for this many eligible members: ≤ 5, odd (0 for none)."""
    size = min(eligible_count, MAX_META_VOTERS)
    return size if size % 2 == 1 or size == 0 else size - 1


def desired(
    md: Metadata, current: Iterable[str], unavailable: Collection[str] = ()
) -> tuple[str, ...]:
    """The voters the meta group should have, best ranked first (see the module doc)."""
    ok = eligible(md)
    size = target_size(len(ok))
    now = set(current)
    keep = [n for n in ok if n in now][:size]
    fresh = [n for n in ok if n not in now and n not in unavailable]
    chosen = keep + fresh[: size - len(keep)]
    if len(chosen) % 2 == 0 and len(chosen) > len(keep):
        chosen.pop()  # short of candidates: an even count adds a voter and no tolerance
    return tuple(sorted(chosen, key=rank))


@dataclass(frozen=True)
class Step:
    kind: Literal["add", "remove"]
    node: str


def quorum(size: int) -> int:
    return size // 2 + 1


def next_step(
    current: Sequence[str],
    want: Sequence[str],
    leader: str | None,
    live: Collection[str] | None = None,
) -> Step | None:
    """The one change to make now, or None when `current` is what is wanted. `current` may
    hold voters that are no longer members (they are extra); `leader` is removed last;
    `live`: the voters the leader counts on (None: all of them)."""
    if not want:
        return None  # never empty the group: nothing eligible is a transient state
    up = set(current) if live is None else set(live) & set(current)
    missing = [n for n in want if n not in current]
    order = sorted((n for n in current if n not in want), key=lambda n: (n == leader, n in up, n))
    if missing and len(current) <= len(want):
        if len(up) >= quorum(len(current) + 1) or not order or order[0] in up:
            return Step("add", missing[0])
    return Step("remove", order[0]) if order else None
