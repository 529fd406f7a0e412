"""Disruptive vote requests from members (Raft thesis §4.2.3), decided per group; pure.

The mux drops every message from a node outside a group's configuration (mux.py), which
keeps a removed member that never learned of its removal from deposing the leader. It is
not enough: a member that has not yet *applied* that removal — a new member still catching
up, a follower a few entries behind — still names the removed node, and pysyncobj takes
any higher term a vote request carries. Seen in the cluster tier
(tests/cluster/test_membership_faults.py): an outgoing owner SIGKILLed mid-move was
removed from its Raft group while down, restarted from its journal and campaigned, term
after term; the incoming member, two entries short of the removal, took each term (and
granted each vote: the zombie's log was as long as its own), so it ignored the real
leader's appends (lower term, dropped without an answer) and never caught up — the move,
and the plan, waited forever.

Two rules close it, both on the receiving side of one group (`VoteLease`):

1. **Leader lease.** A follower that heard from its leader less than the minimum election
   timeout ago ignores vote requests from anyone else: a leader it hears from exists, so no
   election is due. A vote request sent because the leader asked for it (TimeoutNow, a
   leadership transfer) is marked `transfer` by the sender's transport and always counts.
2. **Stale leader notice.** pysyncobj drops an append from a lower term without answering,
   so a leader never learns that a follower's term moved past it (Raft's answer carries the
   term). A member that gets such an append answers with a vote request that carries its
   term and a log that can win no vote (`notice`): the leader takes the term and steps
   down, the configuration it knows elects a leader at a higher term, and the member
   follows it (rule 1 then keeps it there). At most once per lease per sender.

The lease is the group's minimum election timeout; `now` is any monotonic clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

TRANSFER = "transfer"  # a vote request a leadership transfer asked for
NOTICE = "notice"  # a term notice to a stale leader: a vote request that cannot win


def kind(message: Any) -> str | None:
    return str(message.get("type")) if isinstance(message, dict) else None


@dataclass
class VoteLease:
    lease: float  # the group's minimum election timeout, seconds
    heard_at: float = -math.inf  # when the leader's last append reached this member
    transfer_until: float = -math.inf  # vote requests sent before this are a transfer's
    told: dict[str, float] = field(default_factory=dict)  # sender -> last notice sent
    ignored: int = 0  # vote requests dropped under the lease
    notices: int = 0

    def heard_leader(self, now: float) -> None:
        """An append from the leader this member follows was taken."""
        self.heard_at = now

    def transfer_ordered(self, now: float) -> None:
        """This member's leader sent TimeoutNow: its coming vote requests are a transfer's."""
        self.transfer_until = now + self.lease

    def ignore_vote(
        self, message: Any, sender: str, leader: str | None, leads: bool, now: float
    ) -> bool:
        """Whether to drop a vote request from `sender` (rule 1): this member follows a
        leader other than the sender, heard from it within the lease, and the request is
        neither a transfer's nor a notice (a notice goes to a leader, which never drops)."""
        if kind(message) != "request_vote" or leads or leader is None or leader == sender:
            return False
        if message.get(TRANSFER) or message.get(NOTICE):
            return False
        if now - self.heard_at >= self.lease:
            return False
        self.ignored += 1
        return True

    def outgoing(self, message: Any, now: float) -> Any:
        """A message this member sends: its vote requests during a transfer are marked."""
        if kind(message) == "request_vote" and now < self.transfer_until:
            return {**message, TRANSFER: True}
        return message

    def notice(self, message: Any, sender: str, term: int, now: float) -> dict[str, Any] | None:
        """The term notice to send back for an append from an older term (rule 2), or
        None (not such an append, or one was sent to that sender within the lease)."""
        if kind(message) != "append_entries" or int(message.get("term", term)) >= term:
            return None
        if now - self.told.get(sender, -math.inf) < self.lease:
            return None
        self.told[sender] = now
        self.notices += 1
        return {
            "type": "request_vote",
            "term": term,
            "last_log_index": -1,  # below any log: the receiver takes the term, votes no
            "last_log_term": -1,
            NOTICE: True,
        }
