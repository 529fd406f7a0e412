"""ReadIndex reads (Raft thesis §6.4): a linearizable read without a log entry.

A read barrier through the log (kv/barriers.py over a `BARRIER` command) costs an entry, a
journal write and an fdatasync on a majority, for every round of reads. ReadIndex costs one
message round with the group's members and nothing on disk:

1. The leader takes its commit index as the read index — once it has committed an entry
   of its own term (its no-op after election), so that index covers every entry committed
   by earlier leaders (thesis §6.4 step 1; `ReadIndex.floor`: the log's end when this
   member is first seen leading in a term, at or past the no-op pysyncobj appends on
   election, so a commit index that reached it covers that no-op).
2. It confirms that it still leads: a `ri_ping` carrying its term goes to every other
   member; a member answers `ri_pong` with `ok` when its own term is not higher. Once a
   majority of the configuration (itself included) answered ok to pings sent AFTER the
   read arrived, no leader of a later term was elected before the read arrived: any such
   election needs a majority that already had the later term, and it intersects ours in a
   member that, after the read arrived, still had a term ≤ ours (step 2).
3. The read waits until this member has applied the read index, then reads local state
   (steps 3–4).

A follower asks the leader (`ri_ask`); the leader adds it to its next round and answers
`ri_index` with the confirmed read index (−1: not the leader); the follower waits until it
has applied that index itself (§6.4.1).

Invariant (the same as kv/barriers.py): a read joins only a round started after it
arrived. A read arriving while a round is in flight waits for the next one, started when
the current one ends; every read arriving meanwhile shares it.

Rounds cannot wedge: a round whose pings found no majority within `retry_s` is sent again
with a new sequence number (a ping or pong lost with a connection); a follower's ask
unanswered within `retry_s` is asked again of the leader it knows then. A leader that
loses its leadership or its term fails its rounds' reads with `NoLeader` (retryable);
the caller's timeout bounds every wait. Messages go through the group's transport in the
mux, so they leave with the driver cycle's frame, like every Raft message.

Driver thread only; pure apart from the injected `send` and `clock`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kv.errors import KvError, NoLeader, NotReady

PING, PONG, ASK, INDEX = "ri_ping", "ri_pong", "ri_ask", "ri_index"
KINDS = frozenset({PING, PONG, ASK, INDEX})

Done = Callable[[KvError | None], None]  # called once: None = the read may proceed
Send = Callable[[str, dict[str, Any]], None]  # (member address, message)


@dataclass(frozen=True)
class View:
    """What a round needs to know of the group, read on the driver thread."""

    is_leader: bool
    leader: str | None  # the leader this member knows (itself when it leads)
    term: int
    commit_index: int
    last_applied: int
    last_index: int  # the last entry of this member's log
    others: tuple[str, ...]  # the other members of the configuration


@dataclass
class _Remote:
    address: str
    seq: int


@dataclass
class _Round:
    seq: int
    term: int
    index: int
    needed: int  # ok answers needed, this leader's own included
    started: float
    readers: list[Done | _Remote]
    acks: set[str] = field(default_factory=set)


@dataclass
class _Ask:
    done: Done
    leader: str
    sent: float


class ReadIndex:
    def __init__(self, send: Send, clock: Callable[[], float], retry_s: float) -> None:
        self._send = send
        self._clock = clock
        self._retry_s = retry_s
        self._seq = 0
        self._round: _Round | None = None
        self._next: list[Done | _Remote] = []  # readers for the round after the current
        self._asks: dict[int, _Ask] = {}  # a follower's questions to its leader, by seq
        self._applying: list[tuple[int, Done]] = []  # (read index, reader) until applied
        self._lead_term = -1  # the term `floor` was taken in
        self.floor = 0  # step 1: a log index at or past this leader's first entry of its term
        self.rounds = 0  # rounds confirmed (ops and tests)

    def _can_confirm(self, view: View) -> bool:
        """Step 1 (module docstring): this member leads and has committed past `floor`."""
        if not view.is_leader:
            return False
        if view.term != self._lead_term:
            self._lead_term, self.floor = view.term, view.last_index
        return view.commit_index >= self.floor

    # ------------------------------------------------------------------ entry points
    def read(self, done: Done, view: View) -> None:
        """A read arrived: `done` is called once this member may serve it, or failed."""
        if view.is_leader:
            self._next.append(done)
            self._start(view)
        elif view.leader is not None:
            seq = self._new_seq()
            self._asks[seq] = _Ask(done, view.leader, self._clock())
            self._send(view.leader, {"type": ASK, "seq": seq})
        else:
            done(NoLeader("the group has no leader this member knows of", retry_after=0.5))

    def on_message(self, sender: str, message: dict[str, Any], view: View) -> None:
        kind = message.get("type")
        if kind == PING:
            ok = view.term <= int(message["term"])
            self._send(sender, {"type": PONG, "seq": message["seq"], "ok": ok})
        elif kind == PONG:
            self._on_pong(sender, int(message["seq"]), bool(message["ok"]), view)
        elif kind == ASK:
            if view.is_leader:
                self._next.append(_Remote(sender, int(message["seq"])))
                self._start(view)
            else:
                self._send(sender, {"type": INDEX, "seq": message["seq"], "index": -1})
        elif kind == INDEX:
            self._on_index(int(message["seq"]), int(message["index"]), view)

    @property
    def idle(self) -> bool:
        """No reader waits: `on_tick` would do nothing (the tick skips building its view)."""
        return self._round is None and not self._next and not self._asks and not self._applying

    def on_tick(self, view: View) -> None:
        """Reads whose index is applied proceed; lost rounds and asks are sent again; a
        deposed leader's rounds fail. Does nothing when `idle`."""
        self._release_applied(view.last_applied)
        now = self._clock()
        r = self._round
        if r is not None and (not view.is_leader or view.term != r.term):
            self._fail_leader_reads("leadership changed before a read was confirmed; retry")
        elif r is not None and now - r.started >= self._retry_s:
            self._ping(r, view, now)
        if not view.is_leader:
            self._fail_queued("this member no longer leads the group; retry")
        self._start(view)
        for seq, ask in list(self._asks.items()):
            if now - ask.sent >= self._retry_s and view.leader is not None:
                if view.is_leader:  # it leads now: the question is its own
                    del self._asks[seq]
                    self.read(ask.done, view)
                else:
                    ask.leader, ask.sent = view.leader, now
                    self._send(view.leader, {"type": ASK, "seq": seq})

    def close(self) -> None:
        error = NotReady("the group stopped on this node", retry_after=0.5)
        readers = [*(self._round.readers if self._round else ()), *self._next]
        waiting = [*(a.done for a in self._asks.values()), *(d for _, d in self._applying)]
        self._round, self._next, self._asks, self._applying = None, [], {}, []
        for reader in [*readers, *waiting]:
            if not isinstance(reader, _Remote):
                reader(error)

    # ------------------------------------------------------------------ leader side
    def _start(self, view: View) -> None:
        if self._round is not None or not self._next or not self._can_confirm(view):
            return
        needed = (len(view.others) + 1) // 2 + 1
        r = _Round(0, view.term, view.commit_index, needed, 0.0, self._next)
        self._next, self._round = [], r
        self._ping(r, view, self._clock())

    def _ping(self, r: _Round, view: View, now: float) -> None:
        r.seq, r.started, r.acks = self._new_seq(), now, set()
        for member in view.others:
            self._send(member, {"type": PING, "seq": r.seq, "term": r.term})
        self._maybe_confirmed(r, view)  # a group of one confirms alone

    def _on_pong(self, sender: str, seq: int, ok: bool, view: View) -> None:
        r = self._round
        if r is None or seq != r.seq or sender not in view.others:
            return  # an answer to an earlier round, or from outside the configuration
        if not ok:  # a member knows a later term: this leader is deposed
            self._fail_leader_reads("a member knows a later term; retry")
            return
        if view.is_leader and view.term == r.term:
            r.acks.add(sender)
            self._maybe_confirmed(r, view)

    def _maybe_confirmed(self, r: _Round, view: View) -> None:
        if len(r.acks) + 1 < r.needed:
            return
        self._round = None
        self.rounds += 1
        for reader in r.readers:
            if isinstance(reader, _Remote):
                self._send(reader.address, {"type": INDEX, "seq": reader.seq, "index": r.index})
            else:
                self._when_applied(r.index, reader, view.last_applied)
        self._start(view)

    def _fail_leader_reads(self, why: str) -> None:
        r, self._round = self._round, None
        for reader in r.readers if r is not None else ():
            _fail(reader, why, self._send)
        self._fail_queued(why)

    def _fail_queued(self, why: str) -> None:
        queued, self._next = self._next, []
        for reader in queued:
            _fail(reader, why, self._send)

    # ------------------------------------------------------------------ follower side
    def _on_index(self, seq: int, index: int, view: View) -> None:
        ask = self._asks.pop(seq, None)
        if ask is None:
            return
        if index < 0:
            ask.done(NoLeader("the member asked no longer leads the group", retry_after=0.2))
        else:
            self._when_applied(index, ask.done, view.last_applied)

    # ------------------------------------------------------------------ both
    def _when_applied(self, index: int, done: Done, last_applied: int) -> None:
        if last_applied >= index:
            done(None)
        else:
            self._applying.append((index, done))

    def _release_applied(self, last_applied: int) -> None:
        if not self._applying:
            return
        ready = [d for i, d in self._applying if i <= last_applied]
        self._applying = [(i, d) for i, d in self._applying if i > last_applied]
        for done in ready:
            done(None)

    def _new_seq(self) -> int:
        self._seq += 1
        return self._seq


def _fail(reader: Done | _Remote, why: str, send: Send) -> None:
    if isinstance(reader, _Remote):
        send(reader.address, {"type": INDEX, "seq": reader.seq, "index": -1})
    else:
        reader(NoLeader(why, retry_after=0.2))
