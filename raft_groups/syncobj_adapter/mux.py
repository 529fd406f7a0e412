"""ONE Raft port per node for every group, the meta group included (DESIGN.md §2, §3).

`RaftMux` carries every group's messages over the node's `RaftLink` (link.py: its own
thread reads, checks and decodes what arrives; link_codec.py: an authenticated handshake,
a MAC on every frame, a pickle without globals, TLS when configured). Every message
travels as (group id, message). `send` only queues: what was queued for a peer since the
last `flush` leaves as one frame (or a few, when large), so pickling costs per flush, not
per group, and the driver decides when anything leaves the node (`flush_ahead`: a leader's
entries, before its journal sync; `flush`: the rest, after it — see `RaftDriver.cycle`).
`poll` waits for the link's events and hands them to the groups on the driver thread.

`GroupTransport` is one group's view of the mux, handed to its SyncObj as its transport.
Except `wake`, which any thread may call, the mux is used only with the driver lock held.

Membership changes (docs/raft.md "Membership changes"): a group's peer set changes when a
membership entry is appended (pysyncobj calls `addNode` / `dropNode`). The mux connects to
a new peer when some group (or a pending add, `pin_peer`) first names it, tells a group
that adds an already connected peer at once, and forgets a peer no group, pin or node
setting names any more. A message for a group from a node outside that group's peer set
is dropped (`dropped` counts them): pysyncobj does not check who sent a vote request, so
a removed member, or a new one not yet added, would otherwise depose the leader with a
higher term (Raft thesis §4.2.3, disruptive servers). A member that has not applied a
removal yet still names the removed node; `lease.py` keeps its vote requests from
unseating that member's leader too (a leader lease, and term notices to a stale leader).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import Any

from pysyncobj.node import TCPNode
from pysyncobj.transport import Transport

from kv import keys, tls
from raft_groups.syncobj_adapter import link_codec, shim
from raft_groups.syncobj_adapter.lease import VoteLease, kind
from raft_groups.syncobj_adapter.link import LinkSettings, RaftLink
from raft_groups.syncobj_adapter.read_index import KINDS as READ_KINDS
from raft_groups.syncobj_adapter.settings import RaftNodeSettings

log = logging.getLogger(__name__)


class RaftMux:
    def __init__(self, settings: RaftNodeSettings) -> None:
        self.settings = settings
        self._nodes: dict[str, Any] = {}
        self._groups: dict[str, GroupTransport] = {}
        self._connected: set[str] = set()
        self._outbox: dict[str, list[tuple[str, Any]]] = {}
        self.dirty: set[str] = set()  # groups whose received messages left work for a tick
        self.dropped = 0  # messages from a node outside the addressed group's peer set
        self._failures: dict[str, Exception] = {}  # a group's delivery raised (driver fences)
        self._pinned: collections.Counter[str] = collections.Counter()
        self.link = RaftLink(_link_settings(settings))
        for peer in settings.peers:
            self.add_peer(peer)

    def add_peer(self, address: str) -> Any:
        if address not in self._nodes and address != self.settings.self_address:
            self._nodes[address] = TCPNode(address)
            self.link.add_peer(address)
        return self._nodes.get(address)

    def register(self, group: GroupTransport) -> None:
        self._groups[group.gid] = group
        for address in group.peer_addresses:
            self.add_peer(address)
            if address in self._connected:
                group.connected(self._nodes[address])

    def unregister(self, gid: str) -> None:
        group = self._groups.pop(gid, None)
        for address in group.peer_addresses if group is not None else ():
            self.forget_if_unused(address)

    def pin_peer(self, address: str) -> None:
        """Connect to `address` before any group names it (a member about to be added)."""
        self._pinned[address] += 1
        self.add_peer(address)

    def unpin_peer(self, address: str) -> None:
        self._pinned[address] -= 1
        if self._pinned[address] <= 0:
            del self._pinned[address]
        self.forget_if_unused(address)

    def forget_if_unused(self, address: str) -> None:
        """Drop the connection to `address` unless a group, a pin or the node's settings
        still name it."""
        if address in self.settings.peers or address in self._pinned:
            return
        if any(address in group.peer_addresses for group in self._groups.values()):
            return
        node = self._nodes.pop(address, None)
        if node is not None:
            self.link.drop_peer(address)  # no "disconnected" event follows for it
        self._connected.discard(address)
        self._outbox.pop(address, None)

    def node(self, address: str) -> Any:
        return self._nodes.get(address)

    def knows(self, address: str) -> bool:
        return address in self._nodes

    def is_connected(self, address: str) -> bool:
        return address in self._connected

    def send(self, node: Any, gid: str, message: Any) -> bool:
        """Queue `message` for the next `flush`; nothing is written to a socket here."""
        if node.id not in self._connected:
            return False
        self._outbox.setdefault(node.id, []).append((gid, message))
        return True

    def flush(self) -> None:
        """Send everything queued since the last flush: one frame per peer (more only for
        a large batch, link_codec.SPLIT)."""
        outbox, self._outbox = self._outbox, {}
        self._send_batches(outbox)

    def _send_batches(self, outbox: dict[str, list[tuple[str, Any]]]) -> None:
        batches: dict[str, list[bytes]] = {}
        for address, messages in outbox.items():
            if not messages:
                continue
            batches[address], dropped = link_codec.frames(messages)
            if dropped:
                log.error("raft messages of groups %s to %s exceed the frame cap", dropped, address)
        if batches:
            self.link.send(batches)

    def flush_ahead(self) -> None:
        """Send now the queued messages that vouch for nothing on disk: those of a group
        whose every queued message to that peer is a leader's `append_entries` (so no
        group's own messages are reordered); the rest stay queued for `flush`. A leader
        may send its entries before they are on its own disk (Raft thesis §10.2.1): it
        counts itself toward a commit only in a later tick, after the sync step that
        follows this flush (`RaftDriver._sync_then_flush`)."""
        ahead: dict[str, list[tuple[str, Any]]] = {}
        for address, messages in self._outbox.items():
            held = {gid for gid, message in messages if not _vouches_nothing(message)}
            if len(held) == len({gid for gid, _ in messages}):
                continue
            ahead[address] = [m for m in messages if m[0] not in held]
            self._outbox[address] = [m for m in messages if m[0] in held]
        if ahead:
            self._send_batches(ahead)

    def discard_group(self, gid: str) -> None:
        """Drop what `gid` queued since the last flush (its journal sync failed)."""
        for address, messages in self._outbox.items():
            self._outbox[address] = [m for m in messages if m[0] != gid]

    def take_failures(self) -> dict[str, Exception]:
        """The groups whose delivery raised during the last poll, and why."""
        failures, self._failures = self._failures, {}
        return failures

    def poll(self, timeout: float) -> None:
        """Wait up to `timeout` for the port's sockets (or `wake`) and do their I/O: the
        link reads, checks and decodes; what arrived waits for `deliver`. Called without
        the driver lock."""
        self.link.poll(timeout)

    def deliver(self) -> None:
        """Hand what the last poll received to the groups (driver lock held): connections
        up and down, messages."""
        events = self.link.events
        for _ in range(len(events)):
            kind, address, value = events.popleft()
            node = self._nodes.get(address)
            if node is None:
                self.dropped += kind == "message"  # a peer no group names (any more)
            elif kind == "message":
                self._on_message(node, value)
            elif kind == "connected":
                self._on_connected(node)
            else:
                self._on_disconnected(node)

    def wake(self) -> None:
        """End the current `poll` early (thread-safe)."""
        self.link.wake()

    def _on_message(self, node: Any, messages: list[tuple[str, Any]]) -> None:
        for gid, payload in messages:
            group = self._groups.get(gid)
            if group is None:
                continue
            if node.id not in group.peer_addresses:
                self.dropped += 1  # a removed member, or a new one not yet added
                continue
            if gid in self._failures:
                continue
            if group.needs_tick(payload):
                self.dirty.add(gid)
            try:
                group.deliver(node, payload)
            except Exception as exc:  # noqa: BLE001 - this group's failure (driver fences it)
                self._failures[gid] = exc

    def _on_connected(self, node: Any) -> None:
        self._connected.add(node.id)
        for group in list(self._groups.values()):
            if node.id in group.peer_addresses:
                self.dirty.add(group.gid)
                group.connected(node)

    def _on_disconnected(self, node: Any) -> None:
        self._connected.discard(node.id)
        for group in list(self._groups.values()):
            if node.id in group.peer_addresses:
                group.disconnected(node)

    def close(self) -> None:
        self.link.close()


def _link_settings(settings: RaftNodeSettings) -> LinkSettings:
    files = settings.tls
    return LinkSettings(
        self_address=settings.self_address,
        bind_address=settings.bind_address,
        key=keys.raft_key(settings.secret),
        server_tls=tls.server_context(files, peers_only=True) if files else None,
        client_tls=tls.client_context(files.ca, files) if files else None,
    )


class GroupTransport(Transport):  # type: ignore[misc]
    """One group's view of the mux: pysyncobj's Transport interface, addressed by gid."""

    def __init__(
        self,
        mux: RaftMux,
        gid: str,
        peers: tuple[str, ...],
        lease: float = 0.6,  # the group's minimum election timeout (GroupSettings' default)
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(None, None, [])
        self.mux = mux
        self.gid = gid
        self.peer_addresses = set(peers)
        self.owner: Any = None  # the group's SyncObj, once it exists
        self.log_sends = 0  # messages sent with entries or a snapshot chunk
        self.votes = VoteLease(lease)
        self._clock = clock
        self._last_commit: Any = None
        # the group's ReadIndex rounds (read_index.py) take their messages, not pysyncobj
        self.read_hook: Callable[[str, dict[str, Any]], None] | None = None

    def needs_tick(self, message: Any) -> bool:
        """Whether a message may leave work that only a tick does (apply committed entries,
        advance the commit index). Pure heartbeats of an idle group do not: skipping their
        tick is most of an idle node's CPU (measured: 64 groups, 21 % → see docs/raft.md).
        Neither do acknowledgements that cannot move the leader's commit index."""
        kind = message.get("type") if isinstance(message, dict) else None
        if kind in READ_KINDS:
            return False  # handled in `deliver`, no tick needed
        if kind == "append_entries":
            commit, self._last_commit = self._last_commit, message.get("commit_index")
            return bool(message.get("entries")) or commit != self._last_commit
        if kind == "next_node_idx":
            obj = self.owner
            if obj is None or not message.get("success") or message.get("reset"):
                return True  # a refusal, a reset or a snapshot chunk: the leader sends more
            return bool(int(message.get("next_node_idx", 0)) - 1 > obj.raftCommitIndex)
        return True

    def deliver(self, node: Any, message: Any) -> None:
        """Hand a message to the SyncObj, unless the leader lease drops it (lease.py).

        A vote request from another member while this one hears from its leader is
        dropped; an append from an older term gets a term notice back; a leader's
        TimeoutNow marks this member's coming vote requests as a transfer's."""
        obj = self.owner
        if kind(message) in READ_KINDS:
            if self.read_hook is not None:
                self.read_hook(node.id, message)
            return
        if obj is None:
            shim.deliver(self, node, message)
            return
        now, leader = self._clock(), shim.leader_address(obj)
        if self.votes.ignore_vote(message, node.id, leader, shim.is_leader(obj), now):
            return
        term = int(obj.raftCurrentTerm)
        notice = self.votes.notice(message, node.id, term, now)
        if notice is not None:
            self.send(node, notice)
        if kind(message) == "timeout_now" and node.id == leader:
            self.votes.transfer_ordered(now)
        self._deliver(obj, node, message)
        if kind(message) == "append_entries" and shim.leader_address(obj) == node.id:
            if int(message.get("term", -1)) == int(obj.raftCurrentTerm):
                self.votes.heard_leader(now)

    def _deliver(self, obj: Any, node: Any, message: Any) -> None:
        """Deliver, keeping a leader's nextIndex from moving backwards.

        pysyncobj sets it to the acknowledged index + 1 on every successful response, even
        when later entries are already in flight, so the next send repeats them and the
        follower truncates and re-appends entries it may already have applied (logged
        CRITICAL, DESIGN.md §3). A refusal (`reset`) still moves it back, as Raft requires."""
        if not _is_success_ack(message):
            shim.deliver(self, node, message)
            return
        before = shim.next_index(obj, node)
        shim.deliver(self, node, message)
        after = shim.next_index(obj, node)
        if before is not None and after is not None and after < before:
            shim.set_next_index(obj, node, before)

    def connected(self, node: Any) -> None:
        shim.node_connected(self, node)

    def disconnected(self, node: Any) -> None:
        shim.node_disconnected(self, node)

    @property
    def ready(self) -> bool:
        return True  # the mux binds on its own; a group can queue before that

    def tryGetReady(self) -> None:  # noqa: N802 - pysyncobj API
        pass

    def waitReady(self) -> None:  # noqa: N802 - pysyncobj API
        pass

    def addNode(self, node: Any) -> None:  # noqa: N802 - pysyncobj API
        """A member joins this group's configuration (its entry was appended here)."""
        self.peer_addresses.add(node.id)
        peer = self.mux.add_peer(node.id)
        if peer is not None and self.mux.is_connected(node.id):
            self.connected(peer)  # the mux's connection predates this group's interest

    def dropNode(self, node: Any) -> None:  # noqa: N802 - pysyncobj API
        """A member leaves this group's configuration (or an add was rolled back)."""
        self.peer_addresses.discard(node.id)
        self.disconnected(node)
        self.mux.forget_if_unused(node.id)

    def send(self, node: Any, message: Any) -> bool:
        if _carries_log(message):
            self.log_sends += 1
        return self.mux.send(node, self.gid, self.votes.outgoing(message, self._clock()))

    def send_to(self, address: str, message: dict[str, Any]) -> None:
        """Queue a message of this group's own (read_index.py) for a member."""
        node = self.mux.node(address)
        if node is not None:
            self.mux.send(node, self.gid, message)

    def destroy(self) -> None:
        self.read_hook = None
        self.mux.unregister(self.gid)
        self.setOnMessageReceivedCallback(None)
        self.setOnNodeConnectedCallback(None)
        self.setOnNodeDisconnectedCallback(None)


def _carries_log(message: Any) -> bool:
    """An append_entries with entries, or with a chunk of a snapshot (not a heartbeat)."""
    if not isinstance(message, dict) or message.get("type") != "append_entries":
        return False
    return bool(message.get("entries")) or message.get("serialized") is not None


def _is_success_ack(message: Any) -> bool:
    """A follower's successful `next_node_idx` answer (not a refusal, not a reset)."""
    return (
        isinstance(message, dict)
        and message.get("type") == "next_node_idx"
        and bool(message.get("success"))
        and not message.get("reset")
    )


def _vouches_nothing(message: Any) -> bool:
    """A leader's `append_entries`: it asks the follower to store entries and states what
    is committed, but claims nothing about the sender's disk."""
    return isinstance(message, dict) and message.get("type") == "append_entries"
