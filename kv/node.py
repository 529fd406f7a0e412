"""The composition root: wires storage, the meta group, the Dynamo shells and the HTTP API.

It holds no decisions of its own (DESIGN.md §1); each piece it builds is tested on its own.
Start-up order: storage → Raft driver + meta group → HTTP (so peers and probes can reach
us) → bootstrap of the founding metadata. `/v1/health` answers 503 until the metadata is
bootstrapped. Shutdown reverses it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from aiohttp import web

from dynamo_mode.coordinator import DynamoCoordinator, handle_internal
from dynamo_mode.replica import DynamoReplica
from dynamo_mode.transport import HttpTransport
from kv.config import NodeConfig
from kv.http.app import make_app
from kv.leveldb import LevelDBEngine
from kv.meta import Metadata
from kv.peers import PeerMonitor
from kv.service import Service
from raft_groups.meta_group import MetaGroup
from raft_groups.syncobj_adapter import RaftDriver, RaftSettings

log = logging.getLogger(__name__)

BOOTSTRAP_DEADLINE_S = 3600.0  # keep trying while the other founders start


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._runner: web.AppRunner | None = None
        self._bootstrap_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        cfg, loop = self.config, asyncio.get_running_loop()
        os.makedirs(cfg.db_dir, exist_ok=True)
        self.engine = LevelDBEngine(cfg.db_dir)
        self.driver = RaftDriver()
        self.meta = MetaGroup(self._raft_settings(), self.driver, loop)
        self.driver.start()
        self.replica = DynamoReplica(self.engine, cfg.node_id)
        self.peers = PeerMonitor(cfg.node_id, self._addresses, cfg.cluster_secret, time.monotonic)
        self.transport = HttpTransport(
            cfg.node_id, self._resolve, cfg.cluster_secret, self._internal
        )
        self.coordinator = DynamoCoordinator(cfg.node_id, self.transport, self.peers.is_alive)
        self.service = Service(self.meta, self.coordinator, self.replica, self.cluster_info)
        app = make_app(self.service, self._internal, cfg.cluster_secret, cfg.request_timeout_s)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        host, _, port = cfg.listen.rpartition(":")
        await web.TCPSite(self._runner, host, int(port), reuse_address=True).start()
        self.peers.start()
        self._bootstrap_task = asyncio.ensure_future(self._bootstrap())
        log.info(
            "node %s serving http://%s (advertised %s)", cfg.node_id, cfg.listen, cfg.advertise
        )

    def _raft_settings(self) -> RaftSettings:
        cfg = self.config
        return RaftSettings(
            self_address=cfg.raft_advertise,
            peers=tuple(m.raft for m in cfg.initial_cluster if m.id != cfg.node_id),
            bind_address=cfg.raft_listen,
            secret=cfg.cluster_secret,
            data_dir=cfg.meta_dir,
            append_entries_period=0.02,
        )

    async def _bootstrap(self) -> None:
        cfg = self.config
        change = {
            "type": "bootstrap",
            "members": [m.to_dict() for m in cfg.initial_cluster],
            "partitions": cfg.partitions,
            "vnodes": cfg.vnodes,
        }
        await self.meta.bootstrap(change, BOOTSTRAP_DEADLINE_S)
        log.info("metadata bootstrapped at epoch %d", self.meta.metadata.epoch)

    async def _internal(self, op: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await handle_internal(self.replica, op, payload)

    def _metadata(self) -> Metadata:
        return self.meta.metadata

    def _addresses(self) -> dict[str, str]:
        md = self._metadata()
        members = md.members if md.bootstrapped else self.config.initial_cluster
        return {m.id: m.http for m in members}

    def _resolve(self, node_id: str) -> str | None:
        return self._addresses().get(node_id)

    def cluster_info(self) -> dict[str, Any]:
        md = self.service.metadata()
        raft = self.meta.status()
        ring = md.ring()
        return {
            "node": self.config.node_id,
            "epoch": md.epoch,
            "members": [{**m.to_dict(), "status": self.peers.status(m.id)} for m in md.members],
            "meta_group": {
                "leader": raft.leader,
                "term": raft.term,
                "commit_index": raft.commit_index,
            },
            "partitions": [
                {"partition": p, "replicas": list(ring.walk(p)[:7])} for p in range(md.partitions)
            ],
        }

    async def stop(self) -> None:
        if self._bootstrap_task is not None:
            self._bootstrap_task.cancel()
            await asyncio.gather(self._bootstrap_task, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.peers.stop()
        await self.coordinator.close()
        await self.transport.close()
        await asyncio.to_thread(self.driver.stop)
        self.engine.close()
        log.info("node %s stopped", self.config.node_id)
