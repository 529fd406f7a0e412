"""Members that do not vote in the meta group behave as members (issue 9, item 1: "every
other member reads cluster metadata without voting").

No membership change can be committed yet, so the metadata comes from a stand-in source: a
small internode server answering `meta_get` (the real `MetaServer` over a fixed value) with
metadata whose members are two nodes started with `--seeds` pointing at it. Both read that
they are members, so they must act as members: host the Raft groups of a linearizable
keyspace with peer addresses taken from the metadata (raft_groups/manager.py `reconcile`),
elect leaders, and store eventual replicas — while neither votes in any meta group.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web

from kv import meta_machine
from kv.config import NodeConfig
from kv.http.app import make_app
from kv.internode import OpTable
from kv.keys import internode_key
from kv.meta import Member, Metadata
from kv.meta_reader import MetaServer
from kv.service import Service
from kv.wire_server import InternodeServer
from tests.integration.conftest import (
    POLL_INTERVAL_S,
    START_DEADLINE_S,
    Api,
    NodeThread,
    free_port,
    key_path,
    wait_healthy,
)


class FixedSource:
    """A MetaView holding one metadata value (the stand-in for the voters). It takes only
    the read barrier a node makes before its first key request (kv/service.py); the
    members know no voter, so they send it to their seed, this source."""

    def __init__(self, md: Metadata) -> None:
        self.metadata = md
        self.voters: tuple[str, ...] = ()

    def subscribe(self, listener: Any) -> None:
        pass

    def raft_view(self) -> tuple[str | None, tuple[str, ...]]:
        return None, ()

    async def change(self, change: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert change == meta_machine.SYNC, f"no change but the barrier: {change}"
        return {"status": "unchanged"}

    def summary(self) -> dict[str, Any]:
        return {}


class SourceThread:
    """The internode protocol for meta_get and the barrier, on its own loop and thread."""

    def __init__(self, address: str, md: Metadata, secret: str) -> None:
        self.address = address
        self.secret = secret
        self.table = OpTable()
        MetaServer(FixedSource(md), votes=True).register(self.table)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _start(self) -> None:
        server = InternodeServer("source", internode_key(self.secret), self.table)
        app = make_app(cast(Service, None), server, START_DEADLINE_S)  # the stream route only
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        host, _, port = self.address.rpartition(":")
        await web.TCPSite(self._runner, host, int(port)).start()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(START_DEADLINE_S)

    def stop(self) -> None:
        if self._runner is not None:
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop)
            fut.result(START_DEADLINE_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(START_DEADLINE_S)
        self.loop.close()


def addresses() -> tuple[str, str]:
    return f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"


def metadata(members: list[Member]) -> Metadata:
    md, _ = meta_machine.apply(
        Metadata(),
        {
            "type": "bootstrap",
            "members": [m.to_dict() for m in members],
            "partitions": 4,
            "vnodes": 4,
            "claim": "chains",
        },
    )
    for change in (
        {"name": "lin", "consistency": "linearizable", "replication": 2},
        {
            "name": "ev",
            "consistency": "eventual",
            "replication": 2,
            "read_quorum": 1,
            "write_quorum": 2,
        },
    ):
        md, outcome = meta_machine.apply(md, {"type": "put_keyspace", "keyspace": change})
        assert outcome["status"] == "created", outcome
    return md


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NodeThread]]:
    root: Path = tmp_path_factory.mktemp("nonvoting")
    secret = secrets.token_hex(16)
    ids = {n: addresses() for n in ("m1", "m2")}
    md = metadata([Member(n, h, r) for n, (h, r) in ids.items()])
    source = SourceThread(f"127.0.0.1:{free_port()}", md, secret)
    nodes: dict[str, NodeThread] = {}
    try:
        source.start()
        for n, (h, r) in ids.items():
            cfg = NodeConfig(
                n, str(root / n), h, h, r, r, cluster_secret=secret, seeds=(source.address,)
            )
            nodes[n] = NodeThread(cfg)
            nodes[n].start()
        for node in nodes.values():
            wait_healthy(api_of(node), START_DEADLINE_S)
        yield nodes
    finally:
        errors = []
        for node in nodes.values():
            try:
                node.stop()
            except Exception as exc:  # stop every node even if one fails to
                errors.append(exc)
        source.stop()
        assert not errors, errors


def api_of(node: NodeThread) -> Api:
    host, _, port = node.config.advertise.rpartition(":")
    return Api(host, int(port), node.config.cluster_secret)


def wait_led(api: Api, groups: int) -> dict[str, Any]:
    end = time.monotonic() + START_DEADLINE_S
    while True:
        running = api.get("/v1/cluster").json()["raft_groups"]
        if len(running) == groups and all(g["leader"] for g in running.values()):
            return dict(running)
        assert time.monotonic() < end, f"groups not led on {api.base_url}: {running}"
        time.sleep(POLL_INTERVAL_S)


def test_a_listed_non_voter_is_a_member_and_hosts_its_raft_groups(
    members: dict[str, NodeThread],
) -> None:
    for node in members.values():
        api = api_of(node)
        health = api.get("/v1/health").json()
        assert health["status"] == "ok" and health["member"] is True
        info = api.get("/v1/cluster").json()
        assert info["member"] is True and info["joining"] == []
        assert info["meta_group"]["voter"] is False
        wait_led(api, groups=4)  # replication 2 over 2 members: every partition here
    first, second = api_of(members["m1"]), api_of(members["m2"])
    path = key_path("lin", "k")
    assert first.put(path, {"value": "x"}).json() == {"version": 1}
    assert second.get(path).json() == {"key": "k", "value": "x", "version": 1}


def test_a_listed_non_voter_stores_eventual_replicas(members: dict[str, NodeThread]) -> None:
    first, second = api_of(members["m1"]), api_of(members["m2"])
    path = key_path("ev", "k")
    assert first.put(path, {"value": "y"}).status == 200
    for api in (first, second):
        state = api.get("/v1/admin/replica/ev/k").json()
        assert sorted(state["replicas"]) == ["m1", "m2"]
        assert [v["value"] for v in state["versions"]] == ["y"]
