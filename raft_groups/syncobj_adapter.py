"""The only importer of pysyncobj (DESIGN.md §3, STYLE.md rule 12).

pysyncobj's camelCase API, its FAIL_REASON codes and its threads stop here. What crosses
out of this module:

- `RaftNodeSettings` / `GroupSettings`: our own frozen, validated config, turned into
  `SyncObjConf` here (pysyncobj ignores misspelled keys and validates with bare asserts);
- `RaftMux`: ONE Raft port per node for every group (meta group and data groups alike).
  It is pysyncobj's own `TCPTransport` (handshake, Fernet encryption with the cluster
  secret, reconnects) driven through a facade; every message travels as (group id,
  message) and the messages of one driver cycle to a peer are sent as one frame, so the
  crypto cost is per cycle, not per group. Without the secret pysyncobj would unpickle
  whatever reaches its port, so `RaftNodeSettings.secret` is mandatory;
- `RaftGroup.propose(command: bytes)`: one replicated method taking bytes; results and typed
  errors are handed to asyncio with `call_soon_threadsafe`;
- `RaftDriver`: one thread ticking every group (`autoTick=False` + `doTick`): idle groups
  every `idle_tick` (their heartbeats), a group with work (a queued command, a message that
  leaves work) at once, and never a group without work (DESIGN.md §2: one tick driver for
  all groups rather than a thread each).

State machines plug in through `StateMachine`: `apply(index, command)` runs on the driver
thread in log order with `index` = the entry's Raft log index (`raftLastApplied + 1` during
apply; pysyncobj does not pass it). Snapshots go through `dump()/load()`, framed by our
serializer hooks, never a pickle of our objects.

Lock order: `RaftDriver._lock` guards every pysyncobj object; nothing here calls out to
asyncio except through `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import concurrent.futures
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated  # type: ignore[import-untyped]
from pysyncobj.config import SERIALIZER_STATE  # type: ignore[import-untyped]
from pysyncobj.encryptor import getEncryptor  # type: ignore[import-untyped]
from pysyncobj.node import TCPNode  # type: ignore[import-untyped]
from pysyncobj.pipe_notifier import PipeNotifier  # type: ignore[import-untyped]
from pysyncobj.poller import createPoller  # type: ignore[import-untyped]
from pysyncobj.transport import TCPTransport, Transport  # type: ignore[import-untyped]

from kv.errors import KvError, NoLeader, Retryable, UnknownOutcome

log = logging.getLogger(__name__)


class StateMachine(Protocol):
    def apply(self, index: int, command: bytes) -> Any: ...

    def snapshot(self) -> Iterator[bytes]:
        """Called on the driver thread: capture a consistent view NOW (state == applied
        log); the returned chunks may then be consumed on another thread."""
        ...

    def restore(self, chunks: Iterator[bytes]) -> None:
        """Replace the state with a snapshot's — unless it would move the state backwards."""
        ...


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ValueError(f"raft.{field}: {message}")


def _check_address(field: str, value: str) -> None:
    host, _, port = value.rpartition(":")
    _require(bool(host) and port.isdigit(), field, f"must be host:port, got {value!r}")


@dataclass(frozen=True)
class RaftNodeSettings:
    self_address: str  # advertised "host:port": this node's Raft id in every group
    bind_address: str
    secret: str
    peers: tuple[str, ...] = ()  # other nodes' advertised Raft addresses

    def __post_init__(self) -> None:
        _require(
            len(self.secret) >= 16, "secret", "must be set: without it the Raft port runs pickles"
        )
        _check_address("self_address", self.self_address)
        _check_address("bind_address", self.bind_address)
        for i, peer in enumerate(self.peers):
            _check_address(f"peers[{i}]", peer)


@dataclass(frozen=True)
class GroupSettings:
    gid: str  # unique per node; the same on every member of the group
    self_address: str
    peers: tuple[str, ...]  # the other members' Raft addresses (exactly as they advertise)
    data_dir: str  # journal and snapshot files
    # Batch mode sends on the first tick after this period (DESIGN.md §3: immediate mode
    # costs ~4x CPU and regresses nextIndex under pipelining, so we stay in batch mode and
    # tick groups with traffic often instead).
    append_entries_period: float = 0.002
    election_timeout_min: float = 0.6
    election_timeout_max: float = 1.5
    # pysyncobj's default 5000 dumps the whole state every 5000 writes (DESIGN.md §3).
    log_compaction_min_entries: int = 200_000
    log_compaction_min_time: float = 3600.0
    # Group commit (DESIGN.md §3: pysyncobj never fsyncs its journal): msync every journal
    # that changed before any message leaves the node, so a follower's ack and the
    # leader's own vote for commit both mean "on disk" — an acknowledged write is durable
    # on a majority. False: acknowledged writes survive a process crash, not a power loss.
    sync_journal: bool = True

    def __post_init__(self) -> None:
        _require(bool(self.gid) and "/" not in self.gid, "gid", f"invalid group id {self.gid!r}")
        _check_address("self_address", self.self_address)
        for i, peer in enumerate(self.peers):
            _check_address(f"peers[{i}]", peer)
        _require(self.self_address not in self.peers, "peers", "must not contain self_address")
        _require(self.append_entries_period > 0, "append_entries_period", "must be > 0")
        _require(
            self.election_timeout_min > 3 * self.append_entries_period,
            "election_timeout_min",
            "must exceed 3 × append_entries_period",
        )
        _require(
            self.election_timeout_max > self.election_timeout_min,
            "election_timeout_max",
            "must exceed election_timeout_min",
        )
        _require(self.log_compaction_min_entries >= 2, "log_compaction_min_entries", "must be ≥ 2")


# ---------------------------------------------------------------------- the multiplexer
class _Facade:
    """What pysyncobj's TCPTransport needs from a 'SyncObj': conf, encryptor, poller, ticks."""

    def __init__(self, conf: Any, encryptor: Any, poller: Any) -> None:
        self.conf = conf
        self.encryptor = encryptor
        self._poller = poller
        self.tick_callbacks: list[Callable[[], None]] = []

    def addOnTickCallback(self, callback: Callable[[], None]) -> None:  # noqa: N802 - pysyncobj API
        self.tick_callbacks.append(callback)


class RaftMux:
    def __init__(self, settings: RaftNodeSettings) -> None:
        self.settings = settings
        self.poller = createPoller("auto")
        conf = SyncObjConf(
            bindAddress=settings.bind_address,
            connectionTimeout=5.0,
            connectionRetryTime=0.5,
            bindRetryTime=0.5,
        )
        conf.validate()
        self._facade = _Facade(conf, getEncryptor(settings.secret), self.poller)
        self._self = TCPNode(settings.self_address)
        self._transport = TCPTransport(self._facade, self._self, [])
        self._transport.setOnMessageReceivedCallback(self._on_message)
        self._transport.setOnNodeConnectedCallback(self._on_connected)
        self._transport.setOnNodeDisconnectedCallback(self._on_disconnected)
        self._notifier = PipeNotifier(self.poller)
        self._nodes: dict[str, Any] = {}
        self._groups: dict[str, _GroupTransport] = {}
        self._connected: set[str] = set()
        self._outbox: dict[str, list[tuple[str, Any]]] = {}
        self.dirty: set[str] = set()
        for peer in settings.peers:
            self.add_peer(peer)

    @property
    def ready(self) -> bool:
        return bool(self._transport.ready)

    def add_peer(self, address: str) -> Any:
        if address not in self._nodes and address != self.settings.self_address:
            node = TCPNode(address)
            self._nodes[address] = node
            self._transport.addNode(node)
        return self._nodes.get(address)

    def register(self, group: _GroupTransport) -> None:
        self._groups[group.gid] = group
        for address in group.peer_addresses:
            self.add_peer(address)
            if address in self._connected:
                group._onNodeConnected(self._nodes[address])

    def unregister(self, gid: str) -> None:
        self._groups.pop(gid, None)

    def is_connected(self, address: str) -> bool:
        return address in self._connected

    def send(self, node: Any, gid: str, message: Any) -> bool:
        if node.id not in self._connected:
            return False
        self._outbox.setdefault(node.id, []).append((gid, message))
        return True

    def flush(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for address, messages in outbox.items():
            node = self._nodes.get(address)
            if node is not None and not self._transport.send(node, messages):
                self._connected.discard(address)

    def tick(self) -> None:
        """Bind the port and (re)connect to peers as needed (pysyncobj's transport tick)."""
        try:
            self._transport.tryGetReady()
        except Exception:  # noqa: BLE001 - bind retried on the next tick, as pysyncobj does
            log.debug("raft port not bound yet", exc_info=True)
        for callback in self._facade.tick_callbacks:
            callback()

    def poll(self, timeout: float) -> None:
        self.poller.poll(timeout)

    def wake(self) -> None:
        self._notifier.notify()

    def _on_message(self, node: Any, message: Any) -> None:
        if not isinstance(message, list):
            return
        for gid, payload in message:
            group = self._groups.get(gid)
            if group is not None:
                if group.needs_tick(payload):
                    self.dirty.add(gid)
                group._onMessageReceived(node, payload)

    def _on_connected(self, node: Any) -> None:
        self._connected.add(node.id)
        for group in list(self._groups.values()):
            if node.id in group.peer_addresses:
                self.dirty.add(group.gid)
                group._onNodeConnected(node)

    def _on_disconnected(self, node: Any) -> None:
        self._connected.discard(node.id)
        for group in list(self._groups.values()):
            if node.id in group.peer_addresses:
                group._onNodeDisconnected(node)

    def close(self) -> None:
        self._transport.destroy()


class _GroupTransport(Transport):  # type: ignore[misc]
    """One group's view of the mux: pysyncobj's Transport interface, addressed by gid."""

    def __init__(self, mux: RaftMux, gid: str, peers: tuple[str, ...]) -> None:
        super().__init__(None, None, [])
        self.mux = mux
        self.gid = gid
        self.peer_addresses = set(peers)
        self.owner: Any = None  # the group's SyncObj, once it exists
        self._last_commit: Any = None

    def needs_tick(self, message: Any) -> bool:
        """Whether a message may leave work that only a tick does (apply committed entries,
        advance the commit index). Pure heartbeats of an idle group do not: skipping their
        tick is most of an idle node's CPU (measured: 64 groups, 21 % → see docs/raft.md).
        Neither do acknowledgements that cannot move the leader's commit index."""
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "append_entries":
            commit, self._last_commit = self._last_commit, message.get("commit_index")
            return bool(message.get("entries")) or commit != self._last_commit
        if kind == "next_node_idx":
            obj = self.owner
            if obj is None or not message.get("success") or message.get("reset"):
                return True  # a refusal, a reset or a snapshot chunk: the leader sends more
            return bool(int(message.get("next_node_idx", 0)) - 1 > obj.raftCommitIndex)
        return True

    def _onMessageReceived(self, node: Any, message: Any) -> None:  # noqa: N802 - pysyncobj API
        """Keep a leader's nextIndex from moving backwards. pysyncobj sets it to the
        acknowledged index + 1 on every successful response, even when later entries are
        already in flight, so the next send repeats them and the follower truncates and
        re-appends entries it may already have applied (logged CRITICAL, DESIGN.md §3).
        A refusal (`reset`) still moves it back, as Raft requires."""
        obj = self.owner
        if (
            obj is None
            or not isinstance(message, dict)
            or message.get("type") != "next_node_idx"
            or not message.get("success")
            or message.get("reset")
        ):
            super()._onMessageReceived(node, message)
            return
        next_index = obj._SyncObj__raftNextIndex  # pysyncobj keeps it private
        before = next_index.get(node)
        super()._onMessageReceived(node, message)
        if before is not None and next_index.get(node, before) < before:
            next_index[node] = before

    @property
    def ready(self) -> bool:
        return True  # the mux binds on its own; a group can queue before that

    def tryGetReady(self) -> None:  # noqa: N802 - pysyncobj API
        pass

    def waitReady(self) -> None:  # noqa: N802 - pysyncobj API
        pass

    def addNode(self, node: Any) -> None:  # noqa: N802 - pysyncobj API
        self.peer_addresses.add(node.id)
        self.mux.add_peer(node.id)

    def dropNode(self, node: Any) -> None:  # noqa: N802 - pysyncobj API
        self.peer_addresses.discard(node.id)

    def send(self, node: Any, message: Any) -> bool:
        return self.mux.send(node, self.gid, message)

    def destroy(self) -> None:
        self.mux.unregister(self.gid)
        self.setOnMessageReceivedCallback(None)
        self.setOnNodeConnectedCallback(None)
        self.setOnNodeDisconnectedCallback(None)


# ---------------------------------------------------------------------- one group
class _BackgroundSnapshot:
    """Log compaction without stalling the driver (DESIGN.md §3: a 2.5 s dump in the tick
    thread caused an election).

    pysyncobj calls the serializer hook on the driver thread and then atomically replaces
    the snapshot file with whatever the hook left at `<file>.tmp`. Our hook captures a
    consistent view (`machine.snapshot()`), leaves at `.tmp` either a hard link to the
    current snapshot or an "incomplete" marker (which our deserializer refuses, so a crash
    in between falls back to the untruncated journal), and streams the real file from a
    background thread. The journal is truncated only after `serializeChecker` reports
    SUCCESS — once, then NOT_SERIALIZING so the next compaction can start.
    """

    def __init__(self, machine: StateMachine) -> None:
        self._machine = machine
        self._thread: threading.Thread | None = None
        self._result: int | None = None

    def write(self, tmp_path: str, data: Any) -> None:
        final = tmp_path[: -len(".tmp")]
        header = _header(data)
        chunks = self._machine.snapshot()
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        if os.path.exists(final):
            os.link(final, tmp_path)
        else:
            with open(tmp_path, "wb") as f:
                f.write(json.dumps({"incomplete": True}).encode() + b"\n")
        self._result = None
        self._thread = threading.Thread(
            target=self._stream, args=(final, header, chunks), name="raft-snapshot", daemon=True
        )
        self._thread.start()

    def _stream(self, final: str, header: bytes, chunks: Iterator[bytes]) -> None:
        partial = final + ".bg"
        try:
            with open(partial, "wb") as f:
                f.write(header)
                for chunk in chunks:
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, final)
            self._result = SERIALIZER_STATE.SUCCESS
        except Exception:  # reported to pysyncobj, which keeps the journal and retries later
            log.exception("background snapshot to %s failed", final)
            self._result = SERIALIZER_STATE.FAILED

    def check(self) -> int:
        if self._thread is None:
            return int(SERIALIZER_STATE.NOT_SERIALIZING)
        if self._thread.is_alive():
            return int(SERIALIZER_STATE.SERIALIZING)
        result, self._thread = self._result, None
        return int(result if result is not None else SERIALIZER_STATE.FAILED)


def _header(data: Any) -> bytes:
    last, prev, cluster = data
    header = {
        "last": _entry_to_json(last),
        "prev": _entry_to_json(prev),
        "cluster": sorted(node.id for node in cluster),
    }
    return json.dumps(header).encode() + b"\n"


def _read_snapshot(path: str, machine: StateMachine) -> tuple[Any, ...]:
    with open(path, "rb") as f:
        header = json.loads(f.readline())
        if header.get("incomplete"):
            raise ValueError(f"{path} is an incomplete snapshot marker; the journal is intact")
        machine.restore(iter(lambda: f.read(1 << 20), b""))
    return _entry_from_json(header["last"]), _entry_from_json(header["prev"]), header["cluster"]


def _conf(settings: GroupSettings, machine: StateMachine, bg: _BackgroundSnapshot) -> Any:
    return SyncObjConf(
        autoTick=False,
        appendEntriesUseBatch=True,
        appendEntriesPeriod=settings.append_entries_period,
        raftMinTimeout=settings.election_timeout_min,
        raftMaxTimeout=settings.election_timeout_max,
        connectionTimeout=max(5.0, settings.election_timeout_max),
        # Fail fast with MISSING_LEADER instead of queueing silently while there is none:
        # the client gets a retryable 503 rather than a request of unknown fate.
        commandsWaitLeader=False,
        journalFile=os.path.join(settings.data_dir, "raft.journal"),
        fullDumpFile=os.path.join(settings.data_dir, "raft.snapshot"),
        serializer=bg.write,
        serializeChecker=bg.check,
        deserializer=lambda path: _read_snapshot(path, machine),
        logCompactionMinEntries=settings.log_compaction_min_entries,
        logCompactionMinTime=settings.log_compaction_min_time,
        dynamicMembershipChange=False,
        pollerType="poll",
    )


def _entry_to_json(entry: Any) -> list[Any]:
    command, index, term = entry
    return [base64.b64encode(command).decode(), index, term]


def _entry_from_json(raw: list[Any]) -> tuple[bytes, int, int]:
    return base64.b64decode(raw[0]), int(raw[1]), int(raw[2])


class _SyncObj(SyncObj):  # type: ignore[misc]
    def __init__(
        self, settings: GroupSettings, machine: StateMachine, transport: _GroupTransport
    ) -> None:
        self._machine = machine
        self._snapshots = _BackgroundSnapshot(machine)
        conf = _conf(settings, machine, self._snapshots)
        super().__init__(settings.self_address, list(settings.peers), conf, transport=transport)

    @replicated  # type: ignore[misc]
    def _apply_command(self, command: bytes) -> Any:
        return self._machine.apply(self.raftLastApplied + 1, command)


def _error_for(reason: int) -> KvError:
    """FAIL_REASON → typed error, by whether the command can have been applied."""
    if reason in (FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME):
        # measured: 59 of 178 LEADER_CHANGED commands were applied (DESIGN.md §3)
        return UnknownOutcome(
            "the Raft leader changed before the command committed; it may have been applied"
        )
    if reason in (FAIL_REASON.MISSING_LEADER, FAIL_REASON.NOT_LEADER):
        return NoLeader(
            "no Raft leader is available; the command was not proposed", retry_after=0.5
        )
    if reason == FAIL_REASON.DISCARDED:
        return NoLeader(
            "a new Raft leader discarded the command; it was not applied", retry_after=0.2
        )
    return Retryable(
        f"Raft refused the command (reason {reason}); it was not applied", retry_after=0.5
    )


@dataclass(frozen=True)
class RaftStatus:
    leader: str | None
    is_leader: bool
    term: int
    commit_index: int
    last_applied: int
    ready: bool


@dataclass(eq=False)
class _Schedule:
    next_tick: float = 0.0
    woken: bool = False  # set by propose() on another thread; read and cleared by the driver


class RaftGroup:
    """One Raft replica group; every method that touches pysyncobj takes the driver lock."""

    def __init__(self, driver: RaftDriver, settings: GroupSettings, machine: StateMachine) -> None:
        os.makedirs(settings.data_dir, exist_ok=True)
        self.settings = settings
        self.gid = settings.gid
        self._driver = driver
        self.schedule = _Schedule()
        self._synced_offset = -1
        self._commit_sent = -1
        with driver.lock:
            self.transport = _GroupTransport(driver.mux, settings.gid, settings.peers)
            self._obj = _SyncObj(settings, machine, self.transport)
            self.transport.owner = self._obj
            driver.mux.register(self.transport)
        driver.add(self)

    def propose(self, command: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        """Replicate `command`; the future resolves after it is applied on this node."""
        fut: asyncio.Future[Any] = loop.create_future()

        def done(result: Any, reason: int) -> None:  # runs on the driver thread
            loop.call_soon_threadsafe(_settle, fut, result, reason)

        self._obj._apply_command(command, callback=done)  # thread-safe queue put
        self._driver.wake(self)
        return fut

    def status(self) -> RaftStatus:
        leader = self._obj._getLeader()
        return RaftStatus(
            leader=leader.id if leader is not None else None,
            is_leader=bool(self._obj._isLeader()),
            term=int(self._obj.raftCurrentTerm),
            commit_index=int(self._obj.raftCommitIndex),
            last_applied=int(self._obj.raftLastApplied),
            ready=bool(self._obj.isReady()),
        )

    def tick(self) -> None:
        """One pysyncobj tick, then send what it left unsent.

        In batch mode pysyncobj sends append entries only once `append_entries_period` has
        passed, and BEFORE it takes the queued commands (`_onTick`: `__sendAppendEntries`,
        then `_checkCommandsToApply`): a new command waited for a later tick, and a new
        commit index reached the followers (which apply, and answer forwarded commands, on
        it) one more period later. Sending right after the tick replicates per driver
        cycle instead: every command queued before this tick leaves in one message per
        follower, with the latest commit index."""
        obj = self._obj
        sent_at = obj._SyncObj__newAppendEntriesTime
        obj.doTick(0.0)
        if not obj._isLeader():
            return
        commit = obj.raftCommitIndex
        if obj._SyncObj__newAppendEntriesTime != sent_at:
            self._commit_sent = commit  # the tick sent, with this commit index
        last = obj._SyncObj__getCurrentLogIndex()
        next_index = obj._SyncObj__raftNextIndex
        unsent = any(next_index.get(n, last + 1) <= last for n in obj._SyncObj__connectedNodes)
        if unsent or commit != self._commit_sent:
            obj._SyncObj__sendAppendEntries()
            self._commit_sent = commit

    def has_queued_commands(self) -> bool:
        """Commands proposed here (or forwarded to this leader) not yet taken by a tick."""
        return bool(self._obj._SyncObj__commandsQueue._FastQueue__queue)

    def force_compaction(self) -> None:
        """Snapshot and truncate the log at the next tick (ops and tests)."""
        self._obj.forceLogCompaction()
        self._driver.wake(self)

    def log_size(self) -> int:
        return int(self._obj._getRaftLogSize())

    def sync_journal(self) -> bool:
        """msync the journal if it changed since the last sync; True if it did."""
        if not self.settings.sync_journal:
            return False
        journal = self._obj._SyncObj__raftLog  # pysyncobj keeps it private; FileJournal
        offset = journal._FileJournal__currentOffset
        if offset == self._synced_offset:
            return False
        journal._FileJournal__journalFile.flush()
        self._synced_offset = offset
        return True

    def close(self) -> None:
        self._driver.remove(self)
        with self._driver.lock:
            self._obj.destroy()  # autoTick=False: destroys at once (transport, journal)


def _settle(fut: asyncio.Future[Any], result: Any, reason: int) -> None:
    if fut.done():
        return
    if reason == FAIL_REASON.SUCCESS:
        fut.set_result(result)
    else:
        fut.set_exception(_error_for(reason))


@dataclass
class RaftDriver:
    """One thread ticking every Raft group of this node, over one `RaftMux`."""

    mux: RaftMux
    idle_tick: float = 0.1  # heartbeat cadence of idle groups; ≪ election_timeout_min (0.6 s)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _groups: dict[str, RaftGroup] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _last_mux_tick: float = 0.0
    _calls: collections.deque[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = field(
        default_factory=collections.deque
    )
    _next_round: float = 0.0
    journal_syncs: int = 0

    def add(self, group: RaftGroup) -> None:
        with self.lock:
            self._groups[group.gid] = group

    def remove(self, group: RaftGroup) -> None:
        with self.lock:
            self._groups.pop(group.gid, None)

    def wake(self, group: RaftGroup) -> None:
        group.schedule.woken = True
        self.mux.wake()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="raft-driver", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the driver thread between two cycles and return its result.

        Group creation and destruction go through here: the driver holds its lock while it
        polls, so a caller on another thread would otherwise wait for idle polls to end."""
        if threading.current_thread() is self._thread or self._thread is None:
            with self.lock:
                return fn()
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._calls.append((fn, done))
        self.mux.wake()
        return done.result()

    def _run_calls(self) -> None:
        while self._calls:
            fn, done = self._calls.popleft()
            try:
                done.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                done.set_exception(exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.lock:
                    self._run_calls()
                    timeout = self._cycle(time.monotonic())
                    self.mux.poll(timeout)
                    self._sync_and_flush()
            except Exception:  # pysyncobj's own tick loop logs and carries on the same way
                log.exception("raft driver cycle failed")
                time.sleep(self.idle_tick)

    def _cycle(self, now: float) -> float:
        """Tick the groups that are due; return how long the poll may wait.

        Idle groups are ticked together in one round every `idle_tick`, so one round's
        heartbeats to a peer leave as one frame (one encryption) rather than one per group.
        Otherwise a group is ticked only when it has work: a queued command (`wake`), or a
        message that left work (`mux.dirty`). No group is ticked on a timer while busy:
        `tick` sends new entries and commit indexes at once, so nothing waits for a period.
        """
        if now - self._last_mux_tick > 0.1:
            self.mux.tick()
            self._last_mux_tick = now
        dirty, self.mux.dirty = self.mux.dirty, set()
        idle_round = now >= self._next_round
        if idle_round:
            self._next_round = now + self.idle_tick
        again = False
        for gid, group in list(self._groups.items()):
            woken, group.schedule.woken = group.schedule.woken, False
            if woken or idle_round or gid in dirty or group.has_queued_commands():
                group.tick()
                # `_checkCommandsToApply` stops after one period's worth of commands
                if group.has_queued_commands():
                    group.schedule.woken = True
            again = again or group.schedule.woken
        self._sync_and_flush()
        return 0.0 if again else max(self._next_round - now, 0.0)

    def _sync_and_flush(self) -> None:
        """Group commit: journals on disk first, then the messages that vouch for them."""
        synced = sum(group.sync_journal() for group in self._groups.values())
        self.journal_syncs += synced
        self.mux.flush()

    def stop(self) -> None:
        self._stop.set()
        self._run_calls()
        self.mux.wake()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=5)
        with self.lock:
            for group in list(self._groups.values()):
                group._obj.destroy()
            self._groups.clear()
            self.mux.close()
