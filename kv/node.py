"""The composition root: wires storage, the meta group, the Dynamo shells and the HTTP API.

It holds no decisions of its own (DESIGN.md §1); each piece it builds is tested on its own.
Start-up order: storage → Raft driver + the node's metadata → HTTP (so peers and probes can
reach us) → bootstrap of the founding metadata (a founder) or the first poll of the seeds
(a joiner). `/v1/health` answers 503 until the node holds bootstrapped metadata. Shutdown
reverses it.

`self.meta` (kv/meta_role.py `MetaRole`) is the node's one metadata source: the meta group
while the node votes (a founder starts as a voter), kv/meta_reader.py `MetaReader` otherwise,
switching at runtime as raft_groups/meta_voters.py (on the group's leader) moves the voters.
Every node serves `meta_get` (and voters `meta_change`) through `MetaServer`, and
`meta_join` (the leader asking it to join the group) through `MetaRole`. A node the
metadata does not list is `joining` (docs/membership.md): it coordinates and forwards
requests by the metadata like any node, and hosts no replica — placement lists members
only, so its Raft groups and Dynamo partitions are empty until a committed plan lists it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from dynamo_mode import replica as dynamo_replica
from dynamo_mode.anti_entropy import AntiEntropy, Throttle
from dynamo_mode.coordinator import DynamoCoordinator
from dynamo_mode.frontend import EventualKeys
from dynamo_mode.gossip import GossipDetector, next_generation
from dynamo_mode.handoff import Handoff
from dynamo_mode.listing import KeyLister
from dynamo_mode.replica import DynamoReplica, KeyRef, local_actor
from dynamo_mode.replica_server import ReplicaServer
from dynamo_mode.tombstones import TombstoneReaper
from dynamo_mode.transfer import Disowned, Transfers
from kv import auth, node_backup, node_switch, routing, tls
from kv.config import NodeConfig
from kv.config_load import read_secret_file
from kv.errors import NotReady
from kv.group_commit import GroupCommit
from kv.http.app import NODE_STATE, Server, make_app
from kv.http.metrics import METRICS
from kv.http.ui import STATS
from kv.internode import OpTable
from kv.keys import context_key, internode_key
from kv.leveldb import LevelDBEngine
from kv.meta import Member, Metadata
from kv.meta_ops import META_JOIN, MetaJoin, Role, conflict_message, membership_of
from kv.meta_reader import MetaReader, MetaServer
from kv.meta_role import MetaRole
from kv.metrics import NodeMetrics
from kv.periodic import cancel_and_wait
from kv.request_stats import ClusterRequestStats
from kv.service import KeyOps, Service
from kv.sizer import PlanSizer, SizeServer
from kv.tally import TalliedEngine
from kv.transport import WireTransport
from kv.wire_server import InternodeServer
from raft_groups import state_machine
from raft_groups.expirer import Expirer
from raft_groups.frontend import LinearizableKeys
from raft_groups.manager import RaftGroups
from raft_groups.meta_group import MetaGroup, MetaGroups
from raft_groups.meta_voters import MetaVoters
from raft_groups.mover import RaftMoves
from raft_groups.syncobj_adapter import NodeLog, RaftDriver, RaftMux, RaftNodeSettings

log = logging.getLogger(__name__)

BOOTSTRAP_DEADLINE_S = 3600.0  # keep trying while the other founders start


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._server: Server | None = None
        self._bootstrap_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        cfg = self.config
        self.ops = OpTable()  # every internode operation this node serves
        key = internode_key(cfg.cluster_secret)
        files = cfg.tls
        client_tls = tls.client_context(files.ca) if files else None
        self.transport = WireTransport(cfg.node_id, self._resolve, key, self.ops, tls=client_tls)
        self.internode = InternodeServer(cfg.node_id, key, self.ops)
        self.internode.on_authenticated = self.transport.peer_up
        await self._start_raft()
        MetaServer(self.meta, votes=lambda: self.meta.votes).register(self.ops)
        self.ops.register(META_JOIN, self.meta.join)
        self.eventual_keys = self._eventual_mode()
        modes: dict[str, KeyOps] = {
            "eventual": self.eventual_keys,
            "linearizable": self._linearizable_mode(),
        }
        self.sizes = SizeServer(self.replica_store, self.group_store, self.groups.owned)
        self.sizes.register(self.ops)
        sizer = PlanSizer(self.transport, self.peers.is_alive)
        switching = node_switch.conflicts(self), node_switch.migrated_context(self)  # issue 12
        self.service = Service(self.meta, modes, self.cluster_info, sizer, *switching)
        self._background_loops()
        moving = (self.groups, cfg.node_id, self._metadata, self.propose)
        self.raft_moves = RaftMoves(*moving, concurrency=cfg.raft_moves_at_once)
        self.meta.subscribe(self._on_metadata)
        limits = cfg.server_limits
        app = make_app(self.service, self.internode, cfg.request_timeout_s, cfg.auth, limits)
        app[NODE_STATE] = self.node_state
        node_backup.wire(self, app)  # export and import routes (docs/backup.md)
        app[METRICS] = metrics = NodeMetrics(self)  # read at each scrape (docs/metrics.md)
        app[STATS] = ClusterRequestStats(self.transport, self.service.metadata, metrics.requests)
        app[STATS].register(self.ops)  # the status page's request rates (docs/status_page.md)
        api_tls = tls.server_context(files, peers_only=False) if files else None
        self._server = await Server.listen(app, cfg.listen, limits, api_tls)
        loops = (self.peers, self.anti_entropy, self.handoff, self.reaper, self.transfers)
        self.loops = (*loops, self.disowned, self.raft_moves, self.switches, self.expirer)
        for loop in (*self.loops, self.voters):
            loop.start()
        if cfg.founder and self.meta.group is not None:
            self._bootstrap_task = asyncio.ensure_future(self._bootstrap(self.meta.group))
        scheme = "https" if files else "http"
        log.info("node %s serving %s://%s", cfg.node_id, scheme, cfg.listen)
        log.info("node %s advertised at %s", cfg.node_id, cfg.advertise)

    async def _start_raft(self) -> None:
        """Storage, the node's one Raft driver and mux, and the node's metadata: the meta
        group on them while it votes (a founder, at first), else a reader of members'."""
        cfg = self.config
        os.makedirs(cfg.db_dir, exist_ok=True)
        self.engine = LevelDBEngine(cfg.db_dir)
        log = NodeLog(cfg.raft_log_dir, sync=cfg.raft_sync_journal)  # every group's journal
        self.driver = RaftDriver(RaftMux(self._raft_node_settings()), log)
        loop = asyncio.get_running_loop()
        groups = MetaGroups(self.driver, loop, cfg.raft_advertise, cfg.meta_dir)
        self.meta: MetaRole[MetaGroup] = MetaRole(
            self._me,
            groups,
            self._reader,
            self.transport,
            os.path.join(cfg.data_dir, "meta_role.json"),
            time.monotonic,
        )
        founders = tuple(m.raft for m in cfg.initial_cluster if m.id != cfg.node_id)
        seeds = (*cfg.seeds, *(m.http for m in cfg.initial_cluster))
        await self.meta.start(founders if cfg.founder else None, seeds)
        self.driver.start()

    def _reader(self, seeds: Sequence[str]) -> MetaReader:
        cfg = self.config
        return MetaReader(
            cfg.advertise,
            seeds,
            self.transport,
            interval=cfg.meta_poll_interval_s,
            max_backoff=cfg.meta_poll_max_backoff_s,
            call_timeout=cfg.internode_timeout_s,
        )

    async def _ask_to_join(self, member: Member, peers: tuple[str, ...]) -> Role:
        """`meta_join` on `member`: the meta group's leader is about to add it."""
        timeout = self.config.internode_timeout_s
        reply = await self.transport.call_at(member.http, META_JOIN, MetaJoin(peers), timeout)
        return reply.role

    def _eventual_mode(self) -> EventualKeys:
        cfg = self.config
        generation = next_generation(os.path.join(cfg.data_dir, "generation"), time.time())
        actor = local_actor(self.engine, cfg.node_id, generation)
        # the replica's writes are tallied: partition sizes (kv/tally.py, kv/sizer.py)
        self.replica_store = TalliedEngine(self.engine, dynamo_replica.LAYOUT)
        self.replica = DynamoReplica(self.replica_store, cfg.node_id, actor=actor)
        self.group_commit = GroupCommit(self.engine.sync)  # `durability: "fsync"` keyspaces
        fence = node_switch.frozen(self._metadata), lambda: self._metadata().epoch
        ReplicaServer(self.replica, self.group_commit, *fence).register(self.ops)
        self.peers = GossipDetector(
            cfg.node_id, lambda: list(self._addresses()), self.transport, generation, time.monotonic
        )
        self.peers.register(self.ops)
        self.coordinator = DynamoCoordinator(cfg.node_id, self.transport, self.peers.is_alive)
        keys = KeyLister(self.transport, self.peers.is_alive)
        return EventualKeys(self.coordinator, self.replica, context_key(cfg.cluster_secret), keys)

    def _linearizable_mode(self) -> LinearizableKeys:
        cfg = self.config
        self.group_store = TalliedEngine(self.engine, state_machine.LAYOUT)  # group sizes
        self.groups = RaftGroups(
            self.driver,
            self.group_store,
            cfg.node_id,
            self._raft_address,
            cfg.raft_dir,
            asyncio.get_running_loop(),
        )
        keys = LinearizableKeys(self.groups, cfg.node_id, self.transport, self._metadata)
        keys.register(self.ops)
        self.expirer = Expirer(self.groups, time.time, timeout=cfg.request_timeout_s)  # docs/ttl.md
        return keys

    def _background_loops(self) -> None:
        """Anti-entropy, tombstone purge and hinted handoff (gossip is built with its mode)."""
        cfg = self.config
        busy = (cfg.anti_entropy_busy_writes_per_s, cfg.anti_entropy_busy_interval_s)
        self.anti_entropy = AntiEntropy(
            self.replica, self.transport, cfg.node_id, self._metadata, cfg.anti_entropy_interval_s
        )
        self.anti_entropy.throttle = Throttle(
            lambda: self.coordinator.writes, time.monotonic, *busy
        )
        self.reaper = TombstoneReaper(
            self.replica,
            self.transport,
            self._metadata,
            time.time,
            grace=cfg.tombstone_grace_s,
            interval=cfg.tombstone_gc_interval_s,
        )
        self.handoff = Handoff(
            self.replica,
            self.transport,
            self.peers.is_alive,
            timeout=cfg.internode_timeout_s,
            rehome=self._rehome_hint,
        )
        self.transfers = Transfers(
            self.replica,
            self.transport,
            cfg.node_id,
            self._metadata,
            self.propose,
            batch=cfg.transfer_batch,
            keys_per_s=cfg.transfer_keys_per_s,
        )
        self.switches = node_switch.migrator(self, self._metadata)  # to linearizable
        self.disowned = Disowned(
            self.replica, cfg.node_id, self._metadata, time.monotonic, grace=cfg.disowned_grace_s
        )
        self.voters = MetaVoters(
            lambda: self.meta.voting_group,
            cfg.node_id,
            self._metadata,
            self._ask_to_join,
            self.peers.is_alive,
            time.monotonic,
        )

    def _raft_node_settings(self) -> RaftNodeSettings:
        cfg = self.config
        return RaftNodeSettings(
            self_address=cfg.raft_advertise,
            bind_address=cfg.raft_listen,
            secret=cfg.cluster_secret,
            peers=tuple(m.raft for m in cfg.initial_cluster if m.id != cfg.node_id),
            tls=cfg.tls,
        )

    async def _bootstrap(self, group: MetaGroup) -> None:
        cfg = self.config
        change = {
            "type": "bootstrap",
            "members": [m.to_dict() for m in cfg.initial_cluster],
            "partitions": cfg.partitions,
            "vnodes": cfg.vnodes,
            "claim": "chains",  # placement by kv/claim.py (balanced, explicit in metadata)
            "tokens": [t.to_dict() for t in self._bootstrap_tokens()],
        }
        await group.bootstrap(change, BOOTSTRAP_DEADLINE_S)
        log.info("metadata bootstrapped at epoch %d", group.metadata.epoch)

    def _bootstrap_tokens(self) -> list[auth.Token]:
        """The founder's admin token (`admin_token_file`, mode 600 like the secret)."""
        path = self.config.admin_token_file
        if not path:
            return []
        token = read_secret_file(path, "admin_token_file")  # checked at start (kv/startup.py)
        return [auth.record(token, "admin", "admin", None)]

    def _rehome_hint(self, owner: str, ref: KeyRef) -> tuple[str, ...] | None:
        """Where a hint for `owner` goes: `owner` while it is a member, else the key's
        current owners (none if its keyspace is gone)."""
        md = self._metadata()
        if md.member(owner) is not None:
            return None
        ks = next((k for k in md.keyspaces if k.uid == ref.uid), None)
        if ks is None:
            return ()
        return routing.replicas(md, "eventual", ref.partition, ks.replication)

    async def propose(self, change: dict[str, Any]) -> dict[str, Any]:
        return await self.meta.change(change, self.config.request_timeout_s)

    def _on_metadata(self, md: Metadata) -> None:
        """Host the Raft groups the metadata gives this node (none while it is joining). A
        node whose id the metadata lists at other addresses hosts nothing: it is not that
        member (membership_of, `id_conflict`)."""
        if md.bootstrapped and membership_of(md, self._me) != "id_conflict":
            self._track(asyncio.ensure_future(self.groups.reconcile(md)))
        elif md.bootstrapped:
            log.error("%s", conflict_message(md, self._me))

    @property
    def _me(self) -> Member:
        cfg = self.config
        return Member(id=cfg.node_id, http=cfg.advertise, raft=cfg.raft_advertise)

    def node_state(self) -> dict[str, Any]:
        """`/v1/health` details: member, or joining (a node the metadata does not list yet);
        `degraded` with the Raft groups a failure stopped here (`fenced_raft_groups`). A
        node whose id belongs to another member is not ready (503): it must not serve."""
        md = self._metadata()
        state = membership_of(md, self._me)
        if state == "id_conflict":
            raise NotReady(conflict_message(md, self._me), retry_after=5.0)
        fenced = dict(self.driver.fenced)  # groups stopped here by a failure (docs/raft.md)
        status = "joining" if state != "member" else "degraded" if fenced else "ok"
        found = {"status": status, "node": self.config.node_id, "member": state == "member"}
        return {**found, "fenced_raft_groups": fenced} if fenced else found

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    def _raft_address(self, node_id: str) -> str | None:
        member = self._metadata().member(node_id)
        return member.raft if member is not None else None

    def _metadata(self) -> Metadata:
        return self.meta.metadata

    def _addresses(self) -> dict[str, str]:
        """Member id → HTTP address: the metadata's members (before the bootstrap the
        founders; for a joiner that has read nothing yet, nobody)."""
        md = self._metadata()
        members = md.members if md.bootstrapped else self.config.initial_cluster
        return {m.id: m.http for m in members}

    def _resolve(self, node_id: str) -> str | None:
        return self._addresses().get(node_id)

    def cluster_info(self) -> dict[str, Any]:
        """`GET /v1/cluster`: this node's view of members, partitions and its subsystems."""
        md = self.service.metadata()
        ring = md.ring()
        state = self.node_state()
        return {
            "node": self.config.node_id,
            "member": state["member"],
            "epoch": md.epoch,
            "members": [{**m.to_dict(), "status": self.peers.status(m.id)} for m in md.members],
            # nodes not (yet) in the metadata; this node's own view: itself, when joining
            "joining": [] if state["member"] else [{**self._me.to_dict(), "status": "joining"}],
            "meta_group": {**self.meta.summary(), "driver": self.voters.status()},
            "partitions": [
                {"partition": p, "replicas": list(ring.walk(p)[:7])} for p in range(md.partitions)
            ],
            "placement": routing.placement(md),  # preference lists per (mode, replication)
            "anti_entropy": asdict(self.anti_entropy.totals),
            "tombstones_purged": self.reaper.purged,
            "tombstones_skipped": self.reaper.skipped,
            "transfers": self.transfers.status(),
            "sizes": self.sizes.of_moves(md, self.config.node_id),
            "raft_moves": self.raft_moves.status(),
            "dropped_disowned": self.disowned.dropped,
            "http_connections": self._server.connections() if self._server else {},
            "hinted_handoff": {
                "pending": self.handoff.pending(),
                "delivered": self.handoff.delivered,
                "skipped": self.handoff.skipped,
            },
            "raft_groups": self.groups.summary(),
        }

    async def stop(self) -> None:
        if self._bootstrap_task is not None:
            await cancel_and_wait(self._bootstrap_task)
        await self.meta.stop()
        await self.voters.stop()
        if self._server is not None:
            await self._server.close()
        await cancel_and_wait(*self._tasks)
        for loop in self.loops:
            await loop.stop()
        await self.coordinator.close()
        await self.transport.close()
        await asyncio.to_thread(self.driver.stop)
        await self.sizes.stop()
        self.engine.close()
        log.info("node %s stopped", self.config.node_id)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task failed", exc_info=task.exception())
