"""The leader lease and stale-leader notices of one Raft group (raft_groups/syncobj_adapter/
lease.py; Raft thesis §4.2.3): which vote requests a member drops, which it marks as a
transfer's, and when it tells a stale leader its term. Pure: a clock is a float."""

from __future__ import annotations

from typing import Any

import pytest

from raft_groups.syncobj_adapter.lease import NOTICE, TRANSFER, VoteLease

LEADER, OTHER = "10.0.0.1:7101", "10.0.0.2:7101"


def vote(term: int = 9, **extra: Any) -> dict[str, Any]:
    return {"type": "request_vote", "term": term, "last_log_index": 3, "last_log_term": 2, **extra}


def append(term: int) -> dict[str, Any]:
    return {"type": "append_entries", "term": term, "commit_index": 3}


def heard(at: float = 10.0) -> VoteLease:
    lease = VoteLease(lease=0.6)
    lease.heard_leader(at)
    return lease


def test_a_follower_that_heard_its_leader_drops_another_members_vote_request() -> None:
    lease = heard(10.0)
    assert lease.ignore_vote(vote(), OTHER, LEADER, leads=False, now=10.5)
    assert lease.ignored == 1


@pytest.mark.parametrize(
    ("message", "sender", "leader", "leads", "now"),
    [
        (vote(), OTHER, LEADER, False, 10.7),  # the lease ran out: an election may be due
        (vote(), LEADER, LEADER, False, 10.1),  # the leader itself campaigns
        (vote(), OTHER, None, False, 10.1),  # no leader known
        (vote(), OTHER, LEADER, True, 10.1),  # a leader is never held by a lease
        (vote(**{TRANSFER: True}), OTHER, LEADER, False, 10.1),  # the leader asked for it
        (vote(**{NOTICE: True}), OTHER, LEADER, False, 10.1),
        (append(9), OTHER, LEADER, False, 10.1),  # not a vote request
        ("not a dict", OTHER, LEADER, False, 10.1),
    ],
)
def test_vote_requests_that_count(
    message: Any, sender: str, leader: str | None, leads: bool, now: float
) -> None:
    lease = heard(10.0)
    assert not lease.ignore_vote(message, sender, leader, leads, now)
    assert lease.ignored == 0


def test_before_hearing_any_leader_nothing_is_dropped() -> None:
    assert not VoteLease(0.6).ignore_vote(vote(), OTHER, LEADER, leads=False, now=0.0)


def test_vote_requests_after_timeout_now_are_marked_for_one_lease() -> None:
    lease = VoteLease(0.6)
    assert lease.outgoing(vote(), now=5.0) == vote()
    lease.transfer_ordered(5.0)
    assert lease.outgoing(vote(), now=5.5) == vote(**{TRANSFER: True})
    assert lease.outgoing(append(3), now=5.5) == append(3)  # only vote requests
    assert lease.outgoing(vote(), now=5.6) == vote()


def test_an_append_from_an_older_term_gets_one_notice_per_lease() -> None:
    lease = VoteLease(0.6)
    assert lease.notice(append(7), LEADER, term=7, now=1.0) is None  # same term: fine
    notice = lease.notice(append(5), LEADER, term=7, now=1.0)
    assert notice == {
        "type": "request_vote",
        "term": 7,
        "last_log_index": -1,
        "last_log_term": -1,
        NOTICE: True,
    }
    assert lease.notice(append(5), LEADER, term=7, now=1.5) is None  # told already
    assert lease.notice(append(5), OTHER, term=7, now=1.5) is not None  # another sender
    assert lease.notice(append(5), LEADER, term=7, now=1.6) is not None
    assert lease.notice(vote(5), LEADER, term=7, now=9.0) is None  # only appends
    assert lease.notices == 3
