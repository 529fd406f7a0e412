"""ReadIndex rounds (raft_groups/syncobj_adapter/read_index.py, Raft thesis §6.4), driven
by hand: a leader serves a read only after a majority answered pings sent after the read
arrived, at a read index it has applied; a follower asks its leader and waits for its own
apply; rounds and asks lost on the way are sent again; a deposed leader fails its reads."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from kv.errors import KvError, NoLeader, NotReady
from raft_groups.syncobj_adapter.read_index import ASK, INDEX, PING, PONG, ReadIndex, View

LEADER = View(
    is_leader=True,
    leader="a",
    term=3,
    commit_index=10,
    last_applied=10,
    last_index=10,
    others=("b", "c"),
)
FOLLOWER = replace(LEADER, is_leader=False)


class Harness:
    def __init__(self) -> None:
        self.now = 0.0
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.rounds = ReadIndex(lambda to, m: self.sent.append((to, m)), lambda: self.now, 0.3)
        self.outcomes: dict[str, KvError | None] = {}

    def read(self, name: str, view: View) -> None:
        self.rounds.read(lambda error: self.outcomes.__setitem__(name, error), view)

    def take(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        out = [(to, m) for to, m in self.sent if m["type"] == kind]
        self.sent = [(to, m) for to, m in self.sent if m["type"] != kind]
        return out

    def pong(self, sender: str, seq: int, view: View = LEADER, ok: bool = True) -> None:
        self.rounds.on_message(sender, {"type": PONG, "seq": seq, "ok": ok}, view)


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_a_leader_serves_after_a_majority_answered_a_ping_sent_after_the_read(
    h: Harness,
) -> None:
    h.read("r", LEADER)
    pings = h.take(PING)
    assert sorted(to for to, _ in pings) == ["b", "c"]
    assert all(m["term"] == 3 for _, m in pings) and "r" not in h.outcomes
    h.pong("b", pings[0][1]["seq"])
    assert h.outcomes == {"r": None} and h.rounds.rounds == 1  # self + b: 2 of 3


def test_a_read_arriving_during_a_round_waits_for_the_next_one(h: Harness) -> None:
    h.read("early", LEADER)
    first = h.take(PING)[0][1]["seq"]
    h.read("late", LEADER)  # the round in flight took its index before this read arrived
    assert h.take(PING) == []
    h.pong("b", first)
    assert h.outcomes == {"early": None}
    second = h.take(PING)[0][1]["seq"]
    assert second != first
    h.pong("b", first)  # a late answer to the first round confirms nothing
    assert "late" not in h.outcomes
    h.pong("c", second)
    assert h.outcomes == {"early": None, "late": None}


def test_the_read_waits_until_the_read_index_is_applied(h: Harness) -> None:
    behind = replace(LEADER, commit_index=12, last_applied=10)
    h.read("r", behind)
    h.pong("b", h.take(PING)[0][1]["seq"], behind)
    assert "r" not in h.outcomes
    h.rounds.on_tick(replace(behind, last_applied=11))
    assert "r" not in h.outcomes
    h.rounds.on_tick(replace(behind, last_applied=12))
    assert h.outcomes == {"r": None}


def test_no_round_before_the_leader_committed_an_entry_of_its_term(h: Harness) -> None:
    """Thesis §6.4 step 1: first seen leading term 3 with its log at 8 (the election no-op
    at or before 8), it confirms nothing until its commit index reaches 8 — a later,
    longer log does not move that floor within the term."""
    fresh = replace(LEADER, commit_index=7, last_index=8)
    h.read("r", fresh)
    assert h.take(PING) == [] and h.rounds.floor == 8
    h.rounds.on_tick(replace(fresh, last_index=12))
    assert h.take(PING) == [] and h.rounds.floor == 8
    h.rounds.on_tick(replace(fresh, commit_index=8, last_index=12))
    assert len(h.take(PING)) == 2


def test_a_new_term_takes_a_new_floor(h: Harness) -> None:
    h.read("r", replace(LEADER, commit_index=10, last_index=10))
    h.pong("b", h.take(PING)[0][1]["seq"])
    assert h.outcomes == {"r": None}
    later = replace(LEADER, term=5, commit_index=10, last_index=11)
    h.read("again", later)
    assert h.take(PING) == [] and h.rounds.floor == 11


def test_a_member_with_a_later_term_deposes_the_round(h: Harness) -> None:
    h.read("r", LEADER)
    h.pong("b", h.take(PING)[0][1]["seq"], ok=False)
    assert isinstance(h.outcomes["r"], NoLeader)


def test_a_leader_that_stepped_down_fails_its_reads(h: Harness) -> None:
    h.read("r", LEADER)
    h.rounds.on_tick(replace(LEADER, term=4))
    assert isinstance(h.outcomes["r"], NoLeader)


def test_a_round_without_a_majority_is_pinged_again(h: Harness) -> None:
    h.read("r", LEADER)
    first = h.take(PING)[0][1]["seq"]
    h.now = 0.31
    h.rounds.on_tick(LEADER)
    again = h.take(PING)
    assert len(again) == 2 and again[0][1]["seq"] != first
    h.pong("c", again[0][1]["seq"])
    assert h.outcomes == {"r": None}


def test_a_group_of_one_confirms_alone(h: Harness) -> None:
    h.read("r", replace(LEADER, others=()))
    assert h.outcomes == {"r": None} and h.sent == []


def test_members_answer_pings_by_their_own_term(h: Harness) -> None:
    h.rounds.on_message("a", {"type": PING, "seq": 5, "term": 3}, FOLLOWER)
    h.rounds.on_message("a", {"type": PING, "seq": 6, "term": 2}, FOLLOWER)
    assert [m for _, m in h.take(PONG)] == [
        {"type": PONG, "seq": 5, "ok": True},
        {"type": PONG, "seq": 6, "ok": False},
    ]


def test_a_follower_asks_its_leader_and_waits_for_its_own_apply(h: Harness) -> None:
    behind = replace(FOLLOWER, last_applied=9)
    h.read("r", behind)
    [(to, ask)] = h.take(ASK)
    assert to == "a"
    h.rounds.on_message("a", {"type": INDEX, "seq": ask["seq"], "index": 10}, behind)
    assert "r" not in h.outcomes
    h.rounds.on_tick(FOLLOWER)
    assert h.outcomes == {"r": None}


def test_a_leader_answers_asks_after_its_round() -> None:
    leader, follower = Harness(), Harness()
    follower.read("r", FOLLOWER)
    [(_, ask)] = follower.take(ASK)
    leader.rounds.on_message("b", ask, LEADER)
    leader.pong("c", leader.take(PING)[0][1]["seq"])
    [(to, answer)] = leader.take(INDEX)
    assert to == "b" and answer == {"type": INDEX, "seq": ask["seq"], "index": 10}
    follower.rounds.on_message("a", answer, FOLLOWER)
    assert follower.outcomes == {"r": None}


def test_a_member_that_does_not_lead_refuses_an_ask(h: Harness) -> None:
    h.rounds.on_message("b", {"type": ASK, "seq": 4}, FOLLOWER)
    assert [m for _, m in h.take(INDEX)] == [{"type": INDEX, "seq": 4, "index": -1}]
    h.read("r", FOLLOWER)
    seq = h.take(ASK)[0][1]["seq"]
    h.rounds.on_message("a", {"type": INDEX, "seq": seq, "index": -1}, FOLLOWER)
    assert isinstance(h.outcomes["r"], NoLeader)


def test_an_unanswered_ask_is_asked_again_of_the_leader_known_then(h: Harness) -> None:
    h.read("r", FOLLOWER)
    seq = h.take(ASK)[0][1]["seq"]
    h.now = 0.31
    h.rounds.on_tick(replace(FOLLOWER, leader="c"))
    assert h.take(ASK) == [("c", {"type": ASK, "seq": seq})]


def test_an_ask_becomes_a_round_when_the_asker_now_leads(h: Harness) -> None:
    h.read("r", FOLLOWER)
    h.take(ASK)
    h.now = 0.31
    h.rounds.on_tick(LEADER)
    h.pong("b", h.take(PING)[0][1]["seq"])
    assert h.outcomes == {"r": None}


def test_without_a_known_leader_a_read_fails_at_once(h: Harness) -> None:
    h.read("r", replace(FOLLOWER, leader=None))
    assert isinstance(h.outcomes["r"], NoLeader)


def test_closing_fails_every_waiting_read(h: Harness) -> None:
    h.read("round", LEADER)
    h.read("next", LEADER)
    h.read("ask", FOLLOWER)
    h.rounds.close()
    assert all(isinstance(e, NotReady) for e in h.outcomes.values()) and len(h.outcomes) == 3


def test_idle_exactly_while_no_reader_waits(h: Harness) -> None:
    """A tick skips `on_tick` (and the view it takes) while `idle`: it must be False
    whenever a round, a queued read, an ask or a wait for the apply holds a reader."""
    assert h.rounds.idle
    h.read("early", LEADER)  # a round in flight
    h.read("late", LEADER)  # queued for the next round
    first = h.take(PING)[0][1]["seq"]
    h.pong("b", first)
    assert h.outcomes == {"early": None} and not h.rounds.idle  # "late" is in a round now
    h.pong("b", h.take(PING)[0][1]["seq"])
    assert h.outcomes == {"early": None, "late": None} and h.rounds.idle
    behind = replace(FOLLOWER, last_applied=9)
    h.read("asked", behind)
    [(_, ask)] = h.take(ASK)
    assert not h.rounds.idle  # an ask
    h.rounds.on_message("a", {"type": INDEX, "seq": ask["seq"], "index": 10}, behind)
    assert "asked" not in h.outcomes and not h.rounds.idle  # waiting for index 10's apply
    h.rounds.on_tick(FOLLOWER)
    assert h.outcomes["asked"] is None and h.rounds.idle


def test_a_read_queued_before_any_round_is_not_idle(h: Harness) -> None:
    fresh = replace(LEADER, term=4, last_index=12)  # leads term 4, nothing of it committed
    h.read("queued", fresh)
    assert h.take(PING) == [] and not h.rounds.idle  # no round may start yet
    h.rounds.on_tick(replace(fresh, commit_index=12, last_applied=12))
    h.pong("b", h.take(PING)[0][1]["seq"], replace(fresh, commit_index=12, last_applied=12))
    assert h.outcomes == {"queued": None} and h.rounds.idle
