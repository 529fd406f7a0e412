"""A node's one source of cluster metadata while its part in the meta group changes
(docs/membership.md "Meta group voters").

```
             meta_join (from the leader)              caught up (its group has a leader
  reader ──────────────────────────────▶ joining ─────and the reader's epoch) ────▶ voter
    ▲   reads with MetaReader              group (joining=True) + reader            group
    │                                          │ not contacted for join_grace_s and        │
    │                                          │ the leader's configuration lacks it       │
    └──────────────────────────────────────────┴───────────────────────────────────────────┘
      out of contact for leaderless_s and the leader's configuration lacks it: close
      the group and delete its journal, read again
```

`MetaRole` has the meta group's face (`metadata`, `subscribe`, `change`, `summary`), so
the rest of the node never knows which source serves it: `metadata` is the newest value
any source published (never older than what the node already showed), `change` goes into
the group on a voter and to a voter (`meta_change`) otherwise.

A removed voter is never told by Raft (pysyncobj ignores a removal of itself, DESIGN.md
§3): once its group has been out of contact with a leader for a while (no leader, or the
one it names is not connected: the members drop their connections to it, and a member
connected to nobody never campaigns, so it keeps naming its old leader), it asks the
members for the leader's configuration (`meta_get`: only the leader's own reply counts,
kv/meta_ops.py `leader_excludes`). A joining member is dropped the same way once it has
been out of contact for `join_grace_s` since it joined (the leader asked, then chose
otherwise, or removed it again).

The role survives restarts in `state_path` (role, the group's peers, HTTP seeds), written
before each switch: a voter restarts its group from its journal, a joining node its group
and its reader, a reader reads (a founder with no state file founds: it is a voter).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Generic, Protocol, TypeVar

from kv import meta_ops
from kv.errors import KvError, NoLeader
from kv.meta import Member, Metadata
from kv.meta_machine import SYNC
from kv.meta_ops import META_GET, MetaGet, MetaJoin, MetaJoinReply, MetaReply, Role
from kv.meta_reader import AddressedTransport, Listener, MetaReader
from kv.periodic import Periodic

log = logging.getLogger(__name__)


class Group(Protocol):
    """The meta group as this module uses it (raft_groups/meta_group.py `MetaGroup`)."""

    @property
    def metadata(self) -> Metadata: ...

    def subscribe(self, listener: Listener) -> None: ...

    async def change(self, change: dict[str, Any], timeout: float) -> dict[str, Any]: ...

    async def sync(self, timeout: float) -> None: ...

    def summary(self) -> dict[str, Any]: ...

    def raft_view(self) -> tuple[str | None, tuple[str, ...]]: ...

    async def in_contact(self) -> bool:
        """Whether this member hears from a leader: it leads, or the leader it knows is
        connected (a removed member may keep naming its old leader: once every peer has
        dropped its connection it never campaigns, so its leader is never reset)."""
        ...


G = TypeVar("G", bound=Group)


class Groups(Protocol[G]):
    """Opens and closes this node's meta group (kv/node.py, over its Raft driver)."""

    async def open(self, peers: tuple[str, ...], joining: bool) -> G: ...

    async def close(self, group: G, delete_data: bool) -> None: ...

    def wipe(self) -> None:
        """Delete a journal left by an earlier membership (before a fresh join)."""
        ...


@dataclass(frozen=True)
class Timing:
    check_interval: float = 0.25  # how soon a caught-up joining node starts serving
    leaderless_s: float = 3.0  # > an election (≤ 1.5 s): only then ask who leads
    probe_every: float = 2.0  # between two rounds of asking while still leaderless
    join_grace_s: float = 30.0  # a join the leader never followed up is dropped after it
    call_timeout: float = 1.5
    contact_poll: float = 0.05  # a read barrier on a voter waiting out an election


@dataclass(frozen=True)
class Saved:
    role: Role
    peers: tuple[str, ...] = ()  # the group's configuration (Raft addresses)
    seeds: tuple[str, ...] = ()  # members' HTTP addresses, for a reader


class RoleFile:
    def __init__(self, path: str) -> None:
        self.path = path
        self.last: Saved | None = None  # what this process last loaded or saved

    def load(self) -> Saved | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                raw = json.load(f)
        except FileNotFoundError:
            return None
        role = next(r for r in meta_ops.ROLES if r == raw["role"])
        self.last = Saved(role, tuple(raw.get("peers", ())), tuple(raw.get("seeds", ())))
        return self.last

    def save(self, saved: Saved) -> None:
        self.last = saved
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(asdict(saved), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class MetaRole(Generic[G]):
    def __init__(
        self,
        me: Member,
        groups: Groups[G],
        new_reader: Callable[[Sequence[str]], MetaReader],
        transport: AddressedTransport,
        state_path: str,
        clock: Callable[[], float],
        timing: Timing | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._me = me
        self._groups = groups
        self._new_reader = new_reader
        self._transport = transport
        self._file = RoleFile(state_path)
        self._clock = clock
        self._sleep = sleep
        self.timing = timing or Timing()
        self.role: Role = "reader"
        self.group: G | None = None
        self.reader: MetaReader | None = None
        self._md = Metadata()
        self._listeners: list[Listener] = []
        self._since: float | None = None  # joining since / leaderless since
        self._next_probe = 0.0
        self._switching = asyncio.Lock()
        self._loop = Periodic("meta role", self.timing.check_interval, self.check, sleep)

    # ------------------------------------------------------------------ the face
    @property
    def metadata(self) -> Metadata:
        return self._md

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def votes(self) -> bool:
        return self.role == "voter"

    @property
    def voting_group(self) -> G | None:
        return self.group if self.role == "voter" else None

    @property
    def voters(self) -> tuple[str, ...]:
        if self.role == "voter" and self.group is not None:
            return meta_ops.voter_ids(self._md, self.group.raft_view()[1])
        return self.reader.voters if self.reader is not None else ()

    def raft_view(self) -> tuple[str | None, tuple[str, ...]]:
        group = self.voting_group
        return group.raft_view() if group is not None else (None, ())

    async def change(self, change: dict[str, Any], timeout: float) -> dict[str, Any]:
        if change == SYNC:  # a reader's barrier: coalesced with this node's own
            await self.sync(timeout)
            return {"status": "unchanged"}
        group = await self._voting_in_contact()
        if group is not None:
            return await group.change(change, timeout)
        assert self.reader is not None  # a node that does not vote always reads
        return await self.reader.change(change, timeout)

    async def sync(self, timeout: float) -> None:
        """Return once `metadata` holds every change committed before the call (a read
        barrier through the meta group; NotReady or NoLeader if it cannot be had in time).
        A voter out of contact with a leader (an election) waits for one within `timeout`:
        the caller is a request that only needs to know whether a keyspace exists."""
        group = self.voting_group
        if group is None:
            assert self.reader is not None
            await self.reader.sync(timeout)
            return
        end, poll = self._clock() + timeout, self.timing.contact_poll
        while not await group.in_contact():
            if self._clock() + poll > end:
                raise NoLeader("this voter is out of contact with a meta leader", retry_after=0.5)
            await self._sleep(poll)
        await group.sync(max(end - self._clock(), poll))

    async def _voting_in_contact(self) -> G | None:
        """The group on a voter (None on a node that does not vote); NoLeader on a voter
        out of contact with a leader (e.g. removed, not knowing it yet)."""
        group = self.voting_group
        if group is not None and not await group.in_contact():
            raise NoLeader("this voter is out of contact with a meta leader", retry_after=0.5)
        return group

    def summary(self) -> dict[str, Any]:
        """This node's view of the meta group, for `GET /v1/cluster`."""
        source = self.group if self.role == "voter" else self.reader
        inner = source.summary() if source is not None else {}
        leader, members = self.group.raft_view() if self.group is not None else (None, ())
        return {
            **inner,
            "role": self.role,
            "voter": self.votes,
            "voters": list(self.voters),
            "leader": self._id_of(leader) if self.votes else inner.get("leader"),
            "members": list(members) if self.votes else [],
        }

    def _offer(self, md: Metadata) -> None:
        """Any source's committed metadata: taken if newer, listeners told in epoch order."""
        if not meta_ops.newer(self._md, md):
            return
        self._md = md
        for listener in list(self._listeners):
            listener(md)

    # ------------------------------------------------------------------ start / stop
    async def start(self, founders: tuple[str, ...] | None, seeds: Sequence[str]) -> None:
        """`founders`: the other founders' Raft addresses on a founder (its group's first
        peers), None on a node that joined; `seeds`: HTTP addresses to read from."""
        saved = self._file.load()
        if saved is None:
            saved = Saved("voter", founders) if founders is not None else Saved("reader")
        if saved.role != "reader":
            await self._open(saved.peers, joining=saved.role == "joining")
        if saved.role != "voter":
            self._start_reader([*seeds, *saved.seeds])
        self.role = saved.role
        self._since = self._clock() if saved.role == "joining" else None
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        if self.reader is not None:
            await self.reader.stop()

    async def _open(self, peers: Sequence[str], joining: bool) -> None:
        others = tuple(p for p in dict.fromkeys(peers) if p != self._me.raft)
        self.group = await self._groups.open(others, joining)
        self.group.subscribe(self._offer)

    def _start_reader(self, seeds: Sequence[str]) -> None:
        wanted = [s for s in dict.fromkeys(seeds) if s != self._me.http]
        self.reader = self._new_reader(wanted)
        self.reader.subscribe(self._offer)
        self.reader.adopt(self._md if self._md.bootstrapped else None, "self")
        self.reader.start()

    # ------------------------------------------------------------------ switches
    async def join(self, req: MetaJoin) -> MetaJoinReply:
        """`meta_join`: the leader is about to add this node; run the group, joining."""
        async with self._switching:
            if self.role == "voter" and await self._removed_per(req.peers):
                await self._leave("the leader asks a voter outside its configuration to join")
            if self.role == "reader":
                await self._begin_join(req.peers)
            return MetaJoinReply(self.role)

    async def _removed_per(self, peers: Sequence[str]) -> bool:
        assert self.group is not None
        return self._me.raft not in peers and not await self.group.in_contact()

    async def _begin_join(self, peers: Sequence[str]) -> None:
        log.info("joining the meta group (peers %s)", ", ".join(peers))
        self._file.save(Saved("joining", tuple(peers), self._seeds()))
        await asyncio.to_thread(self._groups.wipe)  # a fresh member: no earlier journal
        await self._open(peers, joining=True)
        self.role, self._since = "joining", self._clock()

    async def _promote(self) -> None:
        assert self.group is not None
        log.info("voting in the meta group from epoch %d", self._md.epoch)
        self._file.save(Saved("voter", self.group.raft_view()[1]))
        self.role, self._since = "voter", None
        if self.reader is not None:
            reader, self.reader = self.reader, None
            await reader.stop()

    async def _leave(self, why: str, voters: Sequence[str] = ()) -> None:
        """Back to reading: the reader starts from this node's metadata, then the group
        is closed and its journal deleted (a removed member's data is its own to drop)."""
        log.info("leaving the meta group: %s", why)
        self._file.save(Saved("reader", (), self._seeds()))
        group, self.group = self.group, None
        self.role, self._since = "reader", None
        if self.reader is None:
            self._start_reader(self._seeds())
        if self.reader is not None and voters:
            self.reader.voters = tuple(voters)
        if group is not None:
            await self._groups.close(group, True)

    def _seeds(self) -> tuple[str, ...]:
        return tuple(m.http for m in self._md.members if m.id != self._me.id)

    # ------------------------------------------------------------------ the check loop
    async def check(self) -> None:
        async with self._switching:
            if self.group is None or self.role == "reader":
                return
            contact = await self.group.in_contact()
            if self.role == "joining":
                await self._check_joining(contact)
            elif not contact:
                await self._check_leaderless()
            else:
                self._since = None
                self._save_configuration(self.group.raft_view()[1])

    async def _check_joining(self, contact: bool) -> None:
        assert self.group is not None
        md = self.group.metadata
        if contact and md.bootstrapped and md.epoch >= self._md.epoch:
            await self._promote()
        elif not contact and self._waited(self.timing.join_grace_s):
            if (reply := await self.probe()) is not None:
                await self._leave("the leader did not add this node", reply.voters)

    async def _check_leaderless(self) -> None:
        if self._since is None:
            self._since = self._clock()
        if self._waited(self.timing.leaderless_s):
            if (reply := await self.probe()) is not None:
                await self._leave("the leader's configuration does not list it", reply.voters)

    def _waited(self, seconds: float) -> bool:
        now = self._clock()
        if self._since is None or now - self._since < seconds or now < self._next_probe:
            return False
        self._next_probe = now + self.timing.probe_every
        return True

    def _save_configuration(self, members: tuple[str, ...]) -> None:
        """Keep the saved peers current: a restart builds the group from them, and its
        journal replays the changes since (docs/raft.md "Membership changes")."""
        if self._file.last != Saved("voter", members):
            self._file.save(Saved("voter", members))

    async def probe(self) -> MetaReply | None:
        """The leader's reply if it says its configuration lacks this node, else None.
        Asks the members (voters first) until one is the leader or names one."""
        md = self._md
        rafts = {m.http: m.raft for m in md.members}
        ordered = [*meta_ops.voter_addresses(md, self.voters), *(m.http for m in md.members)]
        targets = [a for a in dict.fromkeys(ordered) if a != self._me.http]
        tried: set[str] = set()
        while targets:
            address = targets.pop(0)
            tried.add(address)
            try:
                reply = await self._ask(address)
            except KvError:
                continue
            if reply.leader is not None and reply.leader != rafts.get(address):
                hinted = [m.http for m in md.members if m.raft == reply.leader]
                first = [h for h in hinted if h not in tried and h != self._me.http]
                targets = [*first, *(t for t in targets if t not in first)]
                continue
            if reply.leader is not None:
                excluded = meta_ops.leader_excludes(reply, rafts.get(address), self._me.raft)
                return reply if excluded else None
        return None

    async def _ask(self, address: str) -> MetaReply:
        request = MetaGet(self._md.epoch)
        return await self._transport.call_at(address, META_GET, request, self.timing.call_timeout)

    def _id_of(self, raft: str | None) -> str | None:
        return next((m.id for m in self._md.members if m.raft == raft), raft)
